//! The heavy and timing-sensitive tests, one test binary whose tests run one at a time (each takes [`serial`]
//! first): faults (SIGKILL under load, slow readers, 1,000 reconnecting streams), `sluice bench`, the dashboard in
//! a headless browser (also as a follower replica serves it), traffic measured per version (analysis, telemetry), a
//! replica SIGSTOPped mid-release, and the container image (built with buildah, its roles run from its root
//! filesystem).
//! Each had a binary of its own before; serialized, none starves another of the machine's cores.

#[path = "../protocol/client.rs"]
mod client;
#[path = "../common/mod.rs"]
mod common;

mod analysis_envoy;
mod bench_smoke;
mod connection_floods;
mod console_browser;
mod dashboard_browser;
mod fault_restart;
mod fault_slow_reader;
mod fault_streams;
mod image_build;
mod kube_dashboard_follower;
mod kube_leader_release;
mod large_mesh;
mod telemetry_envoy;

use tokio::sync::{Mutex, MutexGuard};

/// One test of this binary at a time. A tokio mutex: it works across each test's own runtime, is held across
/// awaits, and is not poisoned when a test fails (the next one still runs).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Waits until no other test of this binary runs; hold the guard for the whole test.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// [`serial`] for a plain (not async) `#[test]`.
pub fn serial_blocking() -> MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}
