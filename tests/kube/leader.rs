//! Leader election between two real `sluice serve --kube` processes against the kmock API emulator: both serve,
//! only the Lease holder writes ReleasePolicy status, and when it is killed (SIGKILL, by PID) the other takes over
//! within the lease duration (plus one retry period) and writes the status of the release state it holds.

use crate::common;

use common::kmock::{Kmock, api, resource_version, reviews_release};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 2;

async fn holder(client: &kube::Client) -> Option<String> {
    let lease = match api(client, "coordination.k8s.io/v1", "Lease").get("sluice").await {
        Ok(lease) => lease,
        Err(kube::Error::Api(e)) if e.code == 404 => return None,
        Err(e) => panic!("lease get: {e}"),
    };
    lease.data["spec"]["holderIdentity"].as_str().map(String::from)
}

/// Waits until the Lease names a holder other than `not`; returns it and how long that took.
async fn new_holder(client: &kube::Client, not: Option<&str>, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(h) = holder(client).await.filter(|h| Some(h.as_str()) != not) {
            return (h, start.elapsed());
        }
        assert!(start.elapsed() < limit, "no new lease holder after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(client: &kube::Client) -> Value {
    let rp = api(client, "sluice.dev/v1alpha1", "ReleasePolicy").get("reviews").await.expect("policy get");
    rp.data.get("status").cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_status_and_another_takes_over_when_it_dies() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": 2000}});
    let policies = reviews_release(&client, spec).await;

    let a = kmock.replica("replica-a", LEASE_SECS, dir.path()).await;
    let (first, _) = new_holder(&client, None, Duration::from_secs(5)).await;
    assert_eq!(first, "replica-a");
    let b = kmock.replica("replica-b", LEASE_SECS, dir.path()).await;

    // Wait for the leader's first status counting both replicas (each reports its proxies through the cluster),
    // then erase it: only the leader may write it back.
    let start = Instant::now();
    let both =
        |s: &Value| s["observedGeneration"] == 1 && s["proxies"]["replicas"].as_array().is_some_and(|r| r.len() == 2);
    while !both(&status(&client).await) {
        assert!(start.elapsed() < Duration::from_secs(5), "the leader wrote no status counting both replicas");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marker = json!({"metadata": {"resourceVersion": resource_version()}, "status": {"phase": "Erased"}});
    policies.patch_status("reviews", &PatchParams::default(), &Patch::Merge(&marker)).await.unwrap();
    // The follower, given three lease durations, never writes, and the leader (whose last write is unchanged)
    // writes only on a release change: a weight patch shows whose writes land.
    tokio::time::sleep(Duration::from_secs(3 * LEASE_SECS)).await;
    assert_eq!(status(&client).await["phase"], "Erased", "a replica rewrote an unchanged status");
    assert_eq!(holder(&client).await.as_deref(), Some("replica-a"), "the leader renews");
    let log = |id: &str| std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap();
    assert!(log("replica-a").contains("ReleasePolicy status written"), "{}", log("replica-a"));
    let b_log = log("replica-b");
    assert!(!b_log.contains("leadership changed"), "the follower led while the leader lived:\n{b_log}");
    assert!(!b_log.contains("ReleasePolicy status written"), "the follower wrote status:\n{b_log}");

    // Kill the leader: B takes the lease within the lease duration plus a retry period, and writes the status.
    let pid = a.pid();
    a.kill9();
    println!("killed leader pid {pid}");
    let (next, took) = new_holder(&client, Some("replica-a"), Duration::from_secs(2 * LEASE_SECS + 2)).await;
    println!("{next} took the lease {took:?} after the leader died (lease {LEASE_SECS} s)");
    assert_eq!(next, "replica-b");
    assert!(took <= Duration::from_millis(LEASE_SECS * 1000 * 4 / 3 + 500), "took {took:?}");
    let patch = json!({"metadata": {"generation": 2, "resourceVersion": resource_version()},
                       "spec": {"traffic": {"canaryWeight": 6000}}});
    policies.patch("reviews", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let start = Instant::now();
    loop {
        let s = status(&client).await;
        if s["observedGeneration"] == 2 {
            assert_eq!(s["weights"], json!({"v1": 4000, "v3": 6000}), "{s:#}");
            assert_eq!(s["phase"], "Progressing");
            assert!(log("replica-b").contains("ReleasePolicy status written"));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the new leader wrote no status: {s:#}\n{}", b.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
