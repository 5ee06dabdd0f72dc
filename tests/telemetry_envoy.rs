//! Traffic per version from the sidecars' stats sinks, through two real Envoys 1.40: after steady load, release
//! status shows each version's requests/s and success rate within 10% of what the backends answered, summed over
//! both proxies; latency percentiles are present; the `sluice_version_*` gauges on `/metrics` say the same.
//!
//! ```text
//!  LoadLoop ─▶ Envoy A ─┐                      ┌─▶ Backend v1 (counts)
//!  LoadLoop ─▶ Envoy B ─┴─ 70/30 split ────────┴─▶ Backend v3 (counts; 10% answered 500)
//!        both ── MetricsService (1 s flushes) ──▶ Sluice ── status.versions[].rps / successRate / latency
//! ```

mod common;

use common::{Backend, LoadLoop, reviews_yaml, start_envoy};
use sluice::model::ObjectKey;
use sluice::release::status::VersionStatus;
use sluice::server::{Options, Sluice};
use sluice::source;
use std::time::{Duration, Instant};

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

    // A full window of steady load, then the backends' counts over the next 10 s against what status says.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (c1, c3, t0) = (v1.count(), v3.count(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (rate1, rate3) = ((v1.count() - c1) as f64 / secs, (v3.count() - c3) as f64 / secs);
    let view = sluice.releases().get(&ObjectKey::new("default", "reviews-v3")).expect("release");
    let admin = sluice.admin_addr().expect("admin port");
    let (_, metrics) =
        common::http::get_with(&common::http::client(), admin, "sluice", "/metrics", &[]).await.expect("/metrics");
    for load in loads {
        println!("load: {}", load.stop().await.summary());
    }
    println!("status versions: {}", serde_json::to_string(&view.status.versions).unwrap());

    let (s1, s3) = (version(&view.status.versions, "v1"), version(&view.status.versions, "v3"));
    within("v1 requests/s", s1.rps.expect("v1 rps in status"), rate1, 0.10);
    within("v3 requests/s", s3.rps.expect("v3 rps in status"), rate3, 0.10);
    within("v1 success rate", s1.success_rate.expect("v1 success rate"), 1.0, 0.10);
    within("v3 success rate", s3.success_rate.expect("v3 success rate"), 0.9, 0.10);
    let v3_errors = 1.0 - s3.success_rate.unwrap();
    assert!((v3_errors - 0.10).abs() < 0.02, "v3 answers 500 to exactly 10%; status says {v3_errors:.3}");
    // The same numbers as gauges on /metrics (set every second, so compared loosely with status).
    let gauge = |name: &str, version: &str| -> f64 {
        let series = format!("{name}{{namespace=\"default\",service=\"reviews\",version=\"{version}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series}in /metrics"));
        line[series.len()..].trim().parse().expect("a number")
    };
    within("v3 requests/s gauge", gauge("sluice_version_requests_per_second", "v3"), rate3, 0.10);
    within("v1 success rate gauge", gauge("sluice_version_success_rate", "v1"), 1.0, 0.10);
    within("v3 success rate gauge", gauge("sluice_version_success_rate", "v3"), 0.9, 0.10);
    for v in [s1, s3] {
        let (p50, p99) = (v.latency_p50_ms.expect("p50"), v.latency_p99_ms.expect("p99"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 5000.0, "{}: p50 {p50} ms, p99 {p99} ms", v.name);
    }
}
