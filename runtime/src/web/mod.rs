//! The web page at `/`: runs with their status, and each run's timeline (activities with
//! their attempts, timers, signals, LLM prompts and answers).
//!
//! Owns one self-contained page (HTML, CSS and script inline, nothing fetched from anywhere
//! but the JSON API beside it). It never reads the store itself and serves nothing under
//! `/api`: the page's script reads `GET /api/runs`, `/api/runs/{id}` and
//! `/api/runs/{id}/history`, whoever serves them.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The page, compiled into the binary so `tempest serve` needs no files beside it.
pub const INDEX_HTML: &str = include_str!("index.html");

/// Serves the page at `/` (and `/index.html`); meant to be merged beside the API's routes.
pub fn router() -> Router {
    Router::new().route("/", get(index)).route("/index.html", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing on the page comes from elsewhere; say so to the browser as well.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}
