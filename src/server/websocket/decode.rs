//! Decoding what a client sends (RFC 6455 §5): masked frames in, whole [`Incoming`] messages out.
//!
//! This file depends on nothing but `std` and `bytes`, and does no I/O: the fuzz target (`fuzz/`)
//! compiles it on its own (`#[path]`), without the server's dependencies.
//!
//! Everything that can be refused from a frame's header is refused there, before its payload is
//! waited for: reserved bits and opcodes, unmasked frames, fragmented or long control frames, a
//! continuation with no message to continue or a new message inside a fragmented one, a 64-bit length
//! with its top bit set, and a message whose size (with what is buffered of it already) exceeds the
//! limit. So the decoder never waits for, buffers or allocates more than the limit: a length is used
//! only once checked, and all arithmetic on lengths is checked. Text is checked for UTF-8 fragment by
//! fragment, so invalid text is refused as soon as its fragment arrives, not when the message ends.

use bytes::{Buf, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, a 64-bit length and the mask.
const MAX_HEADER: usize = 2 + 8 + 4;

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's close frame, checked: its code, if it gave one (its reason, if any, was UTF-8).
    Close(Option<u16>),
}

/// Why a client's bytes cannot be a WebSocket stream; each ends the connection with its close code.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// 1002: not a valid frame sequence.
    Protocol(&'static str),
    /// 1007: a text message (or a close reason) that is not UTF-8.
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
            WireError::NotUtf8 => "text is not valid UTF-8",
            WireError::TooBig => "message too big",
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4, and the IANA registry): 1000–1003,
/// 1007–1014, and 3000–4999 (libraries' and applications' own). 1004 is reserved, 1005, 1006 and 1015
/// mean "no code", "no close frame" and "TLS failed" and never appear on the wire; the rest of
/// 0–2999 is unassigned.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Turns the bytes a client sends into [`Incoming`] messages. Holds only the part of a fragmented
/// message received so far, never more than `max_message` bytes of it.
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress.
    partial: Option<Partial>,
}

struct Partial {
    /// [`OP_TEXT`] or [`OP_BINARY`].
    opcode: u8,
    payload: Vec<u8>,
    /// For text: how much of `payload` is known to be UTF-8; the rest (at most 3 bytes) is the start
    /// of a character whose other bytes are in the next fragment.
    checked: usize,
}

