//! Traffic per service version, straight from the sidecars (no Prometheus in between).
//!
//! ```text
//!  Envoy ──MetricsService stream (1 s flushes)──▶ sink (per-proxy state) ──▶ TrafficStats (per version)
//!                                                                            │ window(): rps, success, p50/p99
//!                   release status, analysis (controller), dashboard ◀───────┤
//!                   gauges sluice_version_{requests_per_second,success_rate} ◀┘ every second
//! ```

pub mod sink;
pub mod stats;

pub use sink::Sink;
pub use stats::{Measured, Totals, TrafficStats, VersionKey, WindowStats};

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Sets the per-version gauges every second through the `metrics` facade (a no-op until a recorder is
/// installed), and forgets versions no proxy reports any more; until `stop` turns true.
pub async fn publish_gauges(stats: TrafficStats, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        stats.forget_stale(now);
        for (key, window) in stats.all(now) {
            let labels =
                [("namespace", key.namespace.clone()), ("service", key.service.clone()), ("version", key.version)];
            let rps = window.as_ref().map_or(0.0, |w| w.rps);
            metrics::gauge!("sluice_version_requests_per_second", &labels).set(rps);
            if let Some(rate) = window.and_then(|w| w.measured.success_rate) {
                metrics::gauge!("sluice_version_success_rate", &labels).set(rate);
            }
        }
    }
}
