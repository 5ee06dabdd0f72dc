//! The release console: one static page (HTML, JS modules and CSS compiled into the binary with `include_str!`; no
//! CDN, no build step) that creates release tasks, edits their traffic policy, reads the Release REST API every
//! second to draw each version's requests/s and success rate, and ends tasks. Every replica serves the same page.
//!
//! | path | answers |
//! |---|---|
//! | `GET /` | redirect to `/dashboard` |
//! | `GET /dashboard` | the page |
//! | `GET /dashboard/{app,api,create,policy,yaml}.js`, `/dashboard/app.css` | its modules and style |
//!
//! The page changes releases only through the REST API (`PUT .../releases/NAME`, `POST .../weight`,
//! `.../promote`, `.../abort`, `.../finalize`), each checked first with `?dryRun=All` (the verbs' confirm step
//! shows the plan the dry run answers), from one JS function (`api.js`'s `call`) that adds `Authorization: Bearer`
//! when a token is set in the page.

use super::AdminState;
use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/app.css");
/// The page's modules, by file name.
const SCRIPTS: [(&str, &str); 5] = [
    ("app.js", include_str!("dashboard/app.js")),
    ("api.js", include_str!("dashboard/api.js")),
    ("create.js", include_str!("dashboard/create.js")),
    ("policy.js", include_str!("dashboard/policy.js")),
    ("yaml.js", include_str!("dashboard/yaml.js")),
];

pub fn router() -> Router<AdminState> {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }));
    for (name, body) in SCRIPTS {
        router = router.route(
            &format!("/dashboard/{name}"),
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        );
    }
    router
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}
