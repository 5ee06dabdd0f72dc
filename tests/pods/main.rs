//! A mesh on one machine, with real interception: pods are network namespaces on a bridge, `sluice iptables`
//! installs each pod's rules, `sluice proxy` runs its Envoy as uid 1337, and the apps (Python stand-ins for
//! Bookinfo) call each other by Service name with no proxy settings (see `tests/common/podnet.rs`).
//!
//! Needs root, iproute2 and iptables (scripts/setup installs them); panics, naming what is missing, without
//! them. The tests run one at a time ([`serial`]): each starts up to eight Envoys on the machine's two cores.

#[path = "../common/mod.rs"]
mod common;

mod agent;
mod bookinfo;
mod injected;
mod interception;
mod iptables_rules;
mod mtls;
mod sidecar;

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Waits until no other test of this binary runs; hold the guard for the whole test.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}
