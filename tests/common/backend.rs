//! An in-process HTTP/1.1 backend that stands in for one version of a service.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
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
    /// Failures are picked by a pseudo-random draw per request instead of evenly spread.
    fail_random: AtomicBool,
    /// Each answer waits this long (milliseconds).
    delay_ms: AtomicU64,
}

impl Backend {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(name: &str) -> Backend {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let state = Arc::new(State {
            name: name.to_string(),
            requests: AtomicU64::new(0),
            fail_percent: AtomicU32::new(0),
            fail_random: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        });
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

    /// From now on, answer 500 to each request with probability `percent`/100, drawn independently per request
    /// (retries of one client request are then independent tries, as with a flaky real service).
    pub fn fail_random(&self, percent: u32) {
        self.fail_percent(percent);
        self.state.fail_random.store(true, Ordering::Relaxed);
    }

    /// From now on, wait `delay` before each answer.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// SplitMix64: a well-spread 64-bit value for each request number.
fn splitmix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn answer(state: Arc<State>) -> impl IntoResponse {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let p = u64::from(state.fail_percent.load(Ordering::Relaxed));
    let fail = if state.fail_random.load(Ordering::Relaxed) {
        splitmix(n) % 100 < p
    } else {
        // Bresenham: request n fails when the running total of failures owed steps up.
        (n + 1) * p / 100 > n * p / 100
    };
    let status = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    (status, [("x-backend", state.name.clone())], state.name.clone())
}
