//! The WebSocket wire format (RFC 6455), server side: the opening handshake, encoding the frames we send
//! and decoding the frames clients send.
//!
//! Why our own and not tungstenite's: a server frame is unmasked, so one broadcast frame (header and
//! payload) is the same bytes for every recipient. We encode it once and hand the same reference-counted
//! [`Bytes`] to every connection, which writes it with vectored writes straight to its `TcpStream`. No
//! per-recipient framing, no copy, and no per-connection read or write buffer while a connection is idle
//! (tungstenite keeps both for the connection's whole life).
//!
//! Decoding is ours too (`websocket/decode.rs`), not tungstenite's frame parser
//! (`tungstenite::protocol::frame`). That parser reads one frame header; everything the chat needs on top
//! of it (the message size limit across fragments, refusing a frame from its header before its payload
//! is buffered, UTF-8 checked fragment by fragment, close frame validation) would still be ours, around
//! a second buffer of tungstenite's. Our header parse is forty lines, all of its length arithmetic
//! checked, and has a fuzz target (`fuzz/`) and a property test; the decoder depending on nothing but
//! `bytes` is also what lets that fuzz target build in seconds.
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
use futures::future::{FutureExt, OptionFuture};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

mod decode;

pub use decode::{Decoder, Incoming, WireError};
#[cfg(test)]
use decode::{OP_BINARY, OP_CONTINUATION};
use decode::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

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
        if !is_valid_key(key) {
            return Err(bad("Sec-WebSocket-Key must be the base64 of 16 bytes"));
        }
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
        // Chained with `then`, not awaited one after the other in an async block: an async block keeps
        // `serve` (what it captured, 136 bytes) and hyper's upgrade result (128) for as long as the
        // socket is open, and every idle connection would carry them; `then` drops the one future
        // before it starts the next, in the same memory.
        let upgraded = take_over(self.on_upgrade);
        tokio::spawn(upgraded.then(|upgraded| OptionFuture::from(upgraded.map(serve))));
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

/// The socket, once the HTTP server has handed it over; `None` (logged) if it could not.
async fn take_over(on_upgrade: OnUpgrade) -> Option<Upgraded> {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return None;
        }
    };
    // axum serves plain TCP here, so the connection is a `TcpStream` under hyper's wrapper.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => Some(Upgraded {
            stream: parts.io.into_inner(),
            already_read: parts.read_buf,
        }),
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream");
            None
        }
    }
}

