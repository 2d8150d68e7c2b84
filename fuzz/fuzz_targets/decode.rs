//! Arbitrary bytes, cut into arbitrary pieces, into the server's WebSocket decoder: it must never panic,
//! never hold more than its size limit of a partial message, and never allocate more than that at once
//! (libFuzzer's `-malloc_limit_mb` catches a huge allocation; the capacity check catches a modest one).
//!
//! The input: 2 bytes of size limit, 2 bytes seeding where the stream is cut, then the stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

// The decoder compiled on its own: it depends on nothing but `bytes` (see its module doc), so the fuzz
// build does not compile the server's dependencies with sanitizers.
#[path = "../../src/server/websocket/decode.rs"]
#[allow(dead_code)]
mod decode;

use decode::{Decoder, Incoming, MAX_CONTROL_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let [m0, m1, c0, c1, ref stream @ ..] = *data else {
        return;
    };
    let max_message = usize::from(u16::from_le_bytes([m0, m1]));
    let mut seed = u32::from(u16::from_le_bytes([c0, c1])) | 1;
    let mut decoder = Decoder::new(max_message);
    let mut buf = BytesMut::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // A cheap xorshift picks each piece's length: 1 to 64 bytes.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let take = (seed as usize % 64 + 1).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => check(&message, max_message),
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(decoder.buffered_capacity() <= max_message);
        }
        assert!(decoder.buffered_capacity() <= max_message);
    }
});

fn check(message: &Incoming, max_message: usize) {
    match message {
        Incoming::Text(text) => assert!(text.len() <= max_message),
        Incoming::Binary(bytes) => assert!(bytes.len() <= max_message),
        Incoming::Ping(payload) => assert!(payload.len() <= MAX_CONTROL_PAYLOAD),
        Incoming::Pong | Incoming::Close(_) => {}
    }
}