/// What a frame header says, once checked.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header itself (2 to 14).
    len: usize,
    /// Bytes of payload, at most the limit that applies to this frame.
    payload_len: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Bytes of a fragmented message held now (its buffer's capacity): for tests, never above
    /// `max_message`. Used by the property test and the fuzz target only.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn buffered_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.payload.capacity())
    }

    /// Decodes the next complete message from the front of `buf`, removing the bytes it used. `Ok(None)`
    /// means more bytes are needed. After an error the stream is over: the decoder's state is undefined.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, WireError> {
        loop {
            let Some(header) = self.header(buf)? else {
                return Ok(None);
            };
            let frame_len = header
                .len
                .checked_add(header.payload_len)
                .ok_or(WireError::TooBig)?;
            if buf.len() < frame_len {
                return Ok(None);
            }
            buf.advance(header.len);
            let mut payload = buf.split_to(header.payload_len);
            for (byte, key) in payload.iter_mut().zip(header.mask.iter().cycle()) {
                *byte ^= key;
            }
            if let Some(message) = self.frame(header.fin, header.opcode, &payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Handles one unmasked frame; a message once it is whole.
    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: &[u8],
    ) -> Result<Option<Incoming>, WireError> {
        match opcode {
            OP_CLOSE => parse_close(payload).map(|code| Some(Incoming::Close(code))),
            OP_PING => Ok(Some(Incoming::Ping(payload.to_vec()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_TEXT if fin => String::from_utf8(payload.to_vec())
                .map(|text| Some(Incoming::Text(text)))
                .map_err(|_| WireError::NotUtf8),
            OP_BINARY if fin => Ok(Some(Incoming::Binary(payload.to_vec()))),
            // The first fragment of a message (`header` checked that none is in progress).
            _ if opcode != OP_CONTINUATION => {
                let mut partial = Partial {
                    opcode,
                    payload: payload.to_vec(),
                    checked: 0,
                };
                partial.check_utf8(false)?;
                self.partial = Some(partial);
                Ok(None)
            }
            _ => {
                let partial = self
                    .partial
                    .as_mut()
                    .ok_or(WireError::Protocol("continuation without a message"))?;
                partial.append(payload, self.max_message);
                partial.check_utf8(fin)?;
                if !fin {
                    return Ok(None);
                }
                let Partial {
                    opcode, payload, ..
                } = self
                    .partial
                    .take()
                    .ok_or(WireError::Protocol("no message"))?;
                Ok(Some(if opcode == OP_TEXT {
                    Incoming::Text(String::from_utf8(payload).map_err(|_| WireError::NotUtf8)?)
                } else {
                    Incoming::Binary(payload)
                }))
            }
        }
    }

    /// Parses and checks the header at the front of `buf`, once enough of it is there.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, WireError> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(WireError::Protocol("reserved bits set"));
        }
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        let control = match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
            OP_CLOSE | OP_PING | OP_PONG => true,
            _ => return Err(WireError::Protocol("reserved opcode")),
        };
        if second & 0x80 == 0 {
            return Err(WireError::Protocol("client frames must be masked"));
        }
        let short_len = second & 0x7F;
        if control && (!fin || usize::from(short_len) > MAX_CONTROL_PAYLOAD) {
            return Err(WireError::Protocol("control frames are short and whole"));
        }
        match (opcode, &self.partial) {
            (OP_CONTINUATION, None) => {
                return Err(WireError::Protocol("continuation without a message"))
            }
            (OP_TEXT | OP_BINARY, Some(_)) => {
                return Err(WireError::Protocol("new message inside a fragmented one"))
            }
            _ => {}
        }
        let (len_bytes, payload_len): (usize, u64) = match short_len {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (2, u64::from(u16::from_be_bytes([a, b]))),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(bytes) => (8, u64::from_be_bytes(bytes)),
                None => return Ok(None),
            },
            short => (0, u64::from(short)),
        };
        if payload_len >> 63 != 0 {
            return Err(WireError::Protocol(
                "payload length has its most significant bit set",
            ));
        }
        if !control {
            let so_far = self.partial.as_ref().map_or(0, |p| p.payload.len());
            let total = u64::try_from(so_far)
                .ok()
                .and_then(|so_far| so_far.checked_add(payload_len));
            let max = u64::try_from(self.max_message).unwrap_or(u64::MAX);
            if total.is_none_or(|total| total > max) {
                return Err(WireError::TooBig);
            }
        }
        // Checked against the limit above (or at most 125): fits in memory, and in a usize.
        let payload_len = usize::try_from(payload_len).map_err(|_| WireError::TooBig)?;
        let len = 2 + len_bytes + 4;
        let Some(mask) = buf
            .get(len - 4..len)
            .and_then(|m| <[u8; 4]>::try_from(m).ok())
        else {
            return Ok(None);
        };
        debug_assert!(len <= MAX_HEADER);
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            len,
            payload_len,
        }))
    }
}

impl Partial {
    /// Appends a fragment whose size `header` checked against `max`; the buffer grows by doubling, but
    /// never past `max`.
    fn append(&mut self, fragment: &[u8], max: usize) {
        let needed = self.payload.len().saturating_add(fragment.len());
        if needed > self.payload.capacity() {
            let target = needed
                .max(self.payload.capacity().saturating_mul(2))
                .min(max.max(needed));
            self.payload.reserve_exact(target - self.payload.len());
        }
        self.payload.extend_from_slice(fragment);
    }

    /// Checks the text received since the last check: invalid UTF-8 fails now; a character cut off at
    /// the end waits for the next fragment, unless this was the last.
    fn check_utf8(&mut self, fin: bool) -> Result<(), WireError> {
        if self.opcode != OP_TEXT {
            return Ok(());
        }
        let unchecked = self.payload.get(self.checked..).unwrap_or_default();
        match std::str::from_utf8(unchecked) {
            Ok(_) => self.checked = self.payload.len(),
            Err(e) if e.error_len().is_none() && !fin => self.checked += e.valid_up_to(),
            Err(_) => return Err(WireError::NotUtf8),
        }
        Ok(())
    }
}

/// A close frame's body (RFC 6455 §5.5.1): nothing, or a valid code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<u16>, WireError> {
    match *payload {
        [] => Ok(None),
        [_] => Err(WireError::Protocol("close frame with a one-byte body")),
        [high, low, ref reason @ ..] => {
            let code = u16::from_be_bytes([high, low]);
            if !is_valid_close_code(code) {
                return Err(WireError::Protocol("invalid close code"));
            }
            std::str::from_utf8(reason).map_err(|_| WireError::NotUtf8)?;
            Ok(Some(code))
        }
    }
}
