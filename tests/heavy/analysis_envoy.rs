//! Metric-driven analysis through a real Envoy 1.40 under steady load: a canary answering 500 to 30% of requests
//! is rolled back (stable takes all traffic, the reason in status); a healthy canary walks its steps, each gated
//! by a passing check, to Promoted.
//!
//! ```text
//!  LoadLoop ─▶ Envoy ─▶ Backend v1 / Backend v3 (30% 500s, or healthy)
//!               └─ stats sink (1 s) ─▶ Sluice: every 2 s check the canary ─▶ abort, or next step / promote
//! ```

use crate::common;

use common::{Backend, Envoy, LoadLoop, load, reviews_yaml, start_envoy};
use sluice::model::{ObjectKey, Phase};
use sluice::release::ReleaseView;
use sluice::server::{Options, Sluice};
use sluice::source;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const NODE: &str = "envoy-analysis";

/// Two weighted steps, each held 2 s and gated by checks every 2 s: ≥ 20 canary requests, ≥ 95% non-5xx.
const POLICY: &str = r#"---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {name: reviews-v3}
spec:
  service: reviews
  stable: v1
  canary: v3
  steps:
  - setWeight: 3000
  - pause: {duration: 2s}
  - setWeight: 6000
  - pause: {duration: 2s}
  analysis:
    interval: 2s
    failureLimit: 2
    minRequests: 20
    successRate: {min: 0.95}
    latencyP99Ms: {max: 2000}
"#;

struct Mesh {
    sluice: Sluice,
    _envoy: Envoy,
    listen: SocketAddr,
    v1: Backend,
    v3: Backend,
}

impl Mesh {
    async fn start(canary_fail_percent: u32) -> Mesh {
        let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
        v3.fail_percent(canary_fail_percent);
        let sluice = Sluice::start(Options::local()).await.expect("start");
        let text = reviews_yaml(v1.port(), v3.port()) + POLICY;
        sluice.store().set_model(source::parse_str(&text, "reviews.yaml").expect("config parses"));
        let (envoy, listen) = start_envoy(sluice.xds_addr(), NODE, false).await;
        sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
        Mesh { sluice, _envoy: envoy, listen, v1, v3 }
    }

    fn view(&self) -> ReleaseView {
        self.sluice.releases().get(&ObjectKey::new("default", "reviews-v3")).expect("release")
    }

    /// Polls status until `phase`, recording every canary weight seen on the way.
    async fn wait_phase(&self, phase: Phase, within: Duration) -> (ReleaseView, Vec<u32>) {
        let started = Instant::now();
        let mut weights: Vec<u32> = Vec::new();
        loop {
            let view = self.view();
            let w = view.status.weights["v3"];
            if weights.last() != Some(&w) {
                println!(
                    "{:>5.1} s: v3 weight {w}, conditions {:?}",
                    started.elapsed().as_secs_f64(),
                    view.status.conditions
                );
                weights.push(w);
            }
            if view.status.phase == phase && view.status.proxies.acked == view.status.proxies.total {
                return (view, weights);
            }
            assert!(started.elapsed() < within, "not {phase:?} within {within:?}: {:#?}", view.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// After the release settled: a fresh batch goes entirely to `version`'s backend.
    async fn all_traffic_to(&self, version: &str) {
        let (c1, c3) = (self.v1.count(), self.v3.count());
        let batch = load(self.listen, "reviews", 400, 4).await;
        let (d1, d3) = (self.v1.count() - c1, self.v3.count() - c3);
        println!("batch after the release settled: {batch:?}; backends v1 +{d1}, v3 +{d3}");
        let (to, other) = if version == "v1" { (d1, d3) } else { (d3, d1) };
        assert_eq!((to, other), (400, 0), "every request goes to {version}");
    }
}

fn condition<'a>(view: &'a ReleaseView, kind: &str) -> &'a sluice::release::Condition {
    view.status.conditions.iter().find(|c| c.kind == kind).unwrap_or_else(|| panic!("no {kind} condition"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_30_percent_is_rolled_back_with_the_reason() {
    let _serial = crate::serial().await;
    let mesh = Mesh::start(30).await;
    let traffic = LoadLoop::start(mesh.listen, "reviews", 2, 50);
    let (view, weights) = mesh.wait_phase(Phase::Aborted, Duration::from_secs(40)).await;
    println!("load: {}", traffic.stop().await.summary());
    let analysis = condition(&view, "Analysis");
    println!("{analysis:?}");
    assert_eq!((analysis.status.as_str(), analysis.reason.as_str()), ("False", "FailureLimitReached"));
    assert!(analysis.message.contains("2 checks in a row") && analysis.message.contains("< 0.95"), "{analysis:?}");
    assert_eq!(view.status.weights["v3"], 0, "stable takes all traffic back");
    assert_eq!(weights.first(), Some(&3000), "the first step applied");
    assert!(!weights.contains(&6000), "a failing canary never gets the next step: {weights:?}");
    mesh.all_traffic_to("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_moves_through_its_steps_to_promoted() {
    let _serial = crate::serial().await;
    let mesh = Mesh::start(0).await;
    let traffic = LoadLoop::start(mesh.listen, "reviews", 2, 50);
    let (view, weights) = mesh.wait_phase(Phase::Promoted, Duration::from_secs(60)).await;
    let report = traffic.stop().await;
    println!("load: {}", report.summary());
    assert_eq!((report.counts.errors, report.counts.non_2xx), (0, 0), "no request fails on the way");
    assert_eq!(weights, vec![3000, 6000, 10000], "each step in turn, then all traffic");
    let analysis = condition(&view, "Analysis");
    assert_eq!((analysis.status.as_str(), analysis.reason.as_str()), ("True", "Passed"), "{analysis:?}");
    mesh.all_traffic_to("v3").await;
}
