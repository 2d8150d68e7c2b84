//! Which HTTP responses are compressed on the fly (brotli or gzip, whichever the client prefers), and
//! which are not.
//!
//! The site's own files (the WASM, its JS, the CSS) are compressed once, at build time, at brotli's
//! best quality: `cargo leptos build --release --precompress` writes a `.br` and a `.gz` beside each,
//! and the static file handler sends those with their `Content-Encoding`. This layer then leaves them
//! alone (it never compresses a response that already has an encoding) and compresses what is made
//! per request, the pages and the API's JSON, at the algorithms' fast defaults (brotli 4, gzip 6; the
//! best quality costs over a second of CPU for the WASM). It is also the fallback for a site built
//! without `--precompress`, whose WASM then goes out larger (281 KiB with brotli 4 instead of 233).

use axum::body::HttpBody;
use axum::http::{header, Response, StatusCode};
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;

/// Smallest body compressed: below about a kilobyte compression saves less than a packet, and costs
/// CPU and the exact `Content-Length` (a compressed body is sent chunked).
pub(super) const MIN_COMPRESSED_BYTES: u16 = 1024;

/// Content types that are compressed already: compressing them again costs CPU and saves nothing.
/// (SVG is text, and is compressed.)
const ALREADY_COMPRESSED: &[&str] = &[
    "image/",
    "audio/",
    "video/",
    "font/woff",
    "application/zip",
    "application/gzip",
    "application/zstd",
];

/// Compresses every response [`WorthCompressing`] allows, for clients that accept brotli or gzip.
pub(super) fn layer() -> CompressionLayer<WorthCompressing> {
    CompressionLayer::new().compress_when(WorthCompressing)
}

/// Whether a response is worth compressing: it has a body (not the chat socket's `101`), of at least
/// [`MIN_COMPRESSED_BYTES`] (or of a length not known in advance, like a rendered page), in a format
/// that is not compressed already.
#[derive(Clone, Copy, Debug)]
pub(super) struct WorthCompressing;

impl Predicate for WorthCompressing {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: HttpBody,
    {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return false;
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let compressed_already = !content_type.starts_with("image/svg+xml")
            && ALREADY_COMPRESSED
                .iter()
                .any(|prefix| content_type.starts_with(prefix));
        !compressed_already && SizeAbove::new(MIN_COMPRESSED_BYTES).should_compress(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn response(status: StatusCode, content_type: &str, body: usize) -> Response<Body> {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(vec![b'a'; body]))
            .unwrap_or_default()
    }

    #[test]
    fn text_and_wasm_above_a_kilobyte_are_compressed() {
        for content_type in [
            "text/html; charset=utf-8",
            "application/wasm",
            "text/javascript",
            "text/css",
            "application/json",
            "image/svg+xml",
        ] {
            assert!(
                WorthCompressing.should_compress(&response(StatusCode::OK, content_type, 4096)),
                "{content_type}"
            );
        }
    }

    #[test]
    fn tiny_bodies_and_compressed_formats_are_left_alone() {
        assert!(!WorthCompressing.should_compress(&response(
            StatusCode::OK,
            "application/json",
            1023
        )));
        for content_type in ["image/png", "font/woff2", "application/zip", "video/mp4"] {
            assert!(
                !WorthCompressing.should_compress(&response(StatusCode::OK, content_type, 1 << 20)),
                "{content_type}"
            );
        }
    }

    #[test]
    fn bodiless_statuses_are_left_alone() {
        for status in [
            StatusCode::SWITCHING_PROTOCOLS,
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
        ] {
            assert!(!WorthCompressing.should_compress(&response(status, "text/html", 4096)));
        }
    }
}
