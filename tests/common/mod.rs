//! Helpers shared by every integration test that runs a real Envoy, real backends or real load.
//!
//! ```text
//!   load()/get() ──HTTP/1.1──▶ Envoy (child process, its own tempdir + log) ──▶ Backend (in-process axum)
//!                               ▲ admin: /ready, /config_dump, /stats
//!                               └── Envoy::admin_get / wait_live / wait_for / stat
//! ```
//! Each test binary compiles this module once (`#[path = "../common/mod.rs"] mod common;` in `tests/<group>/main.rs`)
//! and uses only part of it.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub mod backend;
pub mod browser;
pub mod child;
pub mod cookies;
pub mod envoy;
pub mod http;
pub mod https;
pub mod interop;
pub mod istio_samples;
pub mod kmock;
pub mod log;
pub mod mesh;
pub mod peers;
pub mod pki;
pub mod podmesh;
pub mod podnet;
pub mod podspec;
pub mod prom;
pub mod stats;
pub mod traffic;

pub use backend::Backend;
pub use child::SluiceChild;
pub use cookies::CookieJar;
pub use envoy::{Envoy, envoy_bin};
pub use http::{Counts, get, load};
pub use log::captured_log;
pub use mesh::{reviews_model, reviews_yaml, start_envoy};
pub use peers::Peer;
pub use stats::{assert_share, split_bound};
pub use traffic::{LoadLoop, LoadReport};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port that is free on 127.0.0.1 right now. Another process may take it before the caller binds
/// it; prefer binding `127.0.0.1:0` yourself when the code under test accepts a listener.
pub fn free_port() -> u16 {
    let [addr] = free_addrs();
    addr.port()
}

/// A port on 127.0.0.1 where connections are refused for as long as the returned socket lives: bound, never
/// listening. Unlike a [`free_port`] left closed, no other process can start listening on it meanwhile, and the
/// kernel never picks it as the source port of an outgoing connection (which could connect to itself).
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

/// `N` distinct free addresses on 127.0.0.1 (all held open until every one is chosen, so two calls of
/// [`free_port`] cannot hand one process the same port twice). The same caveat as [`free_port`] applies.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"));
    listeners.map(|l| l.local_addr().expect("local addr"))
}

/// The project virtualenv's Python (with grpcio), for the peers in `tests/peers/`.
pub fn venv_python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup", python.display());
    python
}

/// A script in `tests/peers/`.
pub fn peer(name: &str) -> PathBuf {
    repo().join("tests/peers").join(name)
}

/// Polls `f` every 20 ms until it returns Some, for at most `limit` (then fails naming `what`).
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: std::time::Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
