//! The admin HTTP port (loopback by default): health, readiness, and what each proxy holds.
//!
//! | path | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 once every source has loaded and the first snapshot is published; 503 and why before |
//! | `GET /metrics` | Prometheus text: xDS (istiod's names) and release metrics, see [`crate::telemetry`] |
//! | `GET /debug/loglevel`, `PUT /debug/loglevel` | the log filter in force; replace it (body: the filter) |
//! | `GET /debug/syncz` | per proxy stream: node id, connected since, per type sent/ACKed version, last NACK |
//! | `GET /debug/config_dump?proxy=ID` | what proxy ID holds (ACKed), as Envoy JSON |
//! | `GET /debug/config` | Sluice's effective configuration |
//! | `/api/v1/namespaces/{ns}/releases[/{name}[/{action}]]` | the Release API (see [`releases`]) |
//!
//! Every mutating request (any method but GET, HEAD, OPTIONS) passes [`guard`]: same-origin, then the API token
//! (or, without `--api-token-file`, a loopback client).

mod debug;
pub mod guard;
pub mod releases;
mod telemetry;

use crate::store::Store;
use crate::xds::{Registry, Snapshot};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub registry: Registry,
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    pub releases: crate::release::ReleaseController,
    pub config: serde_json::Value,
    /// Who may mutate (the bearer token, or loopback only).
    pub auth: crate::auth::ApiAuth,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(telemetry::metrics))
        .route("/debug/loglevel", get(telemetry::get_loglevel).put(telemetry::put_loglevel))
        .route("/debug/syncz", get(debug::syncz))
        .route("/debug/config_dump", get(debug::config_dump))
        .route("/debug/config", get(debug::config))
        .merge(releases::router())
        // Last, so that it covers every route above, whoever added it.
        .layer(axum::middleware::from_fn_with_state(state.auth.clone(), guard::guard))
        .with_state(state)
}

async fn readyz(axum::extract::State(s): axum::extract::State<AdminState>) -> (StatusCode, &'static str) {
    if !s.store.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for sources to load\n");
    }
    if s.snapshots.borrow().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: first snapshot not published\n");
    }
    (StatusCode::OK, "ready\n")
}

/// Serves the router until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server failed");
    }
}
