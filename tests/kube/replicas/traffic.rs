//! Traffic through a follower's Envoy counts everywhere: sent only through envoy-b (on replica-b), it shows in the
//! release status of the leader and of the other follower at the rate the backends counted (within 10%), and a
//! canary failing 30% behind that follower is aborted by the leader's analysis. Along the way, each replica's
//! report writes per second, idle and under that traffic (`sluice_replica_report_writes_total`).

use super::{IDS, Mesh, condition, counter, now_ms, until_within, view};
use common::LoadLoop;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

/// Long enough for a heartbeat (lease/3 = 2 s) distinct from the 1 s change limit, so the idle rate shows.
const LEASE_SECS: u64 = 6;
/// The status window: 10 whole seconds ending 2 s before now (`telemetry::stats`).
const WINDOW_SECS: u64 = 10;
const SETTLE_SECS: u64 = 2;

/// `(wall ms, v1 count, v3 count)` every 100 ms.
type Samples = Arc<Mutex<Vec<(u64, u64, u64)>>>;

fn sample(mesh: &Mesh) -> (Samples, tokio::task::JoinHandle<()>) {
    let samples: Samples = Arc::default();
    let (v1, v3, out) = (mesh.v1.counter(), mesh.v3.counter(), samples.clone());
    let task = tokio::spawn(async move {
        loop {
            out.lock().unwrap().push((now_ms(), v1(), v3()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (samples, task)
}

/// What the backends counted per second over the status window of a read at `at_ms`: (v1, v3).
fn backend_rates(samples: &Samples, at_ms: u64) -> (f64, f64) {
    let end = (at_ms / 1000 - SETTLE_SECS) * 1000;
    let start = end - WINDOW_SECS * 1000;
    let samples = samples.lock().unwrap();
    let at = |t: u64| *samples.iter().rev().find(|s| s.0 <= t).expect("sampled before the window");
    let (a, b) = (at(start), at(end));
    ((b.1 - a.1) as f64 / WINDOW_SECS as f64, (b.2 - a.2) as f64 / WINDOW_SECS as f64)
}

fn rps(status: &Value, version: &str) -> f64 {
    let versions = status["versions"].as_array().expect("versions");
    let v = versions.iter().find(|v| v["name"] == version).expect("the version");
    v["rps"].as_f64().unwrap_or(0.0)
}

/// Report writes per second of each replica over `period`.
async fn write_rates(mesh: &Mesh, period: Duration) -> Vec<f64> {
    let name = "sluice_replica_report_writes_total";
    let mut before = Vec::new();
    for r in &mesh.replicas {
        before.push(counter(r.admin, name, &[r#"result="ok""#]).await);
    }
    let started = Instant::now();
    tokio::time::sleep(period).await;
    let mut rates = Vec::new();
    for (r, b) in mesh.replicas.iter().zip(before) {
        rates.push((counter(r.admin, name, &[r#"result="ok""#]).await - b) / started.elapsed().as_secs_f64());
    }
    rates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_through_a_follower_shows_everywhere_and_its_failing_canary_is_aborted() {
    let _serial = super::serial().await;
    let analysis = json!({"interval": "2s", "failureLimit": 2, "minRequests": 20, "successRate": {"min": 0.95}});
    let mesh = Mesh::start(3, LEASE_SECS, json!({"traffic": {"canaryWeight": 5000}, "analysis": analysis})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = write_rates(&mesh, Duration::from_secs(10)).await;
    println!("report writes/s, idle (lease {LEASE_SECS} s): {:?}", IDS.iter().zip(&idle).collect::<Vec<_>>());

    // Load only through the follower's Envoy; the window fills, then every replica reports the same rate.
    let (samples, sampler) = sample(&mesh);
    let load = LoadLoop::start(mesh.envoys[1].1, "reviews", 2, 40);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let loaded = write_rates(&mesh, Duration::from_secs(10)).await;
    println!("report writes/s, under load through envoy-b: {:?}", IDS.iter().zip(&loaded).collect::<Vec<_>>());
    for (i, replica) in [(0, "the leader"), (2, "the other follower"), (1, "the follower serving it")] {
        let at = now_ms();
        let s = view(mesh.replicas[i].admin).await["status"].clone();
        let (b1, b3) = backend_rates(&samples, at);
        let (r1, r3) = (rps(&s, "v1"), rps(&s, "v3"));
        println!("{} ({replica}): rps v1 {r1:.1} v3 {r3:.1}; backends counted v1 {b1:.1} v3 {b3:.1}", IDS[i]);
        for (version, shown, counted) in [("v1", r1, b1), ("v3", r3, b3), ("both", r1 + r3, b1 + b3)] {
            assert!(counted > 10.0, "the load did not run: {counted} rps to {version}");
            let off = (shown - counted).abs() / counted;
            assert!(off <= 0.10, "{}: {version} shows {shown:.1} rps, backends counted {counted:.1}", IDS[i]);
        }
    }
    sampler.abort();

    // The canary fails 30% behind envoy-b only: the leader's analysis sees it and aborts.
    mesh.v3.fail_percent(30);
    let failing = Instant::now();
    let s = until_within("aborted by analysis", Duration::from_secs(40), async || {
        let s = view(mesh.leader().admin).await["status"].clone();
        (s["phase"] == "Aborted").then_some(s)
    })
    .await;
    println!("aborted {:?} after the canary began failing (analysis every 2 s, 2 failures)", failing.elapsed());
    println!("load: {}", load.stop().await.summary());
    let reason = condition(&s["conditions"], "Analysis").expect("an Analysis condition");
    assert_eq!((&reason["status"], &reason["reason"]), (&json!("False"), &json!("FailureLimitReached")), "{s:#}");
    assert!(reason["message"].as_str().unwrap().contains("< 0.95"), "{reason}");
    mesh.until_status("Aborted in the ReleasePolicy status", |s| (s["phase"] == "Aborted").then_some(())).await;
}
