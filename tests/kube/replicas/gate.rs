//! The finalize gate counts every replica's proxies: with the Envoy on a follower frozen (SIGSTOP, by PID), a
//! finalize with `loser: ScaleToZero` keeps the stable Deployment scaled up while the leader's REST view and the
//! ReleasePolicy status name the missing proxy; after SIGCONT and that Envoy's ACK, the stable goes to zero. While
//! nothing changes, the status is not rewritten.

use super::{Mesh, condition, signal, until, view};
use serde_json::{Value, json};
use sluice::source::kube::DEPLOY_TICK;
use std::time::{Duration, Instant};

const LEASE_SECS: u64 = 3;

/// `status.proxies` shows 2 of 3 holding, and `pending` names envoy-b on replica-b.
fn waiting_for_envoy_b(s: &Value) -> bool {
    let p = &s["proxies"];
    let pending = p["pending"].as_array().is_some_and(|p| p.iter().any(|p| p == "replica-b/envoy-b"));
    p["acked"] == 2 && p["total"] == 3 && pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finalize_waits_for_a_frozen_envoy_on_a_follower() {
    let _serial = super::serial().await;
    let mesh =
        Mesh::start(3, LEASE_SECS, json!({"traffic": {"canaryWeight": 5000}, "finalize": {"loser": "ScaleToZero"}}))
            .await;
    // Steady, the leader does not write the status again: the replicas' report ages, which grow every second,
    // stay out of it.
    let statuses = || mesh.log(0).matches("ReleasePolicy status written").count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = statuses();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rewritten = statuses() - written;
    assert!(rewritten <= 1, "a steady release's status was written {rewritten} times in 4 s");
    mesh.act("Promote", 2).await;
    mesh.until_status("promoted, every proxy holding it", |s| {
        (s["phase"] == "Promoted" && s["proxies"]["acked"] == 3 && s["proxies"]["total"] == 3).then_some(())
    })
    .await;

    // Freeze the follower's Envoy, then finalize: the stable must wait for it.
    let frozen = &mesh.envoys[1].0;
    signal(frozen.pid(), "-STOP");
    mesh.act("Finalize", 3).await;
    let s = mesh
        .until_status("finalized, the loser waiting for envoy-b", |s| {
            let waiting =
                condition(&s["rollout"]["conditions"], "Loser").is_some_and(|c| c["reason"] == "WaitingForProxies");
            (s["phase"] == "Finalized" && waiting && waiting_for_envoy_b(s)).then(|| s.clone())
        })
        .await;
    println!("ReleasePolicy status.proxies while envoy-b is frozen: {:#}", s["proxies"]);
    assert_eq!(condition(&s["conditions"], "ReplicasReporting").unwrap()["status"], "True", "{s:#}");
    assert_eq!(condition(&s["conditions"], "TrafficApplied").map(|c| &c["status"]), Some(&json!("False")), "{s:#}");
    let rest = view(mesh.leader().admin).await;
    assert!(waiting_for_envoy_b(&rest["status"]), "the leader's REST view: {:#}", rest["status"]["proxies"]);
    let follower = view(mesh.replicas[2].admin).await;
    assert!(waiting_for_envoy_b(&follower["status"]), "replica-c's REST view: {:#}", follower["status"]["proxies"]);
    // Several Deployment ticks and report heartbeats later, the stable is still up.
    tokio::time::sleep(3 * DEPLOY_TICK + Duration::from_secs(1)).await;
    assert_eq!(mesh.stable_replicas().await, 2, "scaled to zero while envoy-b (on a follower) was frozen");

    // Envoy resumes and ACKs the config without v1: only then is the stable scaled to zero.
    signal(frozen.pid(), "-CONT");
    let resumed = Instant::now();
    until("stable scaled to zero", async || (mesh.stable_replicas().await == 0).then_some(())).await;
    println!("stable scaled to zero {:?} after envoy-b resumed (deploy tick {DEPLOY_TICK:?})", resumed.elapsed());
    let dump = frozen.admin_get("/config_dump").await;
    assert!(!dump.contains("outbound|9080|v1|reviews"), "envoy-b still holds v1 when the stable was scaled down");
    let s = mesh
        .until_status("loser done, every proxy holding it", |s| {
            (s["rollout"]["loser"]["done"] == true && s["proxies"]["acked"] == 3).then(|| s.clone())
        })
        .await;
    assert_eq!(condition(&s["rollout"]["conditions"], "Loser").unwrap()["reason"], "ScaledToZero", "{s:#}");
    assert!(s["proxies"].get("pending").is_none(), "{:#}", s["proxies"]);
}
