//! The grayscale release end to end through a real Envoy 1.40, under continuous load: 0% → 20% → 50% → promote →
//! finalize, 20% → abort, a policy created and deleted (its clusters come and go), and a step plan that moves on
//! by itself. Releases are driven in process through
//! `Sluice::releases()` (the controller the REST API and CLI call); every split is measured with a separate batch
//! and asserted with a 99.999% bound.
//!
//! ```text
//!  LoadLoop (≥200 req/s) ─┐
//!  2000-request batches ──┴─▶ Envoy :listen ──▶ Backend v1 / Backend v3 (in-process, counting)
//!                               ▲ ADS (Delta)
//!  releases().set_weight/act ─▶ Sluice (in process; proxies acked/total in status)
//! ```

use crate::common;

use common::{Backend, Envoy, LoadLoop, assert_share, load, reviews_yaml, start_envoy};
use sluice::model::{ObjectKey, Phase, ReleasePolicySpec};
use sluice::release::{ReleaseView, Verb};
use sluice::server::{Options, Sluice};
use sluice::source;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const NODE: &str = "envoy-flows";
/// Requests per measured split.
const BATCH: usize = 2000;
/// The background load: tasks × requests per second per task (a target of 400/s; at least 200/s is asserted).
const LOAD_TASKS: usize = 4;
const LOAD_PER_TASK: u32 = 100;
const MIN_RATE: f64 = 200.0;

/// reviews with one v1 and one v3 workload, and (with `policy`) the release policy reviews-v3 at 0%.
fn config(v1: u16, v3: u16, policy: bool) -> String {
    let mut text = reviews_yaml(v1, v3);
    if policy {
        text.push_str(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\n\
             spec: {service: reviews, stable: v1, canary: v3, traffic: {canaryWeight: 0}}\n",
        );
    }
    text
}

fn key() -> ObjectKey {
    ObjectKey::new("default", "reviews-v3")
}

struct Mesh {
    sluice: Sluice,
    envoy: Envoy,
    listen: SocketAddr,
    v1: Backend,
    v3: Backend,
}

impl Mesh {
    async fn start(policy: bool) -> Mesh {
        let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
        let sluice = Sluice::start(Options::local()).await.expect("start");
        let model = source::parse_str(&config(v1.port(), v3.port(), policy), "reviews.yaml").expect("config parses");
        sluice.store().set_model(model);
        let (envoy, listen) = start_envoy(sluice.xds_addr(), NODE, false).await;
        sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
        Mesh { sluice, envoy, listen, v1, v3 }
    }

    fn view(&self) -> ReleaseView {
        self.sluice.releases().get(&key()).expect("release reviews-v3 exists")
    }

