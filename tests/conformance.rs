//! RFC 6455 conformance of the chat's own WebSocket framing, over raw TCP with hand-built frames, against
//! the real server. Modelled on the Autobahn|Testsuite (sections 1–7 and 9): each test is named after
//! the Autobahn case it follows (`case_7_3_2_…`), so `cargo test --test conformance` lists every case
//! and its result. Where Autobahn expects an echo, the chat's answer to a text message is its `ack`
//! and the room's `message` event; a binary message gets a `binary_frame` error and the socket stays
//! open.

mod common;

use std::time::Duration;

use common::{unlimited_rate, TestServer, PATIENCE};
use groupchat::protocol::{ErrorCode, ServerEvent};
use groupchat::server::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The default `--max-message-bytes`.
const MAX: usize = 64 * 1024;

/// How long a refusal that needs no more input may take: it must not wait for bytes that never come.
const AT_ONCE: Duration = Duration::from_secs(2);

/// A masked client frame; `first` is the whole first byte (FIN, RSV bits, opcode).
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0xA1, 0x5B, 0x07, 0xE3];
    let mut out = vec![first];
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

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(if fin { 0x80 } else { 0 } | opcode, payload)
}

/// A frame header declaring `len` payload bytes with a 64-bit length, and its mask: no payload.
fn long_header(first: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

/// A server frame: FIN, opcode, payload.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// A WebSocket client that writes whatever bytes a test gives it and parses what the server sends.
struct Raw {
    stream: TcpStream,
    /// Received and not yet parsed.
    buf: Vec<u8>,
}

/// Sends a handshake on `/ws` with `key`; the response head and the connection.
async fn handshake(server: &TestServer, stream: TcpStream, key: &str) -> (String, Raw) {
    let mut raw = Raw {
        stream,
        buf: Vec::new(),
    };
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.send(request.as_bytes()).await;
    let head = loop {
        if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
            raw.buf.drain(..end + 4);
            break head;
        }
        assert!(
            raw.fill(PATIENCE).await,
            "the server hung up during the handshake"
        );
    };
    (head, raw)
}

impl Raw {
    /// A client on `/ws`, past its `welcome`, the `joined` of `general` and its `read_positions` (which
    /// come in either order).
    async fn open(server: &TestServer) -> Raw {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        Self::open_on(server, stream).await
    }

    async fn open_on(server: &TestServer, stream: TcpStream) -> Raw {
        let (head, mut raw) = handshake(server, stream, "dGhlIHNhbXBsZSBub25jZQ==").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(matches!(raw.event().await, ServerEvent::Welcome { .. }));
        let (mut joined, mut positions) = (false, false);
        while !(joined && positions) {
            match raw.event().await {
                ServerEvent::Joined { .. } if !joined => joined = true,
                ServerEvent::ReadPositions { .. } if !positions => positions = true,
                other => panic!("after the welcome: {other:?}"),
            }
        }
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&frame(fin, opcode, payload)).await;
    }

    /// Reads more from the socket; false at its end.
    async fn fill(&mut self, patience: Duration) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(patience, self.stream.read(&mut chunk)).await {
            Err(_) => panic!("nothing from the server within {patience:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame from the server; `None` once the connection is over.
    async fn frame_within(&mut self, patience: Duration) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                // Pushed whenever a room's online count changed: not what these tests are about.
                if frame.opcode == TEXT && frame.payload.starts_with(br#"{"type":"room_counts""#) {
                    continue;
                }
                return Some(frame);
            }
            if !self.fill(patience).await {
                assert!(self.buf.is_empty(), "the connection ended inside a frame");
                return None;
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        self.frame_within(PATIENCE)
            .await
            .expect("the connection is still open")
    }

    /// The next frame, which must be a text frame holding an event.
    async fn event(&mut self) -> ServerEvent {
        let frame = self.frame().await;
        assert_eq!(frame.opcode, TEXT, "expected an event, got {frame:?}");
        serde_json::from_slice(&frame.payload).expect("an event")
    }

    /// Reads the `ack` and the `message` event of a text message this client sent.
    async fn said(&mut self, text: &str) {
        let (mut acked, mut echoed) = (false, false);
        while !(acked && echoed) {
            match self.event().await {
                ServerEvent::Ack { .. } => acked = true,
                ServerEvent::Message { text: said, .. } => {
                    assert_eq!(said, text);
                    echoed = true;
                }
                other => panic!("expected an ack and a message, got {other:?}"),
            }
        }
    }

    /// The next event must be an error with `code`.
    async fn refused(&mut self, code: ErrorCode) {
        match self.event().await {
            ServerEvent::Error { code: got, .. } => assert_eq!(got, code),
            other => panic!("expected error {code:?}, got {other:?}"),
        }
    }

    /// Reads until the server's close frame (within `patience`), skipping events; returns its code,
    /// after checking that the server then ends the connection and sends nothing more.
    async fn close_code_within(&mut self, patience: Duration) -> u16 {
        loop {
            let frame = self
                .frame_within(patience)
                .await
                .expect("a close frame before the connection ends");
            if frame.opcode == CLOSE {
                assert!(frame.payload.len() >= 2, "a close frame with a code");
                assert!(
                    self.frame_within(PATIENCE).await.is_none(),
                    "nothing after the close frame"
                );
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            }
            assert_eq!(frame.opcode, TEXT, "unexpected {frame:?}");
        }
    }

    async fn close_code(&mut self) -> u16 {
        self.close_code_within(PATIENCE).await
    }
}

