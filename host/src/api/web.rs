//! The dashboard: `web/dist` (built by `npm run build` in `web/`, which scripts/setup.sh
//! runs) embedded in the binary by rust-embed and served at `/`.
//!
//! The page only talks to this API; it loads nothing from elsewhere, and the
//! Content-Security-Policy says so to the browser.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::RustEmbed)]
#[folder = "../web/dist/"]
#[allow_missing = true]
struct Assets;

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// GET / and the dashboard's files.
pub async fn asset(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Assets::get(path) else {
        let msg = if Assets::get("index.html").is_none() {
            "the dashboard was not built into this binary: run scripts/setup.sh (npm ci && npm run build in web/), then build wvs again"
        } else {
            "no such file"
        };
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    let kind = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        file.data,
    )
        .into_response()
}