    /// Waits until every connected proxy has ACKed the release's current traffic config (status says so), and
    /// returns that status. This is the "done" the operator sees; the test trusts nothing else.
    async fn applied(&self, what: &str) -> ReleaseView {
        let started = Instant::now();
        loop {
            let view = self.view();
            let p = &view.status.proxies;
            if p.total >= 1 && p.acked == p.total {
                println!("{what}: applied ({}/{} proxies ACKed) after {:?}", p.acked, p.total, started.elapsed());
                return view;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{what}: not ACKed within 10 s: {:?}", view.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A separate batch of [`BATCH`] requests: none fails, and v3's share is within the bound of `p`.
    async fn measure(&self, what: &str, p: f64) -> usize {
        let batch = load(self.listen, "reviews", BATCH, 8).await;
        println!("{what}: {batch:?}");
        assert_eq!((batch.errors, batch.non_2xx), (0, 0), "{what}: no request of the batch fails: {batch:?}");
        assert_share(what, batch.of("v3"), BATCH, p);
        batch.of("v3")
    }

    async fn stop(self) {
        drop(self.envoy);
        self.sluice.shutdown().await;
    }
}

fn weight_of(view: &ReleaseView, version: &str) -> u32 {
    view.status.weights.get(version).copied().unwrap_or_else(|| panic!("no weight for {version}: {:?}", view.status))
}

fn has_v1_cluster(dump: &serde_json::Value) -> bool {
    dump.to_string().contains("outbound|9080|v1|")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_promote_finalize_under_load_fails_no_request() {
    let started = Instant::now();
    let m = Mesh::start(true).await;
    let releases = m.sluice.releases();
    let running = LoadLoop::start(m.listen, "reviews", LOAD_TASKS, LOAD_PER_TASK);

    let view = m.applied("0%").await;
    assert_eq!(weight_of(&view, "v3"), 0);
    let batch = load(m.listen, "reviews", BATCH, 8).await;
    assert_eq!((batch.of("v1"), batch.errors, batch.non_2xx), (BATCH, 0, 0), "0%: all on v1: {batch:?}");

    for (bp, p) in [(2000, 0.2), (5000, 0.5)] {
        releases.set_weight(&key(), bp).expect("set weight");
        let view = m.applied(&format!("{bp} bp")).await;
        assert_eq!(weight_of(&view, "v3"), bp, "{:?}", view.status);
        m.measure(&format!("v3 at {bp} bp"), p).await;
    }

    releases.act(&key(), Verb::Promote).expect("promote");
    let view = m.applied("promote").await;
    assert_eq!((view.status.phase, weight_of(&view, "v3")), (Phase::Promoted, 10_000));
    m.measure("v3 after promote", 1.0).await;

    releases.act(&key(), Verb::Finalize).expect("finalize");
    let view = m.applied("finalize").await;
    assert_eq!(view.status.phase, Phase::Finalized);
    m.envoy.wait_for(Duration::from_secs(10), |dump| !has_v1_cluster(dump)).await;
    // Requests already on their way to v1 when Envoy swapped its config finish; after that, v1 gets nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v1_before = m.v1.count();
    m.measure("v3 after finalize", 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = running.stop().await;
    println!("load over the whole flow: {}", report.summary());
    assert_eq!(m.v1.count(), v1_before, "v1 still runs but gets no request after finalize");
    let dump = m.envoy.admin_get("/config_dump?include_eds").await;
    assert!(!dump.contains("outbound|9080|v1|"), "no v1 cluster is left in Envoy after finalize");
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{}", report.summary());
    assert!(report.rate() >= MIN_RATE, "the load ran at {:.0}/s, below {MIN_RATE}/s", report.rate());
    m.stop().await;
    println!("rollout flow took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_returns_all_traffic_to_stable_under_load() {
    let m = Mesh::start(true).await;
    let releases = m.sluice.releases();
    let running = LoadLoop::start(m.listen, "reviews", LOAD_TASKS, LOAD_PER_TASK);

    releases.set_weight(&key(), 2000).expect("set weight");
    m.applied("20%").await;
    m.measure("v3 at 20%", 0.2).await;

    releases.act(&key(), Verb::Abort).expect("abort");
    let view = m.applied("abort").await;
    assert_eq!((view.status.phase, weight_of(&view, "v1")), (Phase::Aborted, 10_000));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v3_before = m.v3.count();
    m.measure("v3 after abort", 0.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = running.stop().await;
    println!("load over the abort flow: {}", report.summary());
    assert_eq!(m.v3.count(), v3_before, "after abort v3 gets no request");
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{}", report.summary());
    assert!(report.rate() >= MIN_RATE, "the load ran at {:.0}/s, below {MIN_RATE}/s", report.rate());
    m.stop().await;
}

/// A service without a policy has one cluster (no version subsets). Creating the policy under load adds v1's and
/// v3's clusters, and Envoy warms them before any route names them; deleting it after finalize goes back to the
/// one cluster. Not one request fails at any step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_created_and_deleted_under_load_adds_and_removes_its_clusters_without_a_failure() {
    let m = Mesh::start(false).await;
    let subsets = |dump: &serde_json::Value| {
        let text = dump.to_string();
        ["v1", "v3"].map(|v| text.contains(&format!("outbound|9080|{v}|reviews")))
    };
    let dump = m.envoy.admin_get("/config_dump").await;
    assert!(dump.contains("outbound|9080||reviews"), "the service's cluster is in Envoy");
    assert!(!dump.contains("outbound|9080|v1|") && !dump.contains("outbound|9080|v3|"), "no version cluster yet");
    let running = LoadLoop::start(m.listen, "reviews", LOAD_TASKS, LOAD_PER_TASK);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spec = ReleasePolicySpec::split("reviews", "v1", "v3", 2000);
    m.sluice.releases().apply(&key(), spec).expect("apply the policy");
    m.applied("created at 20%").await;
    m.envoy.wait_for(Duration::from_secs(10), |dump| subsets(dump) == [true, true]).await;
    m.measure("v3 at 20% in a new release", 0.2).await;

    m.sluice.releases().act(&key(), Verb::Promote).expect("promote");
    m.applied("promote").await;
    m.sluice.releases().act(&key(), Verb::Finalize).expect("finalize");
    m.applied("finalize").await;
    m.envoy.wait_for(Duration::from_secs(10), |dump| subsets(dump) == [false, true]).await;
    m.measure("v3 after finalize", 1.0).await;

    // The release is over: its policy goes, and so does v3's cluster; the service's own cluster routes again.
    // (v1 still has a workload, so the catch-all sends to both, as before the release.)
    m.sluice.releases().delete(&key()).expect("delete the policy");
    m.envoy.wait_for(Duration::from_secs(10), |dump| subsets(dump) == [false, false]).await;
    let after = load(m.listen, "reviews", BATCH, 8).await;
    assert_eq!((after.errors, after.non_2xx), (0, 0), "after the policy is deleted: {after:?}");
    assert!(after.of("v1") > 0 && after.of("v3") > 0, "the catch-all spreads over both workloads: {after:?}");

    let report = running.stop().await;
    println!("load from no policy to no policy: {}", report.summary());
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{}", report.summary());
    assert!(report.rate() >= MIN_RATE, "the load ran at {:.0}/s, below {MIN_RATE}/s", report.rate());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_plan_advances_on_durations_and_waits_for_promote() {
    let m = Mesh::start(false).await;
    let spec: ReleasePolicySpec = serde_json::from_value(serde_json::json!({
        "service": "reviews", "stable": "v1", "canary": "v3",
        "steps": [{"setWeight": 1000}, {"pause": {"duration": "2s"}}, {"setWeight": 5000}, {"pause": {}}],
    }))
    .expect("spec");
    let applied_at = Instant::now();
    let view = m.sluice.releases().apply(&key(), spec).expect("apply the policy");
    assert_eq!((view.status.step, weight_of(&view, "v3")), (1, 1000), "the first setWeight applies at once");

    m.applied("step 1 (10%)").await;
    let batch = load(m.listen, "reviews", 1000, 8).await;
    let measured_at = applied_at.elapsed();
    assert_eq!((batch.errors, batch.non_2xx), (0, 0), "{batch:?}");
    assert!(measured_at < Duration::from_millis(1900), "the 10% batch ended before the pause did ({measured_at:?})");
    assert_share("v3 at 1000 bp (step 1)", batch.of("v3"), 1000, 0.1);

    // The 2 s pause ends by itself: the next setWeight applies, and the plan stops at `pause: {}`.
    let moved_at = loop {
        let view = m.view();
        if weight_of(&view, "v3") == 5000 {
            assert_eq!(view.status.step, 3, "{:?}", view.status);
            break applied_at.elapsed();
        }
        assert_eq!(view.status.step, 1, "{:?}", view.status);
        assert!(applied_at.elapsed() < Duration::from_secs(5), "the 2 s pause did not end: {:?}", view.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("the 2 s pause ended after {moved_at:?}");
    assert!((Duration::from_millis(1950)..Duration::from_millis(3000)).contains(&moved_at), "{moved_at:?}");
    m.applied("step 3 (50%)").await;
    m.measure("v3 at 5000 bp (step 3)", 0.5).await;

    // `pause: {}` waits for a person, however long.
    let until = applied_at + Duration::from_secs(5);
    tokio::time::sleep_until(until.into()).await;
    let view = m.view();
    assert_eq!((view.status.phase, view.status.step, weight_of(&view, "v3")), (Phase::Progressing, 3, 5000));
    assert!(view.status.conditions.iter().any(|c| c.reason == "PausedForPromotion"), "{:?}", view.status);

    m.sluice.releases().act(&key(), Verb::Promote).expect("promote");
    let view = m.applied("promote").await;
    assert_eq!((view.status.phase, weight_of(&view, "v3")), (Phase::Promoted, 10_000));
    m.measure("v3 after promote", 1.0).await;
    m.stop().await;
}
