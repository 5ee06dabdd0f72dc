//! `kill -9` of the real `sluice` binary in the middle of a release: Envoy keeps routing on its last config while
//! Sluice is down; a restart with the same `--state-dir` brings back the same weight and step; Envoy reconnects,
//! keeps the split, and the release goes on to 100% on promote. A load loop runs through all of it.
//!
//! ```text
//!  LoadLoop + batches ──▶ Envoy ──▶ Backend v1 / v3 (in-process)
//!                           ▲ ADS (Delta), reconnects
//!  sluice serve --config reviews.yaml --state-dir DIR   (child process; SIGKILLed, then started again)
//! ```

use crate::common;

use common::{Backend, LoadLoop, SluiceChild, assert_share, load, reviews_yaml, start_envoy};
use sluice::model::Phase;
use sluice::release::Record;
use sluice::release::persist::Persisted;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const NODE: &str = "envoy-restart";
const BATCH: usize = 2000;
const RELEASE: &str = "default/reviews-v3";

/// reviews v1 and v3, and a policy whose plan sets 30% and then waits for a person; `action` is the operator's
/// wish written into the file.
fn config(v1: u16, v3: u16, action: &str) -> String {
    reviews_yaml(v1, v3)
        + &format!(
            r#"---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: reviews-v3}}
spec:
  service: reviews
  stable: v1
  canary: v3
  steps:
  - setWeight: 3000
  - pause: {{}}
  action: {action}
"#
        )
}

/// The release's record as the state dir holds it.
fn stored(state: &Path) -> Record {
    let text = std::fs::read_to_string(state.join("releases.json")).expect("releases.json exists");
    let persisted: Persisted = serde_json::from_str(&text).expect("releases.json parses");
    persisted.records.get(RELEASE).cloned().unwrap_or_else(|| panic!("no {RELEASE} in {text}"))
}

/// A batch through Envoy: nothing fails, v3's share is within the bound of `p`.
async fn measure(listen: SocketAddr, what: &str, p: f64) {
    let batch = load(listen, "reviews", BATCH, 8).await;
    println!("{what}: {batch:?}");
    assert_eq!((batch.errors, batch.non_2xx), (0, 0), "{what}: {batch:?}");
    assert_share(what, batch.of("v3"), BATCH, p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_release_keeps_traffic_and_state() {
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, state) = (dir.path().join("reviews.yaml"), dir.path().join("state"));
    std::fs::write(&file, config(v1.port(), v3.port(), "Progress")).expect("write config");
    let [xds, admin] = common::free_addrs();
    let log = |n: u32| dir.path().join(format!("sluice-{n}.log"));

    let state_arg = state.to_str().expect("utf-8 temp path");
    let server = SluiceChild::start(&file, xds, admin, log(1), &["--state-dir", state_arg]).await;
    let (envoy, listen) = start_envoy(xds, NODE, false).await;
    measure(listen, "30% before the kill", 0.3).await;
    let before = stored(&state);
    assert_eq!(
        (before.state.phase, before.state.canary_weight, before.state.step),
        (Phase::Progressing, Some(3000), 1)
    );

    let running = LoadLoop::start(listen, "reviews", 4, 100);
    println!("kill -9 sluice (pid {})", server.pid());
    server.kill9();
    envoy.wait_connected(0, Duration::from_secs(5)).await;
    measure(listen, "30% while sluice is down", 0.3).await;

    let server = SluiceChild::start(&file, xds, admin, log(2), &["--state-dir", state_arg]).await;
    let after = stored(&state);
    assert_eq!(after.state, before.state, "the restart brings back the same phase, weight and step");
    // And that is what the restarted server serves, as the operator reads it through the Release API.
    let path = "/api/v1/namespaces/default/releases/reviews-v3";
    let (code, body) = common::http::get_with(&common::http::client(), admin, "localhost", path, &[])
        .await
        .expect("release API answers");
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(view["status"]["phase"], "Progressing", "{view}");
    assert_eq!(
        (view["status"]["weights"]["v3"].as_u64(), view["status"]["step"].as_u64()),
        (Some(3000), Some(1)),
        "{view}"
    );
    let took = envoy.wait_connected(1, Duration::from_secs(15)).await;
    println!("Envoy reconnected {took:?} after sluice was ready again");
    measure(listen, "30% after the restart", 0.3).await;
    assert_eq!(stored(&state).state, before.state, "reconnecting changes nothing");

    // The release goes on: promote (the operator's wish, written into the policy's file).
    std::fs::write(&file, config(v1.port(), v3.port(), "Promote")).expect("edit config");
    let started = Instant::now();
    loop {
        let probe = load(listen, "reviews", 100, 4).await;
        if stored(&state).state.phase == Phase::Promoted && probe.of("v3") == 100 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not promoted in 10 s: {:?}", stored(&state));
    }
    measure(listen, "100% after promote", 1.0).await;

    let report = running.stop().await;
    println!("load from the kill to the promote: {}", report.summary());
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{}", report.summary());
    assert!(report.rate() >= 200.0, "the load ran at {:.0}/s", report.rate());
    drop(envoy);
    drop(server);
}
