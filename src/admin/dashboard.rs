//! The dashboard: one static page (HTML, JS, CSS compiled into the binary with `include_str!`; no CDN, no build
//! step) that reads the Release REST API every second and draws each version's requests/s and success rate.
//!
//! | path | answers |
//! |---|---|
//! | `GET /` | redirect to `/dashboard` |
//! | `GET /dashboard` | the page |
//! | `GET /dashboard/app.js`, `/dashboard/app.css` | its script and style |
//!
//! The page changes releases only through the REST API (`POST .../weight`, `.../promote`, `.../abort`,
//! `.../finalize`), each after a confirm step, from one JS function (`send`) that adds `Authorization: Bearer`
//! when a token is set in the page.

use super::AdminState;
use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/dashboard/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}
