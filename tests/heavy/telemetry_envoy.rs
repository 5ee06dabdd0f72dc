//! Traffic per version from the sidecars' stats sinks, through two real Envoys 1.40: after steady load, release
//! status shows each version's requests/s and success rate within 10% of what the backends answered, summed over
//! both proxies; latency percentiles are present; the `sluice_version_*` gauges on `/metrics` say the same.
//!
//! ```text
//!  LoadLoop ─▶ Envoy A ─┐                      ┌─▶ Backend v1 (counts)
//!  LoadLoop ─▶ Envoy B ─┴─ 70/30 split ────────┴─▶ Backend v3 (counts; 10% answered 500)
//!        both ── MetricsService (1 s flushes) ──▶ Sluice ── status.versions[].rps / successRate / latency
//! ```

use crate::common;

use common::{Backend, LoadLoop, reviews_yaml, start_envoy};
use sluice::model::ObjectKey;
use sluice::release::status::VersionStatus;
use sluice::server::{Options, Sluice};
use sluice::source;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

const POLICY: &str = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\n\
                      spec: {service: reviews, stable: v1, canary: v3, traffic: {canaryWeight: 3000}}\n";

fn version<'a>(versions: &'a [VersionStatus], name: &str) -> &'a VersionStatus {
    versions.iter().find(|v| v.name == name).expect("version in status")
}

fn within(what: &str, got: f64, want: f64, share: f64) {
    let off = (got - want).abs() / want;
    println!("{what}: status {got:.3}, measured {want:.3} ({:.1}% off)", off * 100.0);
    assert!(off <= share, "{what}: status says {got:.3}, the backends saw {want:.3}: more than {share:.0}% apart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_versions_rate_and_success_summed_over_proxies() {
    let _serial = crate::serial().await;
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    v3.fail_percent(10);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    let text = reviews_yaml(v1.port(), v3.port()) + POLICY;
    sluice.store().set_model(source::parse_str(&text, "reviews.yaml").expect("config parses"));
    let (_a, listen_a) = start_envoy(sluice.xds_addr(), "proxy-a", false).await;
    let (_b, listen_b) = start_envoy(sluice.xds_addr(), "proxy-b", true).await;
    for node in ["proxy-a", "proxy-b"] {
        sluice.wait_acked(node, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
    }
    let loads = [LoadLoop::start(listen_a, "reviews", 2, 60), LoadLoop::start(listen_b, "reviews", 2, 60)];

    // The backends' counts sampled every 50 ms against the wall clock, so the test can count what they answered
    // in exactly the seconds status reports on (the 10 whole seconds ending 2 s before it is read).
    let samples = Arc::new(Mutex::new(Vec::<(u64, u64, u64)>::new()));
    let sampler = {
        let (samples, v1, v3) = (samples.clone(), v1.counter(), v3.counter());
        tokio::spawn(async move {
            loop {
                samples.lock().unwrap().push((now_ms(), v1(), v3()));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(16)).await;
    let read_at = now_ms();
    let view = sluice.releases().get(&ObjectKey::new("default", "reviews-v3")).expect("release");
    let admin = sluice.admin_addr().expect("admin port");
    let client = common::http::client();
    let (_, metrics) = common::http::get_with(&client, admin, "sluice", "/metrics", &[]).await.expect("/metrics");
    sampler.abort();
    for load in loads {
        println!("load: {}", load.stop().await.summary());
    }
    println!("status versions: {}", serde_json::to_string(&view.status.versions).unwrap());
    let samples = samples.lock().unwrap().clone();
    // Requests per second each backend answered in the 10 s ending `settle` seconds before `at`'s second.
    let rate = |at: u64, settle: u64, which: usize| {
        let end = (at / 1000 - settle) * 1000;
        let count_at = |t: u64| samples.iter().rev().find(|s| s.0 <= t).map(|s| [s.1, s.2][which]).expect("sample");
        (count_at(end) - count_at(end - 10_000)) as f64 / 10.0
    };
    let (rate1, rate3) = (rate(read_at, 2, 0), rate(read_at, 2, 1));

    let (s1, s3) = (version(&view.status.versions, "v1"), version(&view.status.versions, "v3"));
    within("v1 requests/s", s1.rps.expect("v1 rps in status"), rate1, 0.10);
    within("v3 requests/s", s3.rps.expect("v3 rps in status"), rate3, 0.10);
    within("v1 success rate", s1.success_rate.expect("v1 success rate"), 1.0, 0.10);
    within("v3 success rate", s3.success_rate.expect("v3 success rate"), 0.9, 0.10);
    let v3_errors = 1.0 - s3.success_rate.unwrap();
    assert!((v3_errors - 0.10).abs() < 0.02, "v3 answers 500 to exactly 10%; status says {v3_errors:.3}");
    // The same numbers as gauges on /metrics, set every second (so for this window or the one before).
    let gauge = |name: &str, version: &str| -> f64 {
        let series = format!("{name}{{namespace=\"default\",service=\"reviews\",version=\"{version}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series}in /metrics"));
        line[series.len()..].trim().parse().expect("a number")
    };
    let v3_gauge = gauge("sluice_version_requests_per_second", "v3");
    let v3_want = [rate3, rate(read_at, 3, 1)];
    let closest = v3_want.into_iter().min_by(|a, b| (a - v3_gauge).abs().total_cmp(&(b - v3_gauge).abs())).unwrap();
    within("v3 requests/s gauge", v3_gauge, closest, 0.10);
    within("v1 success rate gauge", gauge("sluice_version_success_rate", "v1"), 1.0, 0.10);
    within("v3 success rate gauge", gauge("sluice_version_success_rate", "v3"), 0.9, 0.10);
    for v in [s1, s3] {
        let (p50, p99) = (v.latency_p50_ms.expect("p50"), v.latency_p99_ms.expect("p99"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 5000.0, "{}: p50 {p50} ms, p99 {p99} ms", v.name);
    }
}
