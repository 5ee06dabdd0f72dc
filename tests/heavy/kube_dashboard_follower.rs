//! The dashboard's buttons on a page served by a replica that does not lead: two real `sluice serve --kube`
//! replicas (kmock API emulator, a shared `--api-token-file`), the page loaded from the follower in Debian's
//! headless Chromium (`tests/browser/follower.mjs`, playwright-core): a weight and "take over all traffic" are
//! answered 200 (forwarded to the leader), a refusal by the leader is shown, and the ReleasePolicy status holds what
//! the page did. Needs `/usr/bin/chromium` and `npm ci` in tests/browser (both from scripts/setup).

use crate::common;

use common::kmock::{Kmock, api, reviews_release};
use common::{repo, until};
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "follower-dashboard-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_served_by_a_follower_changes_the_release_through_the_leader() {
    let _serial = crate::serial().await;
    common::browser::require_browser();
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let spec = json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": 2000}});
    let policies = reviews_release(&client, spec).await;
    let flags = ["--api-token-file", token.to_str().unwrap()];
    let a = kmock.replica_with("replica-a", 5, dir.path(), &flags).await;
    until("replica-a leads and wrote the status", Duration::from_secs(10), || async {
        let rp = policies.get("reviews").await.ok()?;
        rp.data["status"]["stepStartedAt"].is_string().then_some(())
    })
    .await;
    let b = kmock.replica_with("replica-b", 5, dir.path(), &flags).await;
    let lease = api(&client, "coordination.k8s.io/v1", "Lease").get("sluice").await.unwrap();
    assert_eq!(lease.data["spec"]["holderIdentity"], "replica-a", "the page is served by the follower");

    let mut node = tokio::process::Command::new("node");
    node.arg(repo().join("tests/browser/follower.mjs"))
        .env("DASHBOARD_URL", format!("http://{}/dashboard", b.admin))
        .env("TOKEN", TOKEN)
        .current_dir(repo().join("tests/browser"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), node.output())
        .await
        .expect("the browser script finishes within 120 s")
        .expect("running node (nodejs is installed by scripts/setup)");
    println!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the follower's dashboard checks failed (output above)");

    // The leader applied and stored what the page sent to the follower.
    let status = policies.get("reviews").await.unwrap().data["status"].clone();
    assert_eq!(
        (status["phase"].as_str(), status["weights"]["v3"].as_u64()),
        (Some("Promoted"), Some(10000)),
        "{status}"
    );
    drop((a, b));
}
