//! The dashboard in Debian's headless Chromium (driven by `tests/browser/dashboard.mjs` with playwright-core),
//! against Sluice, a real Envoy 1.40 and two backends under steady load: the page loads without console errors,
//! the charts move while traffic flows, "take over all traffic" (after its confirm step) moves the traffic, and an
//! API refusal is shown. Needs `/usr/bin/chromium` and `npm ci` in tests/browser (both from scripts/setup).
//!
//! `SLUICE_DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test --test heavy dashboard_browser::` refreshes the
//! README's screenshot.

use crate::common;

use common::{Backend, LoadLoop, load, repo, reviews_yaml, start_envoy};
use sluice::model::{ObjectKey, Phase};
use sluice::server::{Options, Sluice};
use sluice::source;
use std::time::{Duration, Instant};

const NODE: &str = "envoy-dashboard";
const POLICY: &str = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\n\
                      spec: {service: reviews, stable: v1, canary: v3, traffic: {canaryWeight: 2000}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_live_traffic_and_takes_over_all_traffic() {
    let _serial = crate::serial().await;
    common::browser::require_browser();
    let script = repo().join("tests/browser/dashboard.mjs");
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    let text = reviews_yaml(v1.port(), v3.port()) + POLICY;
    sluice.store().set_model(source::parse_str(&text, "reviews.yaml").expect("config parses"));
    let (_envoy, listen) = start_envoy(sluice.xds_addr(), NODE, false).await;
    sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
    let traffic = LoadLoop::start(listen, "reviews", 2, 40);

    let admin = sluice.admin_addr().expect("admin port");
    let mut node = tokio::process::Command::new("node");
    node.arg(&script)
        .env("DASHBOARD_URL", format!("http://{admin}/dashboard"))
        .env("CANARY", "v3")
        .current_dir(repo().join("tests/browser"))
        .kill_on_drop(true);
    let mut shift = None;
    if let Ok(path) = std::env::var("SLUICE_DASHBOARD_SCREENSHOT") {
        // For the picture: 30 s of history with the operator moving v3 from 20% to 50% half way.
        node.env("SCREENSHOT", repo().join(path)).env("SCREENSHOT_WAIT_MS", "30000");
        let releases = sluice.releases().clone();
        shift = Some(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(17)).await;
            releases.set_weight(&ObjectKey::new("default", "reviews-v3"), 5000).expect("weight 50%");
        }));
    }
    let run = tokio::time::timeout(Duration::from_secs(120), node.output()).await;
    let out = run
        .expect("the browser script finishes within 120 s")
        .expect("running node (nodejs is installed by scripts/setup)");
    println!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the dashboard checks failed (output above)");
    if let Some(shift) = shift {
        shift.await.expect("weight shift");
    }
    println!("load: {}", traffic.stop().await.summary());

    // The click reached the mesh: once every proxy holds it, the backends see the canary take all traffic.
    let key = ObjectKey::new("default", "reviews-v3");
    let started = Instant::now();
    loop {
        let s = sluice.releases().get(&key).expect("release").status;
        if s.phase == Phase::Promoted && s.proxies.total == 1 && s.proxies.acked == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "promote not applied: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (c1, c3) = (v1.count(), v3.count());
    let batch = load(listen, "reviews", 400, 4).await;
    let (d1, d3) = (v1.count() - c1, v3.count() - c3);
    println!("after the click: {batch:?}; backends v1 +{d1}, v3 +{d3}");
    assert_eq!((d1, d3), (0, 400), "v3 takes all traffic");
}
