//! Compressed responses: pages and the site's files come back in brotli or gzip when the client asks
//! for it, and decode to the same bytes; files precompressed at build time go out as they are; tiny and
//! already-compressed responses are not compressed; and the chat sockets still upgrade. The real
//! server on 127.0.0.1:0, over real sockets.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::{RawResponse, TestServer};
use groupchat::protocol::ServerEvent;
use groupchat::server::Config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What Chromium sends.
const BROWSER: &str = "gzip, deflate, br, zstd";

fn brotli_decode(bytes: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut decoded)
        .expect("valid brotli");
    decoded
}

fn gzip_decode(bytes: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    decoded
}

fn brotli_encode(bytes: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut encoded, 4096, 11, 22);
        writer.write_all(bytes).expect("compress");
    }
    encoded
}

fn gzip_encode(bytes: &[u8]) -> Vec<u8> {
    let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writer.write_all(bytes).expect("compress");
    writer.finish().expect("compress")
}

/// `size` bytes of something that compresses like code does: repetitive, but not all the same.
fn compressible(size: usize) -> Vec<u8> {
    let words = [
        "fn ", "let ", "self", ".await", "match ", "=> ", "Some(", "None", "; ", "\n",
    ];
    let mut bytes = Vec::with_capacity(size);
    let mut state = 7u32;
    while bytes.len() < size {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        bytes.extend_from_slice(words[(state >> 16) as usize % words.len()].as_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// The body of `response`, decoded by its `Content-Encoding`.
fn decoded(response: &RawResponse) -> Vec<u8> {
    match response.header("content-encoding") {
        Some("br") => brotli_decode(&response.body),
        Some("gzip") => gzip_decode(&response.body),
        None => response.body.clone(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    }
}

/// `page` with its script nonce, which differs from render to render, blanked out.
fn without_nonce(page: &str) -> String {
    let nonce = page
        .split_once("nonce=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(nonce, _)| nonce)
        .expect("a nonce");
    page.replace(nonce, "NONCE")
}

/// A site root like cargo-leptos builds: `pkg/` with a WASM (64 KiB), a JS file precompressed beside
/// it (`.br`, `.gz`), a tiny CSS file and a PNG.
struct Site {
    dir: tempfile::TempDir,
    wasm: Vec<u8>,
    js: Vec<u8>,
    css: Vec<u8>,
    png: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pkg = dir.path().join("pkg");
        std::fs::create_dir(&pkg).expect("pkg/");
        let site = Site {
            dir,
            wasm: compressible(64 * 1024),
            js: compressible(8 * 1024),
            css: b"body { margin: 0 }\n".to_vec(),
            // A PNG's signature, then data that does compress: it is the type that says "compressed".
            png: [b"\x89PNG\r\n\x1a\n".as_slice(), &compressible(4096)].concat(),
        };
        let write = |name: &str, bytes: &[u8]| std::fs::write(pkg.join(name), bytes).expect(name);
        write("groupchat.wasm", &site.wasm);
        write("groupchat.js", &site.js);
        write("groupchat.js.br", &brotli_encode(&site.js));
        write("groupchat.js.gz", &gzip_encode(&site.js));
        write("groupchat.css", &site.css);
        write("picture.png", &site.png);
        site
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root().join("pkg").join(name)).expect(name)
    }
}

#[tokio::test]
async fn a_site_file_comes_compressed_as_asked_and_decodes_to_the_same_bytes() {
    let site = Site::new();
    let server = TestServer::start_with_site(Config::default(), site.root()).await;

    for (accept, expected) in [(BROWSER, "br"), ("br", "br"), ("gzip", "gzip")] {
        let response = server
            .http_get_raw("/pkg/groupchat.wasm", &[("Accept-Encoding", accept)])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-encoding"),
            Some(expected),
            "{accept}"
        );
        assert_eq!(response.header("content-type"), Some("application/wasm"));
        assert_eq!(response.header("vary"), Some("accept-encoding"));
        assert!(
            response.body.len() < site.wasm.len() / 2,
            "{expected}: {} bytes of {}",
            response.body.len(),
            site.wasm.len()
        );
        assert!(
            decoded(&response) == site.wasm,
            "{expected} decodes to the file"
        );
    }

    // Asked for nothing, or for what the server does not speak: the file as it is.
    for headers in [
        &[][..],
        &[("Accept-Encoding", "identity")],
        &[("Accept-Encoding", "zstd")],
    ] {
        let response = server.http_get_raw("/pkg/groupchat.wasm", headers).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), None, "{headers:?}");
        assert!(response.body == site.wasm);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_file_precompressed_at_build_time_goes_out_as_it_is() {
    let site = Site::new();
    let server = TestServer::start_with_site(Config::default(), site.root()).await;

    for (accept, encoding, sibling) in [
        (BROWSER, "br", "groupchat.js.br"),
        ("gzip", "gzip", "groupchat.js.gz"),
    ] {
        let response = server
            .http_get_raw("/pkg/groupchat.js", &[("Accept-Encoding", accept)])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), Some(encoding));
        assert_eq!(response.header("content-type"), Some("text/javascript"));
        // The precompressed file itself, not compressed again nor compressed afresh.
        assert!(response.body == site.file(sibling), "{sibling}");
        assert!(decoded(&response) == site.js);
    }
    server.stop().await;
}

