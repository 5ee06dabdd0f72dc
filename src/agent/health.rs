//! The agent's status port (15021): `/healthz/ready` answers 200 once Envoy is LIVE and holds clusters and
//! listeners from Sluice (not merely started: without Sluice, Envoy turns LIVE after its 15 s initial-fetch
//! timeout with no config), else 503 with the reason. Also a tiny HTTP/1 client for Envoy's admin port.

use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) async fn serve(listener: tokio::net::TcpListener, admin: SocketAddr) {
    let app = axum::Router::new()
        .route("/healthz/ready", get(move || ready(admin)))
        .route("/healthz/live", get(|| async { "ok\n" }));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the status port failed");
    }
}

async fn ready(admin: SocketAddr) -> (StatusCode, String) {
    match check(admin).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// Envoy is LIVE and has taken clusters and listeners from Sluice at least once.
async fn check(admin: SocketAddr) -> Result<(), String> {
    let (status, body) = get_admin(admin, "/ready").await.ok_or("Envoy's admin port does not answer")?;
    if status != 200 || body.trim() != "LIVE" {
        return Err(format!("Envoy is {}", body.trim()));
    }
    let filter = "^(cluster_manager.cds|listener_manager.lds).update_success$";
    let (_, stats) = get_admin(admin, &format!("/stats?filter={filter}")).await.ok_or("no stats")?;
    let got = |name: &str| {
        stats.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    if got("cluster_manager.cds.update_success") == 0 || got("listener_manager.lds.update_success") == 0 {
        return Err("no config from Sluice yet".into());
    }
    Ok(())
}

async fn get_admin(admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(admin, "GET", path).await
}

/// POSTs to Envoy's admin port (for `/drain_listeners?graceful`); failures are logged.
pub(super) async fn post(admin: SocketAddr, path: &str) {
    match request(admin, "POST", path).await {
        Some((200, _)) => {}
        other => tracing::warn!(path, answer = ?other, "Envoy's admin port did not take the request"),
    }
}

async fn request(admin: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder().method(method).uri(format!("http://{admin}{path}")).body(Empty::new()).ok()?;
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}
