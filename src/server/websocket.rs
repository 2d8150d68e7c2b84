//! The WebSocket wire format (RFC 6455), server side: the opening handshake, encoding the frames we send
//! and decoding the frames clients send.
//!
//! Why our own and not tungstenite's: a server frame is unmasked, so one broadcast frame (header and
//! payload) is the same bytes for every recipient. We encode it once and hand the same reference-counted
//! [`Bytes`] to every connection, which writes it with vectored writes straight to its `TcpStream`. No
//! per-recipient framing, no copy, and no per-connection read or write buffer while a connection is idle
//! (tungstenite keeps both for the connection's whole life).
//!
//! What is supported: text, binary (refused by the chat, but parsed), continuation, ping, pong and close
//! frames; fragmented messages; a maximum message size; no extensions (a browser's offer of
//! `permessage-deflate` is simply not taken up) and no subprotocols.

use axum::extract::FromRequestParts;
use axum::http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------------
// Handshake

/// An HTTP request asking to become a WebSocket, checked (RFC 6455 §4.2.1). Extracting it fails with
/// 400 (or 426 for another protocol version) when the request is not a valid WebSocket handshake.
pub struct Handshake {
    accept_key: String,
    on_upgrade: OnUpgrade,
}

/// The raw connection after the handshake: the socket, and whatever the client sent right after the
/// handshake that the HTTP server had already read.
pub struct Upgraded {
    pub stream: TcpStream,
    pub already_read: Bytes,
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let bad = |why: &'static str| (StatusCode::BAD_REQUEST, why).into_response();
        if parts.method != Method::GET {
            return Err(bad("a WebSocket handshake is a GET request"));
        }
        let headers = &parts.headers;
        if !header_has_token(headers, &UPGRADE, "websocket") {
            return Err(bad("expected `Upgrade: websocket`"));
        }
        if !header_has_token(headers, &CONNECTION, "upgrade") {
            return Err(bad("expected `Connection: upgrade`"));
        }
        if headers
            .get(SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                [(SEC_WEBSOCKET_VERSION, "13")],
                "only WebSocket version 13 is supported",
            )
                .into_response());
        }
        let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
            return Err(bad("missing Sec-WebSocket-Key"));
        };
        let accept_key = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(bad("this connection cannot be upgraded"));
        };
        Ok(Handshake {
            accept_key,
            on_upgrade,
        })
    }
}

impl Handshake {
    /// Answers `101 Switching Protocols` and, once the HTTP server has handed the connection over, runs
    /// `serve` on it in a new task.
    pub fn accept<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "upgrade failed"),
            };
            // axum serves plain TCP here, so the connection is a `TcpStream` under hyper's wrapper.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    serve(Upgraded {
                        stream: parts.io.into_inner(),
                        already_read: parts.read_buf,
                    })
                    .await
                }
                Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (UPGRADE, "websocket".to_owned()),
                (CONNECTION, "upgrade".to_owned()),
                (
                    axum::http::header::SEC_WEBSOCKET_ACCEPT,
                    self.accept_key.clone(),
                ),
            ],
        )
            .into_response()
    }
}

/// Whether a comma-separated header lists `token` (case-insensitively), as `Connection: keep-alive,
/// Upgrade` does.
fn header_has_token(headers: &HeaderMap, name: &axum::http::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

// ---------------------------------------------------------------------------------------------------
// Encoding (server → client: unmasked)

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A complete text frame carrying `text`.
pub fn text_frame(text: &str) -> Bytes {
    frame(OP_TEXT, text.as_bytes())
}

/// A ping frame (empty payload).
pub fn ping_frame() -> Bytes {
    frame(OP_PING, &[])
}

/// A pong frame echoing a ping's payload.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OP_PONG, payload)
}

/// A close frame with `code` and `reason` (cut to fit the 125-byte control frame limit).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload)
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x80 | opcode); // FIN: every frame we send is a whole message
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// The payload of a frame we encoded (for tests that look inside frames).
#[cfg(test)]
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    let header = match frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    &frame[header..]
}

// ---------------------------------------------------------------------------------------------------
// Decoding (client → server: masked)

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame: its code, if it gave one.
    Close(Option<u16>),
}

/// Why a client's bytes cannot be a WebSocket stream; each ends the connection with its close code.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// 1002: not a valid frame sequence.
    Protocol(&'static str),
    /// 1007: a text message that is not UTF-8.
    NotUtf8,
    /// 1009: a message larger than allowed.
    TooBig,
}

impl WireError {
    pub fn close_code(&self) -> u16 {
        match self {
            WireError::Protocol(_) => 1002,
            WireError::NotUtf8 => 1007,
            WireError::TooBig => 1009,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Protocol(why) => why,
            WireError::NotUtf8 => "text message is not valid UTF-8",
            WireError::TooBig => "message too big",
        }
    }
}