#[tokio::test]
async fn tiny_and_already_compressed_files_are_sent_as_they_are() {
    let site = Site::new();
    let server = TestServer::start_with_site(Config::default(), site.root()).await;

    for (path, original) in [
        ("/pkg/groupchat.css", &site.css),
        ("/pkg/picture.png", &site.png),
    ] {
        let response = server
            .http_get_raw(path, &[("Accept-Encoding", BROWSER)])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), None, "{path}");
        assert!(response.body == *original, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_page_comes_compressed_and_decodes_to_the_page() {
    let server = TestServer::start().await;

    let plain = server.http_get_raw("/", &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    let page = String::from_utf8(plain.body.clone()).expect("an HTML page");
    assert!(page.contains("<title>Group chat</title>"), "{page}");

    for (accept, expected) in [(BROWSER, "br"), ("gzip", "gzip")] {
        let response = server
            .http_get_raw("/", &[("Accept-Encoding", accept)])
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-encoding"), Some(expected));
        assert!(response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")));
        assert!(response.body.len() < plain.body.len());
        // The same page (each render has a nonce of its own for its scripts).
        let decoded = String::from_utf8(decoded(&response)).expect("HTML");
        assert_eq!(without_nonce(&decoded), without_nonce(&page));
    }

    // A small JSON answer is not worth compressing.
    let rooms = server
        .http_get_raw("/api/rooms", &[("Accept-Encoding", BROWSER)])
        .await;
    assert_eq!(rooms.status, 200);
    assert_eq!(rooms.header("content-encoding"), None);
    server.stop().await;
}

#[tokio::test]
async fn the_chat_sockets_still_upgrade_for_a_client_that_accepts_compression() {
    let server = TestServer::start().await;

    for path in ["/ws?name=zip", "/ws/7"] {
        let mut request = format!("ws://{}{path}", server.addr)
            .into_client_request()
            .expect("a request");
        request
            .headers_mut()
            .insert("accept-encoding", BROWSER.parse().expect("a header"));
        let (mut ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("{path} upgrades: {e}"));
        assert_eq!(response.status(), 101, "{path}");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "{path}"
        );

        if path.starts_with("/ws?") {
            let mut client = common::Client::new(ws);
            let (name, _) = client.welcome().await;
            assert_eq!(name, "zip");
            client.joined("general").await;
            client.send_text("through the upgraded socket").await;
            loop {
                match client.event().await {
                    ServerEvent::Message { text, .. } => {
                        assert_eq!(text, "through the upgraded socket");
                        break;
                    }
                    _ => continue,
                }
            }
            client.close().await;
        } else {
            use futures::{SinkExt, StreamExt};
            ws.send(Message::Text("hello".into())).await.expect("send");
            let line = loop {
                match tokio::time::timeout(common::PATIENCE, ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => break text.as_str().to_owned(),
                    Ok(Some(Ok(_))) => continue,
                    other => panic!("expected a line, got {other:?}"),
                }
            };
            assert_eq!(line, "Client #7 says: hello");
        }
    }
    server.stop().await;
}
