//! Telemetry: the Prometheus recorder behind the `metrics` facade, the xDS and release metrics, logging, and the
//! traffic per service version straight from the sidecars (Envoy's stats sink; no Prometheus in between).
//!
//! ```text
//!  counter!/gauge!/histogram! anywhere ──▶ metrics facade ──▶ PrometheusRecorder (installed once per process)
//!  xds streams ──▶ telemetry::xds (cached handles: no lookup per push)         │
//!  ReleaseController (read at scrape time) ──▶ telemetry::release ─────────────┤
//!                                                                               ▼
//!                                                           GET /metrics on the admin port (Prometheus text)
//!
//!  Envoy ──MetricsService stream (1 s flushes)──▶ sink (per-proxy state) ──▶ TrafficStats (per version)
//!                                                                            │ window(): rps, success, p50/p99
//!                   release status, analysis (controller), dashboard ◀───────┤
//!                   gauges sluice_version_{requests_per_second,success_rate} ◀┘ every second (gauges)
//! ```
//! [`install`] is idempotent: every [`crate::server::Sluice::start`] calls it, so a library user or a test that starts
//! several servers in one process shares one recorder (metrics are per process). If another recorder was installed
//! first, Sluice's metrics go to it and `/metrics` shows only the release families.
//!
//! Metric names follow istiod where the meaning is the same (see [`names`]); labels are bounded: xDS type
//! (`cds`/`eds`/`lds`/`rds`), protocol, release namespace/policy/phase/version, and the stats sink's
//! namespace/service/version (at most `stats::MAX_VERSIONS`). Never a proxy id or a nonce.

mod gauges;
pub mod logging;
pub mod prom;
pub mod release;
pub mod sink;
pub mod stats;
pub mod xds;

pub use gauges::publish_gauges;
pub use sink::Sink;
pub use stats::{Delta, Histogram, Measured, Totals, TrafficStats, VersionKey, WindowStats};

pub use prom::{SIZE_BUCKETS, TIME_BUCKETS, install, names, render, upkeep};
