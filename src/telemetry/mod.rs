//! Telemetry: the Prometheus recorder behind the `metrics` facade, the xDS and release metrics, and logging.
//!
//! ```text
//!  counter!/gauge!/histogram! anywhere ──▶ metrics facade ──▶ PrometheusRecorder (installed once per process)
//!  xds streams ──▶ telemetry::xds (cached handles: no lookup per push)         │
//!  ReleaseController (read at scrape time) ──▶ telemetry::release ─────────────┤
//!                                                                               ▼
//!                                                           GET /metrics on the admin port (Prometheus text)
//! ```
//! [`install`] is idempotent: every [`crate::server::Sluice::start`] calls it, so a library user or a test that starts
//! several servers in one process shares one recorder (metrics are per process). If another recorder was installed
//! first, Sluice's metrics go to it and `/metrics` shows only the release families.
//!
//! Metric names follow istiod where the meaning is the same (see [`names`]); labels are bounded: xDS type
//! (`cds`/`eds`/`lds`/`rds`), protocol, and release namespace/policy/phase/version. Never a proxy id or a nonce.

pub mod logging;
pub mod prom;
pub mod release;
pub mod xds;

pub use prom::{SIZE_BUCKETS, TIME_BUCKETS, install, names, render, upkeep};