/// Turns the bytes a client sends into [`Incoming`] messages. Holds only the parts of a fragmented
/// message received so far.
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Decodes the next complete message from the front of `buf`, removing the bytes it used. `Ok(None)`
    /// means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, WireError> {
        loop {
            let Some((header, payload_len)) = self.frame_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < header + payload_len {
                return Ok(None);
            }
            let first = buf[0];
            let fin = first & 0x80 != 0;
            let opcode = first & 0x0F;
            let frame = buf.split_to(header + payload_len);
            let mask = [
                frame[header - 4],
                frame[header - 3],
                frame[header - 2],
                frame[header - 1],
            ];
            let mut payload = frame[header..].to_vec();
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }

            match opcode {
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Incoming::Close(code)));
                }
                OP_PING => return Ok(Some(Incoming::Ping(payload))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_TEXT | OP_BINARY if self.partial.is_some() => {
                    return Err(WireError::Protocol("new message inside a fragmented one"))
                }
                OP_TEXT | OP_BINARY if fin => return finish(opcode, payload).map(Some),
                OP_TEXT | OP_BINARY => self.partial = Some((opcode, payload)),
                OP_CONTINUATION => {
                    let Some((_, so_far)) = self.partial.as_mut() else {
                        return Err(WireError::Protocol("continuation without a message"));
                    };
                    so_far.extend_from_slice(&payload);
                    if fin {
                        let (opcode, whole) = self.partial.take().expect("checked above");
                        return finish(opcode, whole).map(Some);
                    }
                }
                _ => return Err(WireError::Protocol("unknown opcode")),
            }
        }
    }

    /// Parses the header at the front of `buf`: its length and the payload's, once enough bytes are
    /// there. Checks everything that can be checked before the payload arrives, including the size limit,
    /// so an oversized message is refused before it is buffered.
    fn frame_header(&self, buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (first, second) = (buf[0], buf[1]);
        if first & 0x70 != 0 {
            return Err(WireError::Protocol("reserved bits set"));
        }
        if second & 0x80 == 0 {
            return Err(WireError::Protocol("client frames must be masked"));
        }
        let opcode = first & 0x0F;
        let (len_bytes, len) = match second & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (2, u16::from_be_bytes([buf[2], buf[3]]) as u64)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&buf[2..10]);
                (8, u64::from_be_bytes(bytes))
            }
            short => (0, short as u64),
        };
        if opcode >= 0x8 && (len > 125 || first & 0x80 == 0) {
            return Err(WireError::Protocol("control frames are short and whole"));
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len()) as u64;
        if opcode < 0x8 && so_far + len > self.max_message as u64 {
            return Err(WireError::TooBig);
        }
        Ok(Some((2 + len_bytes + 4, len as usize)))
    }
}

fn finish(opcode: u8, payload: Vec<u8>) -> Result<Incoming, WireError> {
    if opcode == OP_TEXT {
        String::from_utf8(payload)
            .map(Incoming::Text)
            .map_err(|_| WireError::NotUtf8)
    } else {
        Ok(Incoming::Binary(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send them.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Vec<Result<Incoming, WireError>> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => return out,
                Err(error) => {
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }

    #[test]
    fn server_frames_have_the_right_headers() {
        assert_eq!(&text_frame("hi")[..], b"\x81\x02hi");
        let medium = text_frame(&"x".repeat(300));
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2C]);
        assert_eq!(frame_payload(&medium).len(), 300);
        let large = text_frame(&"x".repeat(70_000));
        assert_eq!(&large[..2], &[0x81, 127]);
        assert_eq!(frame_payload(&large).len(), 70_000);
        assert_eq!(&close_frame(1001, "bye")[..], b"\x88\x05\x03\xe9bye");
        assert_eq!(close_frame(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn decodes_masked_messages_of_every_size_byte_by_byte() {
        let mut decoder = Decoder::new(1 << 20);
        for len in [0, 5, 125, 126, 300, 70_000] {
            let text = "a".repeat(len);
            let bytes = client_frame(true, OP_TEXT, text.as_bytes());
            // Fed in two pieces at every split point of the header, then whole.
            for split in 0..bytes.len().min(16) {
                let mut buf = BytesMut::from(&bytes[..split]);
                assert_eq!(decoder.decode(&mut buf), Ok(None));
                buf.extend_from_slice(&bytes[split..]);
                assert_eq!(
                    decoder.decode(&mut buf),
                    Ok(Some(Incoming::Text(text.clone())))
                );
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut decoder = Decoder::new(1024);
        let mut bytes = client_frame(false, OP_TEXT, b"Hel");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(false, OP_CONTINUATION, b"lo, "));
        bytes.extend(client_frame(true, OP_CONTINUATION, "wörld".as_bytes()));
        bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        let out = decode_all(&mut decoder, &bytes);
        assert_eq!(
            out,
            vec![
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Text("Hello, wörld".into())),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (
                b"\x81\x02hi".to_vec(),
                WireError::Protocol("client frames must be masked"),
            ),
            (
                {
                    let mut f = client_frame(true, OP_TEXT, b"x");
                    f[0] |= 0x40;
                    f
                },
                WireError::Protocol("reserved bits set"),
            ),
            (
                client_frame(true, 0x3, b"x"),
                WireError::Protocol("unknown opcode"),
            ),
            (
                client_frame(false, OP_PING, b"x"),
                WireError::Protocol("control frames are short and whole"),
            ),
            (
                client_frame(true, OP_CONTINUATION, b"x"),
                WireError::Protocol("continuation without a message"),
            ),
            (
                [
                    client_frame(false, OP_TEXT, b"a"),
                    client_frame(true, OP_TEXT, b"b"),
                ]
                .concat(),
                WireError::Protocol("new message inside a fragmented one"),
            ),
            (
                client_frame(true, OP_TEXT, &[0xff, 0xfe]),
                WireError::NotUtf8,
            ),
            (client_frame(true, OP_TEXT, &[b'x'; 65]), WireError::TooBig),
            (
                [
                    client_frame(false, OP_BINARY, &[0; 40]),
                    client_frame(true, OP_CONTINUATION, &[0; 40]),
                ]
                .concat(),
                WireError::TooBig,
            ),
        ];
        for (bytes, expected) in cases {
            let out = decode_all(&mut Decoder::new(64), &bytes);
            assert_eq!(out.last(), Some(&Err(expected)), "{bytes:x?}");
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload_arrives() {
        let mut decoder = Decoder::new(1000);
        let mut buf = BytesMut::from(&[0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(decoder.decode(&mut buf), Err(WireError::TooBig));
    }
}
