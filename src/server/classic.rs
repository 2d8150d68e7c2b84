//! `GET /classic`: the original chat's page, a static file compiled into the binary, for the clients of
//! `/ws/{client_id}` (see `upgrade.rs`). Where it comes from, and its one change, are in the file:
//! `classic/index.html`.

use axum::http::header::CACHE_CONTROL;
use axum::response::{Html, IntoResponse};

/// The page, as it is in the repository.
const PAGE: &str = include_str!("classic/index.html");

/// `GET /classic`.
pub async fn page() -> impl IntoResponse {
    // Revalidated on every visit: a page cached across a server upgrade would keep its old script.
    ([(CACHE_CONTROL, "no-cache")], Html(PAGE))
}
