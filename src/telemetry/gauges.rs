//! The per-version gauges (`sluice_version_requests_per_second`, `sluice_version_success_rate`), set every second
//! from [`TrafficStats`] through the `metrics` facade; the recorder behind `/metrics` exports them.

use super::names;
use super::stats::TrafficStats;
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
        set_gauges(&stats, now);
    }
}

/// `sluice_version_requests_per_second` (0 once no proxy reports the version) and `sluice_version_success_rate`
/// (only while there are requests), labelled `{namespace, service, version}`.
fn set_gauges(stats: &TrafficStats, now_ms: u64) {
    for (key, window) in stats.all(now_ms) {
        let labels = [("namespace", key.namespace.clone()), ("service", key.service.clone()), ("version", key.version)];
        let rps = window.as_ref().map_or(0.0, |w| w.rps);
        metrics::gauge!(names::VERSION_RPS, &labels).set(rps);
        if let Some(rate) = window.and_then(|w| w.measured.success_rate) {
            metrics::gauge!(names::VERSION_SUCCESS_RATE, &labels).set(rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::{Delta, VersionKey};
    use metrics::{Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
    use std::sync::{Arc, Mutex};

    /// Records every gauge set as `name{labels} = value`.
    #[derive(Default)]
    struct Gauges(Arc<Mutex<Vec<String>>>);

    struct Set(Arc<Mutex<Vec<String>>>, String);

    impl GaugeFn for Set {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            self.0.lock().unwrap().push(format!("{} = {value}", self.1));
        }
    }

    impl Recorder for Gauges {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Gauge::from_arc(Arc::new(Set(self.0.clone(), format!("{}{{{}}}", key.name(), labels.join(",")))))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn gauges_carry_each_versions_rate_and_success() {
        let stats = TrafficStats::new();
        let v3 = VersionKey::new("default", "reviews", "v3");
        for s in 1..=14u64 {
            let d = Delta { requests: 20, errors: 1, ..Default::default() };
            stats.record(s * 1000, s * 1000 - 1000, &[(v3.clone(), d)]);
        }
        let recorder = Gauges::default();
        metrics::with_local_recorder(&recorder, || set_gauges(&stats, 14_000));
        metrics::with_local_recorder(&recorder, || set_gauges(&stats, 60_000));
        let labels = "namespace=default,service=reviews,version=v3";
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec![
                format!("sluice_version_requests_per_second{{{labels}}} = 20"),
                format!("sluice_version_success_rate{{{labels}}} = 0.95"),
                format!("sluice_version_requests_per_second{{{labels}}} = 0"),
            ]
        );
    }
}