/// Whether `key` is what RFC 6455 §4.1 says a client sends: 16 random bytes in (padded) base64.
fn is_valid_key(key: &HeaderValue) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .is_ok_and(|bytes| bytes.len() == 16)
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
    payload.extend_from_slice(reason.as_bytes().get(..end).unwrap_or_default());
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
                WireError::Protocol("reserved opcode"),
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

    /// A client frame header declaring `len` bytes of payload with a 64-bit length, and its mask.
    fn long_header(first: u8, len: u64) -> Vec<u8> {
        let mut out = vec![first, 0x80 | 127];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&[1, 2, 3, 4]);
        out
    }

    // Finding 1: a 64-bit length near 2^64 made `so_far + len` and `header + payload_len` wrap, and the
    // slicing that followed panicked.
    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() {
        for len in [1 << 63, u64::MAX - 13, u64::MAX] {
            let out = decode_all(&mut Decoder::new(1 << 20), &long_header(0x81, len));
            assert_eq!(
                out,
                vec![Err(WireError::Protocol(
                    "payload length has its most significant bit set"
                ))],
                "{len:#x}"
            );
        }
    }

    #[test]
    fn a_huge_continuation_after_a_fragment_does_not_panic() {
        for len in [u64::MAX, u64::MAX - 13, (1 << 63) - 1] {
            // 14 bytes buffered: with `u64::MAX - 13`, the old sum wrapped to 0.
            let mut bytes = client_frame(false, OP_TEXT, &[b'a'; 14]);
            bytes.extend(long_header(0x80, len));
            bytes.extend_from_slice(&[0; 32]);
            let out = decode_all(&mut Decoder::new(1 << 20), &bytes);
            assert!(matches!(out.last(), Some(Err(_))), "{len:#x}: {out:?}");
        }
    }

    // Finding 2: 16 + 0xFFFF_FFFF_FFFF_FFF0 wrapped to 0, passed the size check, and the decoder then
    // waited (buffering) for a frame it could never have.
    #[test]
    fn a_continuation_whose_length_wraps_the_total_is_refused_at_once() {
        let mut decoder = Decoder::new(64 * 1024);
        let mut bytes = client_frame(false, OP_TEXT, &[b'x'; 16]);
        bytes.extend(long_header(0x80, 0xFFFF_FFFF_FFFF_FFF0));
        let out = decode_all(&mut decoder, &bytes);
        assert!(
            matches!(
                out.last(),
                Some(Err(WireError::TooBig | WireError::Protocol(_)))
            ),
            "{out:?}"
        );
        // Also when the length does not have its top bit set: the total is checked, not wrapped.
        let mut bytes = client_frame(false, OP_BINARY, &[0; 16]);
        bytes.extend(long_header(0x80, 0x7FFF_FFFF_FFFF_FFFF));
        let out = decode_all(&mut Decoder::new(64 * 1024), &bytes);
        assert_eq!(out.last(), Some(&Err(WireError::TooBig)));
    }

    // Finding 3: close frames were taken as they came.
    #[test]
    fn close_frames_are_checked() {
        let close = |body: &[u8]| {
            decode_all(&mut Decoder::new(1024), &client_frame(true, OP_CLOSE, body))
                .pop()
                .expect("an outcome")
        };
        assert_eq!(close(b""), Ok(Incoming::Close(None)));
        assert_eq!(
            close(b"\x03"),
            Err(WireError::Protocol("close frame with a one-byte body"))
        );
        for code in [
            0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Err(WireError::Protocol("invalid close code")),
                "{code}"
            );
        }
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Ok(Incoming::Close(Some(code))),
                "{code}"
            );
            let with_reason = [&code.to_be_bytes()[..], "au revoir, ça va".as_bytes()].concat();
            assert_eq!(close(&with_reason), Ok(Incoming::Close(Some(code))));
        }
        assert_eq!(
            close(&[0x03, 0xE8, b'o', 0xFF, b'k']),
            Err(WireError::NotUtf8)
        );
    }

    // Finding 4: strictness.
    #[test]
    fn the_handshake_key_must_be_16_bytes_of_base64() {
        let valid = |key: &'static str| is_valid_key(&HeaderValue::from_static(key));
        assert!(valid("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(valid("AAAAAAAAAAAAAAAAAAAAAA=="));
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",       // unpadded
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 19 bytes
            "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZQ=!",
            "not a key at all, sorry",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_utf8_fails_in_the_fragment_that_carries_it() {
        // The message is not over, and will never be: it fails now.
        let mut decoder = Decoder::new(1024);
        let mut buf = BytesMut::from(&client_frame(false, OP_TEXT, b"ok \xFF")[..]);
        assert_eq!(decoder.decode(&mut buf), Err(WireError::NotUtf8));

        let mut decoder = Decoder::new(1024);
        let mut bytes = client_frame(false, OP_TEXT, b"fine");
        bytes.extend(client_frame(false, OP_CONTINUATION, &[0xC3, 0x28]));
        assert_eq!(
            decode_all(&mut decoder, &bytes),
            vec![Err(WireError::NotUtf8)]
        );
    }

    #[test]
    fn characters_split_across_fragments_are_fine() {
        let text = "é€😀";
        let bytes = text.as_bytes();
        for cut1 in 0..=bytes.len() {
            for cut2 in cut1..=bytes.len() {
                let mut frames = client_frame(false, OP_TEXT, &bytes[..cut1]);
                frames.extend(client_frame(false, OP_CONTINUATION, &bytes[cut1..cut2]));
                frames.extend(client_frame(true, OP_CONTINUATION, &bytes[cut2..]));
                assert_eq!(
                    decode_all(&mut Decoder::new(64), &frames),
                    vec![Ok(Incoming::Text(text.into()))],
                    "cut at {cut1} and {cut2}"
                );
            }
        }
        // A character still cut off when the message ends is not UTF-8.
        let mut frames = client_frame(false, OP_TEXT, b"a");
        frames.extend(client_frame(true, OP_CONTINUATION, &[0xE2, 0x82]));
        assert_eq!(
            decode_all(&mut Decoder::new(64), &frames),
            vec![Err(WireError::NotUtf8)]
        );
    }

    #[test]
    fn frames_are_refused_from_their_header_before_their_payload_arrives() {
        // Each header declares 0x1000 bytes that never come: the refusal cannot wait for them.
        let header = |first: u8| vec![first, 0x80 | 126, 0x10, 0x00];
        for opcode in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let mut buf = BytesMut::from(&header(0x80 | opcode)[..]);
            assert_eq!(
                Decoder::new(1 << 20).decode(&mut buf),
                Err(WireError::Protocol("reserved opcode")),
                "opcode {opcode:#x}"
            );
        }
        let mut buf = BytesMut::from(&header(0x80)[..]);
        assert_eq!(
            Decoder::new(1 << 20).decode(&mut buf),
            Err(WireError::Protocol("continuation without a message"))
        );
        let mut bytes = client_frame(false, OP_TEXT, b"a");
        bytes.extend(header(0x81));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            Decoder::new(1 << 20).decode(&mut buf),
            Err(WireError::Protocol("new message inside a fragmented one"))
        );
    }

    // Finding 5: the decoder holds at most `max_message` bytes of a partial message.
    #[test]
    fn a_fragmented_message_never_holds_more_than_the_limit() {
        let mut decoder = Decoder::new(64);
        let mut bytes = client_frame(false, OP_BINARY, &[0; 40]);
        bytes.extend(client_frame(false, OP_CONTINUATION, &[0; 20]));
        assert_eq!(decode_all(&mut decoder, &bytes), vec![]);
        assert!(
            decoder.buffered_capacity() <= 64,
            "{}",
            decoder.buffered_capacity()
        );
        let out = decode_all(&mut decoder, &client_frame(true, OP_CONTINUATION, &[0; 4]));
        assert_eq!(out, vec![Ok(Incoming::Binary(vec![0; 64]))]);
    }

    /// A global allocator that can report the largest single allocation a piece of code made on this
    /// thread: the decoder must never allocate more than its limit, whatever a client declares.
    mod probe {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            /// While measuring: the largest allocation seen so far.
            static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
        }

        pub struct Probe;

        fn note(size: usize) {
            let _ = LARGEST.try_with(|largest| {
                if let Some(so_far) = largest.get() {
                    largest.set(Some(so_far.max(size)));
                }
            });
        }

        // SAFETY: every call is passed on to the system allocator unchanged.
        unsafe impl GlobalAlloc for Probe {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                unsafe { System.alloc(layout) }
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                unsafe { System.alloc_zeroed(layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        /// Runs `f`; its result and the largest single allocation it made on this thread.
        pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
            LARGEST.set(Some(0));
            let out = f();
            (out, LARGEST.replace(None).unwrap_or(0))
        }
    }

    #[global_allocator]
    static PROBE: probe::Probe = probe::Probe;

    #[test]
    fn the_allocation_probe_sees_allocations() {
        let (_, largest) = probe::largest_allocation(|| vec![0u8; 12_345]);
        assert!(largest >= 12_345);
    }

    /// Feeds `stream` to a decoder in the pieces `cuts` makes of it, as reads would bring it; every
    /// outcome, until the first error. Fails if a `decode` call allocates more than `max_message` at
    /// once (or 125 bytes, a ping's payload), or the decoder holds more than `max_message`.
    fn decode_in_pieces(
        max_message: usize,
        stream: &[u8],
        cuts: &[usize],
    ) -> Vec<Result<Incoming, WireError>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = Decoder::new(max_message);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                let (outcome, largest) = probe::largest_allocation(|| decoder.decode(&mut buf));
                assert!(
                    largest <= max_message.max(decode::MAX_CONTROL_PAYLOAD),
                    "decode allocated {largest} bytes at once (limit {max_message})"
                );
                assert!(decoder.buffered_capacity() <= max_message);
                match outcome {
                    Ok(Some(message)) => out.push(Ok(message)),
                    Ok(None) => break,
                    Err(error) => {
                        out.push(Err(error));
                        return out;
                    }
                }
            }
        }
        out
    }

    /// One message for the property test: its payload, and the points its fragments are cut at.
    #[derive(Debug, Clone)]
    enum Sent {
        Text(String, Vec<usize>),
        Binary(Vec<u8>, Vec<usize>),
        Ping(Vec<u8>),
    }

    fn sent() -> impl proptest::strategy::Strategy<Value = Sent> {
        use proptest::prelude::*;
        let cuts = || proptest::collection::vec(any::<usize>(), 0..4);
        prop_oneof![
            ("\\PC{0,60}", cuts()).prop_map(|(text, cuts)| Sent::Text(text, cuts)),
            (proptest::collection::vec(any::<u8>(), 0..300), cuts())
                .prop_map(|(bytes, cuts)| Sent::Binary(bytes, cuts)),
            proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Sent::Ping),
        ]
    }

    /// The frames of `message`, fragmented at its cut points, with a ping inside when there is room.
    fn frames_of(message: &Sent, out: &mut Vec<u8>, expected: &mut Vec<Incoming>) {
        let (opcode, payload, cuts) = match message {
            Sent::Ping(payload) => {
                out.extend(client_frame(true, OP_PING, payload));
                expected.push(Incoming::Ping(payload.clone()));
                return;
            }
            Sent::Text(text, cuts) => (OP_TEXT, text.as_bytes(), cuts),
            Sent::Binary(bytes, cuts) => (OP_BINARY, &bytes[..], cuts),
        };
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(payload.len());
        let mut start = 0;
        for (i, &cut) in cuts.iter().enumerate() {
            let last = i == cuts.len() - 1;
            let op = if i == 0 { opcode } else { OP_CONTINUATION };
            out.extend(client_frame(last, op, &payload[start..cut]));
            if i == 0 && !last {
                // A control frame between fragments is answered at once.
                out.extend(client_frame(true, OP_PING, b"mid"));
                expected.push(Incoming::Ping(b"mid".to_vec()));
            }
            start = cut;
        }
        expected.push(match message {
            Sent::Text(text, _) => Incoming::Text(text.clone()),
            _ => Incoming::Binary(payload.to_vec()),
        });
    }

    proptest::proptest! {
        #[test]
        fn valid_streams_round_trip_however_they_are_split(
            messages in proptest::collection::vec(sent(), 0..8),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..12),
        ) {
            let (mut stream, mut expected) = (Vec::new(), Vec::new());
            for message in &messages {
                frames_of(message, &mut stream, &mut expected);
            }
            stream.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
            expected.push(Incoming::Close(Some(1000)));
            let out = decode_in_pieces(300, &stream, &cuts);
            let expected: Vec<_> = expected.into_iter().map(Ok).collect();
            proptest::prop_assert_eq!(out, expected);
        }

        #[test]
        fn random_bytes_never_panic_nor_overallocate(
            max_message in 0usize..2048,
            stream in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            decode_in_pieces(max_message, &stream, &cuts);
        }

        #[test]
        fn damaged_valid_streams_never_panic_nor_overallocate(
            messages in proptest::collection::vec(sent(), 1..6),
            damage in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..6),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            let (mut stream, mut expected) = (Vec::new(), Vec::new());
            for message in &messages {
                frames_of(message, &mut stream, &mut expected);
            }
            for (at, byte) in damage {
                let at = at % stream.len();
                stream[at] = byte;
            }
            decode_in_pieces(300, &stream, &cuts);
        }
    }
}
