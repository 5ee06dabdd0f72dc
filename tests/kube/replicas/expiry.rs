//! A replica killed for good (SIGKILL, by PID) while the finalize waits on its frozen Envoy: within the lease
//! duration plus one heartbeat its report expires, the leader stops counting its proxies and says so
//! (`ReplicasReporting` False, `ReplicaExpired`), and the stable Deployment is scaled to zero.

use super::{Mesh, condition, signal, until, view};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 3;
/// The report heartbeat of that lease: lease/3, at least 1 s (`cli::serve`).
const HEARTBEAT: Duration = Duration::from_secs(1);

fn expired(s: &Value) -> bool {
    condition(&s["conditions"], "ReplicasReporting")
        .is_some_and(|c| c["status"] == "False" && c["reason"] == "ReplicaExpired")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_expires_and_the_finalize_stops_waiting_for_its_proxies() {
    let _serial = super::serial().await;
    let mut mesh =
        Mesh::start(3, LEASE_SECS, json!({"traffic": {"canaryWeight": 5000}, "finalize": {"loser": "ScaleToZero"}}))
            .await;
    mesh.act("Promote", 2).await;
    mesh.until_status("promoted, every proxy holding it", |s| {
        (s["phase"] == "Promoted" && s["proxies"]["acked"] == 3).then_some(())
    })
    .await;
    signal(mesh.envoys[2].0.pid(), "-STOP");
    mesh.act("Finalize", 3).await;
    mesh.until_status("the loser waiting for envoy-c", |s| {
        let pending = s["proxies"]["pending"].as_array().is_some_and(|p| p.iter().any(|p| p == "replica-c/envoy-c"));
        let waiting =
            condition(&s["rollout"]["conditions"], "Loser").is_some_and(|c| c["reason"] == "WaitingForProxies");
        (pending && waiting).then_some(())
    })
    .await;
    assert_eq!(mesh.stable_replicas().await, 2);

    // replica-c dies for good; its frozen Envoy never ACKs.
    let gone = mesh.replicas.remove(2);
    gone.kill9();
    let killed = Instant::now();
    let s = until("the leader takes replica-c's report as expired", async || {
        let s = view(mesh.leader().admin).await["status"].clone();
        expired(&s).then_some(s)
    })
    .await;
    let took = killed.elapsed();
    println!("replica-c's report expired {took:?} after SIGKILL (lease {LEASE_SECS} s, heartbeat {HEARTBEAT:?})");
    println!("{:#}", condition(&s["conditions"], "ReplicasReporting").unwrap());
    // The report was renewed at most a heartbeat before the kill; the slack is for polling on a loaded machine.
    let bound = Duration::from_secs(LEASE_SECS) + HEARTBEAT + Duration::from_secs(2);
    assert!(took <= bound, "expired {took:?} after the kill (bound {bound:?})");
    let p = &s["proxies"];
    assert_eq!((&p["acked"], &p["total"]), (&json!(2), &json!(2)), "replica-c's proxy no longer counted: {p:#}");
    let replica_c = p["replicas"].as_array().unwrap().iter().find(|r| r["name"] == "replica-c").cloned();
    assert_eq!(replica_c.map(|r| r["report"].clone()), Some(json!("Expired")), "{p:#}");

    until("stable scaled to zero", async || (mesh.stable_replicas().await == 0).then_some(())).await;
    println!("stable scaled to zero {:?} after the kill", killed.elapsed());
    let s = mesh
        .until_status("the expiry in the ReleasePolicy status", |s| {
            (expired(s) && s["rollout"]["loser"]["done"] == true).then(|| s.clone())
        })
        .await;
    assert_eq!(condition(&s["rollout"]["conditions"], "Loser").unwrap()["reason"], "ScaledToZero", "{s:#}");
}