/// Parses one unmasked server frame at the front of `buf`: the frame and its length.
fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    assert_eq!(second & 0x80, 0, "server frames are unmasked");
    assert_eq!(first & 0x70, 0, "no reserved bits");
    let (header, len) = match second & 0x7F {
        126 => (
            4,
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
        ),
        127 => (
            10,
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, n as usize),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((
        Frame {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
            payload,
        },
        header + len,
    ))
}

async fn server() -> TestServer {
    TestServer::start_with(unlimited_rate()).await
}

/// Sends `bytes` on a fresh connection; the close code the server answers with.
async fn close_code_for(bytes: &[u8]) -> u16 {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send(bytes).await;
    client.close_code_within(AT_ONCE).await
}

/// A text message of `len` bytes gets its ack and message (0 bytes: an `empty_message` error).
async fn text_of(len: usize) {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    let text = "*".repeat(len);
    client.send_frame(true, TEXT, text.as_bytes()).await;
    if len == 0 {
        client.refused(ErrorCode::EmptyMessage).await;
    } else {
        client.said(&text).await;
    }
}

/// A binary message of `len` bytes is refused with an error, and the socket goes on.
async fn binary_of(len: usize) {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(true, BINARY, &vec![0xFE; len]).await;
    client.refused(ErrorCode::BinaryFrame).await;
    client.send_frame(true, TEXT, b"still here").await;
    client.said("still here").await;
}

// ---------------------------------------------------------------------------------------------------
// 1. Framing

#[tokio::test]
async fn case_1_1_1_text_of_0_bytes_is_an_empty_message() {
    text_of(0).await;
}
#[tokio::test]
async fn case_1_1_2_text_of_125_bytes() {
    text_of(125).await;
}
#[tokio::test]
async fn case_1_1_3_text_of_126_bytes() {
    text_of(126).await;
}
#[tokio::test]
async fn case_1_1_4_text_of_127_bytes() {
    text_of(127).await;
}
#[tokio::test]
async fn case_1_1_5_text_of_128_bytes() {
    text_of(128).await;
}
#[tokio::test]
async fn case_1_1_6_text_of_65535_bytes() {
    text_of(65535).await;
}
#[tokio::test]
async fn case_1_1_7_text_of_65536_bytes() {
    text_of(65536).await;
}
#[tokio::test]
async fn case_1_2_1_binary_of_0_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(0).await;
}
#[tokio::test]
async fn case_1_2_2_binary_of_125_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(125).await;
}
#[tokio::test]
async fn case_1_2_3_binary_of_126_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(126).await;
}
#[tokio::test]
async fn case_1_2_4_binary_of_127_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(127).await;
}
#[tokio::test]
async fn case_1_2_5_binary_of_128_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(128).await;
}
#[tokio::test]
async fn case_1_2_6_binary_of_65535_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(65535).await;
}
#[tokio::test]
async fn case_1_2_7_binary_of_65536_bytes_is_refused_and_the_socket_stays_open() {
    binary_of(65536).await;
}

