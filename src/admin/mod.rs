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
//! | `GET /api/v1/inventory` | what a release task can name: Services, ports, versions (see [`inventory`]) |
//! | `GET /dashboard` (and `/`) | the release console (see `dashboard`) |
//!
//! Every mutating request (any method but GET, HEAD, OPTIONS) passes [`guard`]: same-origin, then the API token
//! (or, without `--api-token-file`, a loopback client).

mod dashboard;
mod debug;
pub mod guard;
pub mod inventory;
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
        .merge(dashboard::router())
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
    budget: crate::conn::Budget,
    within: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let app = router(state);
    // A request head (and each later one on a kept-alive connection) must arrive within `within`: slow or
    // partial headers cannot hold a connection.
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(within);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(100).keep_alive_interval(within);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let a = tokio::select! {
            a = crate::conn::accept(&listener, &budget, "admin") => a,
            _ = shutdown.as_mut() => break,
        };
        let peer = a.peer;
        let guarded = crate::conn::Guarded::new(a.tcp, a.place, 0, within);
        let state = guarded.state();
        let io = TokioIo::new(guarded);
        // A request that reaches the router establishes the connection: one that never sends a whole head is the
        // first the budget closes when full.
        let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            state.establish();
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    // Open requests get 5 s to finish.
    if tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await.is_err() {
        tracing::debug!("admin connections still open at shutdown were dropped");
    }
}
