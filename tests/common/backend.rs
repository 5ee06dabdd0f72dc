//! An in-process HTTP/1.1 backend that stands in for one version of a service.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::oneshot;

/// A real HTTP server on 127.0.0.1 that answers every request with its name as the body and in an
/// `x-backend` header, and counts requests. It can be told to fail (500) a share of them, to stand
/// in for a bad canary. Stops when dropped.
pub struct Backend {
    name: String,
    addr: SocketAddr,
    state: Arc<State>,
    _stop: oneshot::Sender<()>,
}

struct State {
    name: String,
    requests: AtomicU64,
    /// Of every 100 requests, this many answer 500.
    fail_percent: AtomicU32,
}

impl Backend {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(name: &str) -> Backend {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let state =
            Arc::new(State { name: name.to_string(), requests: AtomicU64::new(0), fail_percent: AtomicU32::new(0) });
        let handler_state = state.clone();
        let app = Router::new().fallback(move || answer(handler_state.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                eprintln!("backend {addr}: {e}");
            }
        });
        Backend { name: name.to_string(), addr, state, _stop: stop }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests answered so far, failed ones included.
    pub fn count(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// A reader of [`Backend::count`] that outlives a borrow of the backend (for a sampling task).
    pub fn counter(&self) -> impl Fn() -> u64 + Send + 'static {
        let state = self.state.clone();
        move || state.requests.load(Ordering::Relaxed)
    }

    /// From now on, answer 500 to `percent` of every 100 requests (evenly spread, deterministic).
    pub fn fail_percent(&self, percent: u32) {
        assert!(percent <= 100, "fail_percent {percent} > 100");
        self.state.fail_percent.store(percent, Ordering::Relaxed);
    }
}

async fn answer(state: Arc<State>) -> impl IntoResponse {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    // Bresenham: request n fails when the running total of failures owed steps up.
    let p = u64::from(state.fail_percent.load(Ordering::Relaxed));
    let fail = (n + 1) * p / 100 > n * p / 100;
    let status = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    (status, [("x-backend", state.name.clone())], state.name.clone())
}
