//! The gate in front of every admin request.
//!
//! ```text
//!  request ─▶ safe method (GET, HEAD, OPTIONS)?
//!               ├─ /healthz, /readyz, /metrics (probes, scrapers)                   ─▶ handler
//!               ├─ Host is a loopback name                                          ─▶ handler
//!               ├─ a valid bearer token (with --api-token-file)                      ─▶ handler
//!               └─ otherwise: 403 (a DNS-rebinding page reads the whole topology)
//!               │ not safe
//!               ├─ Sec-Fetch-Site cross-site/same-site, or Origin ≠ http(s)://<Host>  ─▶ 403 (cross-site)
//!               ├─ no --api-token-file and Host is not a loopback name              ─▶ 403 (DNS rebinding)
//!               ├─ ApiAuth::check(Authorization, peer)                                ─▶ 401
//!               └─▶ handler
//! ```
//! A browser attaches no bearer token by itself (it is a header, not a cookie), so a cross-site page cannot carry
//! one; the Origin check also stops it where no token is configured and loopback alone would let it through.

use crate::auth::ApiAuth;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

pub async fn guard(State(auth): State<ApiAuth>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return match read_allowed(&req, &auth) {
            Ok(()) => next.run(req).await,
            Err(message) => {
                tracing::warn!(path = %req.uri().path(), %message, "admin read refused");
                (StatusCode::FORBIDDEN, axum::Json(json!({ "error": message }))).into_response()
            }
        };
    }
    if let Err(message) = same_origin(req.headers(), auth.has_token()) {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), %message, "admin request refused");
        return (StatusCode::FORBIDDEN, axum::Json(json!({ "error": message }))).into_response();
    }
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if let Err(denied) = auth.check(authorization, peer) {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), ?peer, error = %denied, "admin request refused");
        let body = axum::Json(json!({ "error": denied.to_string() }));
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    next.run(req).await
}

/// Paths every client may read: what probes and scrapers ask for (they use the pod's address as Host).
const OPEN_READS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// A read is answered on a loopback Host, or with the token; probes and metrics always.
fn read_allowed(req: &Request, auth: &ApiAuth) -> Result<(), String> {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if OPEN_READS.contains(&req.uri().path()) || host.is_empty() || loopback_host(host) {
        return Ok(());
    }
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth.has_token() && authorization.is_some() && auth.check(authorization, None).is_ok() {
        return Ok(());
    }
    Err(format!(
        "Host `{host}` is not a loopback name: reads other than /healthz, /readyz and /metrics need the bearer token \
         of --api-token-file (a page that rebinds its name to this address must not read the mesh)"
    ))
}

/// Refuses what a browser marks as coming from another site. Clients that are not browsers send neither header.
fn same_origin(headers: &HeaderMap, has_token: bool) -> Result<(), String> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && (site == "cross-site" || site == "same-site")
    {
        return Err(format!("cross-site request refused (Sec-Fetch-Site: {site})"));
    }
    let host = get(header::HOST).unwrap_or_default();
    if let Some(origin) = get(header::ORIGIN)
        && origin != format!("http://{host}")
        && origin != format!("https://{host}")
    {
        return Err(format!(
            "cross-origin request refused: Origin `{origin}` is not this admin origin (Host `{host}`)"
        ));
    }
    if !has_token && !host.is_empty() && !loopback_host(host) {
        return Err(format!(
            "Host `{host}` is not a loopback name; without --api-token-file release changes are taken only at \
             localhost, 127.0.0.1 or [::1]"
        ));
    }
    Ok(())
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn origins_must_match_the_host() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:15014")]), false).is_ok());
        let same = headers(&[("host", "127.0.0.1:15014"), ("origin", "http://127.0.0.1:15014")]);
        assert!(same_origin(&same, false).is_ok());
        let other = headers(&[("host", "127.0.0.1:15014"), ("origin", "http://evil.example")]);
        assert!(same_origin(&other, true).unwrap_err().contains("Origin `http://evil.example`"));
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")]), true).is_err());
    }

    #[test]
    fn without_a_token_the_host_must_be_loopback() {
        let rebound = headers(&[("host", "evil.example:15014"), ("origin", "http://evil.example:15014")]);
        assert!(same_origin(&rebound, false).is_err(), "DNS rebinding to loopback");
        assert!(same_origin(&rebound, true).is_ok(), "with a token the token decides");
        for ok in ["localhost:15014", "127.0.0.1", "[::1]:15014", "LOCALHOST"] {
            assert!(loopback_host(ok), "{ok}");
        }
        assert!(!loopback_host("10.0.0.1:15014"));
    }
}