// ---------------------------------------------------------------------------------------------------
// 2. Pings and pongs

async fn ping_is_echoed(payload: &[u8]) {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(true, PING, payload).await;
    let pong = client.frame().await;
    assert_eq!((pong.fin, pong.opcode), (true, PONG));
    assert_eq!(pong.payload, payload);
}

#[tokio::test]
async fn case_2_1_empty_ping_gets_empty_pong() {
    ping_is_echoed(b"").await;
}
#[tokio::test]
async fn case_2_2_ping_text_payload_is_echoed() {
    ping_is_echoed(b"Hello, world!").await;
}
#[tokio::test]
async fn case_2_3_ping_binary_payload_is_echoed() {
    ping_is_echoed(&[0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]).await;
}
#[tokio::test]
async fn case_2_4_ping_of_125_bytes_is_echoed() {
    ping_is_echoed(&[0xFE; 125]).await;
}
#[tokio::test]
async fn case_2_5_ping_of_126_bytes_gets_1002() {
    assert_eq!(close_code_for(&frame(true, PING, &[0xFE; 126])).await, 1002);
}
#[tokio::test]
async fn case_2_6_unsolicited_pong_is_ignored() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(true, PONG, b"unsolicited").await;
    client.send_frame(true, TEXT, b"after the pong").await;
    client.said("after the pong").await;
}
#[tokio::test]
async fn case_2_10_ten_pings_get_ten_pongs_in_order() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    let pings: Vec<u8> = (0..10u8).flat_map(|i| frame(true, PING, &[i])).collect();
    client.send(&pings).await;
    for i in 0..10u8 {
        let pong = client.frame().await;
        assert_eq!((pong.opcode, pong.payload), (PONG, vec![i]));
    }
}

// ---------------------------------------------------------------------------------------------------
// 3. Reserved bits

#[tokio::test]
async fn case_3_1_rsv1_gets_1002() {
    assert_eq!(
        close_code_for(&raw_frame(0x80 | 0x40 | TEXT, b"x")).await,
        1002
    );
}
#[tokio::test]
async fn case_3_2_rsv2_gets_1002() {
    assert_eq!(
        close_code_for(&raw_frame(0x80 | 0x20 | TEXT, b"x")).await,
        1002
    );
}
#[tokio::test]
async fn case_3_3_rsv3_gets_1002() {
    assert_eq!(
        close_code_for(&raw_frame(0x80 | 0x10 | TEXT, b"x")).await,
        1002
    );
}
#[tokio::test]
async fn case_3_7_rsv_bits_on_a_ping_get_1002() {
    assert_eq!(
        close_code_for(&raw_frame(0x80 | 0x70 | PING, b"")).await,
        1002
    );
}
#[tokio::test]
async fn case_3_x_unmasked_client_frame_gets_1002() {
    assert_eq!(close_code_for(b"\x81\x02hi").await, 1002);
}

// ---------------------------------------------------------------------------------------------------
// 4. Opcodes

async fn reserved_opcode(opcode: u8) {
    assert_eq!(
        close_code_for(&frame(true, opcode, b"reserved")).await,
        1002,
        "opcode {opcode:#x}"
    );
}

#[tokio::test]
async fn case_4_1_1_reserved_opcode_3_gets_1002() {
    reserved_opcode(0x3).await;
}
#[tokio::test]
async fn case_4_1_2_reserved_opcode_4_gets_1002() {
    reserved_opcode(0x4).await;
}
#[tokio::test]
async fn case_4_1_3_reserved_opcode_5_gets_1002() {
    reserved_opcode(0x5).await;
}
#[tokio::test]
async fn case_4_1_4_reserved_opcode_6_gets_1002() {
    reserved_opcode(0x6).await;
}
#[tokio::test]
async fn case_4_1_5_reserved_opcode_7_gets_1002() {
    reserved_opcode(0x7).await;
}
#[tokio::test]
async fn case_4_2_1_reserved_opcode_b_gets_1002() {
    reserved_opcode(0xB).await;
}
#[tokio::test]
async fn case_4_2_2_reserved_opcode_c_gets_1002() {
    reserved_opcode(0xC).await;
}
#[tokio::test]
async fn case_4_2_3_reserved_opcode_d_gets_1002() {
    reserved_opcode(0xD).await;
}
#[tokio::test]
async fn case_4_2_4_reserved_opcode_e_gets_1002() {
    reserved_opcode(0xE).await;
}
#[tokio::test]
async fn case_4_2_5_reserved_opcode_f_gets_1002() {
    reserved_opcode(0xF).await;
}
#[tokio::test]
async fn case_4_x_reserved_opcode_is_refused_from_its_header_before_its_payload() {
    // Declares 60,000 bytes and sends none of them.
    assert_eq!(close_code_for(&[0x83, 0x80 | 126, 0xEA, 0x60]).await, 1002);
}

