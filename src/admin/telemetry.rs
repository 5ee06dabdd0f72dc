//! `GET /metrics` (Prometheus text) and `GET`/`PUT /debug/loglevel` (the live log filter).
//!
//! `PUT /debug/loglevel` changes what the process logs; like every mutating admin endpoint it is meant for the
//! operator on loopback (the admin port's default) and goes behind the admin token where one is configured.

use super::AdminState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The recorder's metrics, then the release families read from the controller now.
pub async fn metrics(State(s): State<AdminState>) -> Response {
    let mut body = crate::telemetry::render();
    body.push_str(&crate::telemetry::release::render(&s.releases.list(None)));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

const NO_CONTROL: &str = "the log filter is not controllable: this process's logging was not set up by \
                          sluice::telemetry::logging::init\n";

/// The filter in force, as text (tracing's `EnvFilter` syntax).
pub async fn get_loglevel() -> (StatusCode, String) {
    match crate::telemetry::logging::control() {
        Some(c) => (StatusCode::OK, format!("{}\n", c.filter())),
        None => (StatusCode::NOT_IMPLEMENTED, NO_CONTROL.into()),
    }
}

/// Replaces the filter with the request body (e.g. `info,sluice::xds=debug`); a bad filter is refused (400) and
/// the old one stays.
pub async fn put_loglevel(body: String) -> (StatusCode, String) {
    let Some(control) = crate::telemetry::logging::control() else {
        return (StatusCode::NOT_IMPLEMENTED, NO_CONTROL.into());
    };
    let filter = body.trim();
    if filter.is_empty() {
        return (StatusCode::BAD_REQUEST, "the body must be a log filter, e.g. `info,sluice::xds=debug`\n".into());
    }
    match control.set(filter) {
        Ok(()) => (StatusCode::OK, format!("{filter}\n")),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}