// ---------------------------------------------------------------------------------------------------
// 5. Fragmentation

#[tokio::test]
async fn case_5_1_fragmented_ping_gets_1002() {
    let mut bytes = frame(false, PING, b"frag");
    bytes.extend(frame(true, CONTINUATION, b"ment"));
    assert_eq!(close_code_for(&bytes).await, 1002);
}
#[tokio::test]
async fn case_5_3_fragmented_text_is_reassembled() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(false, TEXT, b"frag").await;
    client.send_frame(false, CONTINUATION, b"men").await;
    client.send_frame(true, CONTINUATION, b"ted").await;
    client.said("fragmented").await;
}
#[tokio::test]
async fn case_5_6_ping_between_fragments_is_answered_and_the_text_reassembled() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(false, TEXT, b"before ").await;
    client.send_frame(true, PING, b"between").await;
    let pong = client.frame().await;
    assert_eq!((pong.opcode, &pong.payload[..]), (PONG, &b"between"[..]));
    client.send_frame(true, CONTINUATION, b"after").await;
    client.said("before after").await;
}
#[tokio::test]
async fn case_5_9_continuation_without_a_message_gets_1002() {
    assert_eq!(
        close_code_for(&frame(true, CONTINUATION, b"orphan")).await,
        1002
    );
}
#[tokio::test]
async fn case_5_18_new_message_inside_a_fragmented_one_gets_1002() {
    let mut bytes = frame(false, TEXT, b"one");
    bytes.extend(frame(true, TEXT, b"two"));
    assert_eq!(close_code_for(&bytes).await, 1002);
}

// ---------------------------------------------------------------------------------------------------
// 6. UTF-8

#[tokio::test]
async fn case_6_2_1_valid_multibyte_text_is_accepted() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    let text = "κόσμε, ça va? 😀 €";
    client.send_frame(true, TEXT, text.as_bytes()).await;
    client.said(text).await;
}
#[tokio::test]
async fn case_6_2_4_multibyte_characters_split_across_fragments_are_accepted() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    let text = "κόσμε😀";
    let bytes = text.as_bytes();
    // Cuts inside "ό" and inside "😀".
    client.send_frame(false, TEXT, &bytes[..3]).await;
    client.send_frame(false, CONTINUATION, &bytes[3..12]).await;
    client.send_frame(true, CONTINUATION, &bytes[12..]).await;
    client.said(text).await;
}
#[tokio::test]
async fn case_6_3_1_invalid_utf8_text_gets_1007() {
    let bytes = frame(
        true,
        TEXT,
        b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited",
    );
    assert_eq!(close_code_for(&bytes).await, 1007);
}
#[tokio::test]
async fn case_6_4_1_invalid_utf8_in_the_first_fragment_fails_before_the_message_ends() {
    // The message never ends: the refusal cannot wait for it.
    assert_eq!(
        close_code_for(&frame(false, TEXT, b"ok \xF4\x90\x80\x80")).await,
        1007
    );
}
#[tokio::test]
async fn case_6_4_2_invalid_utf8_in_a_middle_fragment_fails_before_the_message_ends() {
    let mut bytes = frame(false, TEXT, "κόσμε".as_bytes());
    bytes.extend(frame(false, CONTINUATION, b"\xC0\xAF"));
    assert_eq!(close_code_for(&bytes).await, 1007);
}

// ---------------------------------------------------------------------------------------------------
// 7. Close handling

async fn close_reply(body: &[u8]) -> u16 {
    close_code_for(&frame(true, CLOSE, body)).await
}

#[tokio::test]
async fn case_7_1_1_empty_close_gets_1000() {
    assert_eq!(close_reply(b"").await, 1000);
}
#[tokio::test]
async fn case_7_1_6_nothing_after_the_close_is_processed() {
    let server = server().await;
    let mut observer = Raw::open(&server).await;
    let mut closer = Raw::open(&server).await;
    assert!(matches!(observer.event().await, ServerEvent::Join { .. }));
    let mut bytes = frame(true, CLOSE, &1000u16.to_be_bytes());
    bytes.extend(frame(true, TEXT, b"after the close"));
    bytes.extend(frame(true, PING, b"after the close"));
    closer.send(&bytes).await;
    assert_eq!(closer.close_code().await, 1000);
    // Had the closer's message been taken, it would come before the observer's own.
    observer.send_frame(true, TEXT, b"observer").await;
    loop {
        match observer.event().await {
            ServerEvent::Message { text, .. } => break assert_eq!(text, "observer"),
            ServerEvent::Leave { .. } | ServerEvent::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
#[tokio::test]
async fn case_7_3_2_close_with_one_byte_body_gets_1002() {
    assert_eq!(close_reply(b"\x03").await, 1002);
}
#[tokio::test]
async fn case_7_3_3_close_with_code_only_is_echoed() {
    assert_eq!(close_reply(&1000u16.to_be_bytes()).await, 1000);
}
#[tokio::test]
async fn case_7_3_5_close_with_code_and_reason_is_echoed() {
    let body = [&1001u16.to_be_bytes()[..], "au revoir".as_bytes()].concat();
    assert_eq!(close_reply(&body).await, 1001);
}
#[tokio::test]
async fn case_7_3_6_close_with_a_126_byte_body_gets_1002() {
    let body = [&1000u16.to_be_bytes()[..], &[b'r'; 124][..]].concat();
    assert_eq!(close_reply(&body).await, 1002);
}
#[tokio::test]
async fn case_7_5_1_close_reason_that_is_not_utf8_gets_1007() {
    let body = [
        &1000u16.to_be_bytes()[..],
        b"\xCE\xBA\xE1\xBD\xB9\xED\xA0\x80",
    ]
    .concat();
    assert_eq!(close_reply(&body).await, 1007);
}

async fn valid_code_is_echoed(code: u16) {
    assert_eq!(close_reply(&code.to_be_bytes()).await, code);
}

async fn invalid_code_gets_1002(code: u16) {
    assert_eq!(close_reply(&code.to_be_bytes()).await, 1002, "code {code}");
}

#[tokio::test]
async fn case_7_7_1_close_code_1000_is_echoed() {
    valid_code_is_echoed(1000).await;
}
#[tokio::test]
async fn case_7_7_2_close_code_1001_is_echoed() {
    valid_code_is_echoed(1001).await;
}
#[tokio::test]
async fn case_7_7_3_close_code_1002_is_echoed() {
    valid_code_is_echoed(1002).await;
}
#[tokio::test]
async fn case_7_7_4_close_code_1003_is_echoed() {
    valid_code_is_echoed(1003).await;
}
#[tokio::test]
async fn case_7_7_5_close_code_1007_is_echoed() {
    valid_code_is_echoed(1007).await;
}
#[tokio::test]
async fn case_7_7_6_close_code_1008_is_echoed() {
    valid_code_is_echoed(1008).await;
}
#[tokio::test]
async fn case_7_7_7_close_code_1009_is_echoed() {
    valid_code_is_echoed(1009).await;
}
#[tokio::test]
async fn case_7_7_8_close_code_1010_is_echoed() {
    valid_code_is_echoed(1010).await;
}
#[tokio::test]
async fn case_7_7_9_close_code_1011_is_echoed() {
    valid_code_is_echoed(1011).await;
}
#[tokio::test]
async fn case_7_7_10_close_code_3000_is_echoed() {
    valid_code_is_echoed(3000).await;
}
#[tokio::test]
async fn case_7_7_11_close_code_3999_is_echoed() {
    valid_code_is_echoed(3999).await;
}
#[tokio::test]
async fn case_7_7_12_close_code_4000_is_echoed() {
    valid_code_is_echoed(4000).await;
}
#[tokio::test]
async fn case_7_7_13_close_code_4999_is_echoed() {
    valid_code_is_echoed(4999).await;
}
#[tokio::test]
async fn case_7_9_1_close_code_0_gets_1002() {
    invalid_code_gets_1002(0).await;
}
#[tokio::test]
async fn case_7_9_2_close_code_999_gets_1002() {
    invalid_code_gets_1002(999).await;
}
#[tokio::test]
async fn case_7_9_3_close_code_1004_gets_1002() {
    invalid_code_gets_1002(1004).await;
}
#[tokio::test]
async fn case_7_9_4_close_code_1005_gets_1002() {
    invalid_code_gets_1002(1005).await;
}
#[tokio::test]
async fn case_7_9_5_close_code_1006_gets_1002() {
    invalid_code_gets_1002(1006).await;
}
#[tokio::test]
async fn case_7_9_6_close_code_1015_gets_1002() {
    invalid_code_gets_1002(1015).await;
}
#[tokio::test]
async fn case_7_9_7_close_code_1016_gets_1002() {
    invalid_code_gets_1002(1016).await;
}
#[tokio::test]
async fn case_7_9_8_close_code_2000_gets_1002() {
    invalid_code_gets_1002(2000).await;
}
#[tokio::test]
async fn case_7_9_9_close_code_2999_gets_1002() {
    invalid_code_gets_1002(2999).await;
}
#[tokio::test]
async fn case_7_9_10_close_code_5000_gets_1002() {
    invalid_code_gets_1002(5000).await;
}
#[tokio::test]
async fn case_7_9_11_close_code_65535_gets_1002() {
    invalid_code_gets_1002(65535).await;
}

#[tokio::test]
async fn case_7_x_the_close_reply_is_not_held_back_by_queued_room_traffic() {
    // Small kernel buffers both ways, so the room's traffic queues up in the server.
    let server = TestServer::start_with(Config {
        send_buffer_bytes: 4096,
        ..unlimited_rate()
    })
    .await;
    let mut talker = Raw::open(&server).await;
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small buffer");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut closer = Raw::open_on(&server, stream).await;
    assert!(matches!(talker.event().await, ServerEvent::Join { .. }));

    // The closer reads nothing while 48 messages of 8 KB (well within the room log's 1 MiB) arrive.
    const COUNT: usize = 48;
    let text = "t".repeat(8 * 1024);
    for _ in 0..COUNT {
        talker.send_frame(true, TEXT, text.as_bytes()).await;
        talker.said(&text).await;
    }
    closer.send_frame(true, CLOSE, &1000u16.to_be_bytes()).await;
    let mut before_close = 0;
    let code = loop {
        let frame = closer.frame().await;
        if frame.opcode == CLOSE {
            break u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
        }
        before_close += 1;
    };
    assert_eq!(code, 1000);
    // What the kernel buffers held, and the frame under way; not the whole backlog.
    assert!(
        before_close < COUNT / 2,
        "{before_close} of {COUNT} queued frames went out before the close reply"
    );
}

// ---------------------------------------------------------------------------------------------------
// 9. Limits, and attacks on them

#[tokio::test]
async fn case_9_1_message_of_the_maximum_size_in_one_frame_arrives() {
    text_of(MAX).await;
}
#[tokio::test]
async fn case_9_2_message_of_the_maximum_size_in_64_fragments_arrives() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    let text = "f".repeat(MAX);
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(MAX / 64).collect();
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        bytes.extend(frame(i == chunks.len() - 1, opcode, chunk));
    }
    client.send(&bytes).await;
    client.said(&text).await;
}
#[tokio::test]
async fn case_9_3_one_byte_over_the_maximum_in_one_frame_gets_1009() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(true, TEXT, &vec![b'o'; MAX + 1]).await;
    client.refused(ErrorCode::TooBig).await;
    assert_eq!(client.close_code().await, 1009);
}
#[tokio::test]
async fn case_9_4_one_byte_over_the_maximum_in_fragments_gets_1009() {
    let server = server().await;
    let mut client = Raw::open(&server).await;
    client.send_frame(false, TEXT, &vec![b'o'; MAX]).await;
    client.send_frame(true, CONTINUATION, b"o").await;
    client.refused(ErrorCode::TooBig).await;
    assert_eq!(client.close_code().await, 1009);
}

/// Runs `attack` on a fresh connection: it must be closed at once with one of `codes`, and the server
/// must go on serving another client.
async fn survives(attack: &[u8], codes: &[u16]) {
    let server = server().await;
    let mut bystander = Raw::open(&server).await;
    let mut attacker = Raw::open(&server).await;
    attacker.send(attack).await;
    let code = attacker.close_code_within(AT_ONCE).await;
    assert!(codes.contains(&code), "closed with {code}");
    bystander.send_frame(true, TEXT, b"still served").await;
    loop {
        match bystander.event().await {
            ServerEvent::Message { text, .. } => break assert_eq!(text, "still served"),
            ServerEvent::Join { .. } | ServerEvent::Leave { .. } | ServerEvent::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn case_9_x_length_of_2_pow_64_minus_1_is_closed_at_once() {
    survives(&long_header(0x81, u64::MAX), &[1002]).await;
}
#[tokio::test]
async fn case_9_x_huge_length_after_a_fragment_is_closed_at_once() {
    // 14 buffered + 2^64 - 14 declared: a sum that wraps to 0.
    let mut bytes = frame(false, TEXT, &[b'a'; 14]);
    bytes.extend(long_header(0x80, u64::MAX - 13));
    bytes.extend_from_slice(&[0; 64]);
    survives(&bytes, &[1002, 1009]).await;
}
#[tokio::test]
async fn case_9_x_continuation_length_wrapping_the_total_is_closed_at_once() {
    let mut bytes = frame(false, TEXT, &[b'w'; 16]);
    bytes.extend(long_header(0x80, 0xFFFF_FFFF_FFFF_FFF0));
    bytes.extend_from_slice(&[b'w'; 4096]);
    survives(&bytes, &[1002, 1009]).await;
}
#[tokio::test]
async fn case_9_x_length_just_under_2_pow_63_is_too_big() {
    survives(&long_header(0x81, (1 << 63) - 1), &[1009]).await;
}

/// The `connections` count `/healthz` reports.
async fn healthz_connections(server: &TestServer) -> u64 {
    let response = server.http_get("/healthz").await;
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    let json: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
    json["connections"].as_u64().expect("a count")
}

#[tokio::test]
async fn attackers_connections_are_cleaned_up_after_the_attacks() {
    let server = server().await;
    let _bystander = Raw::open(&server).await;
    let before = healthz_connections(&server).await;
    assert_eq!(before, 1);
    let attacks = [
        long_header(0x81, u64::MAX),
        {
            let mut bytes = frame(false, TEXT, &[b'w'; 16]);
            bytes.extend(long_header(0x80, 0xFFFF_FFFF_FFFF_FFF0));
            bytes
        },
        {
            let mut bytes = frame(false, TEXT, &[b'a'; 14]);
            bytes.extend(long_header(0x80, u64::MAX - 13));
            bytes
        },
    ];
    for attack in &attacks {
        let mut attacker = Raw::open(&server).await;
        attacker.send(attack).await;
        attacker.close_code_within(AT_ONCE).await;
    }
    let settled = tokio::time::timeout(PATIENCE, async {
        while healthz_connections(&server).await != before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the attackers' connections are still counted"
    );
}

// ---------------------------------------------------------------------------------------------------
// 4.2.1 of RFC 6455: the opening handshake

async fn handshake_status(key: &str) -> String {
    let server = server().await;
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (head, _) = handshake(&server, stream, key).await;
    head.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn handshake_key_of_15_bytes_gets_400() {
    assert!(handshake_status("AAAAAAAAAAAAAAAAAAAA")
        .await
        .starts_with("HTTP/1.1 400"));
}
#[tokio::test]
async fn handshake_key_that_is_not_base64_gets_400() {
    assert!(handshake_status("this is not base64!!!!==")
        .await
        .starts_with("HTTP/1.1 400"));
}
#[tokio::test]
async fn handshake_key_of_16_bytes_is_accepted() {
    assert!(handshake_status("AQIDBAUGBwgJCgsMDQ4PEA==")
        .await
        .starts_with("HTTP/1.1 101"));
}
