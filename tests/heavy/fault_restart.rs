//! Fault: the real `sluice` binary is SIGKILLed under load and restarted on the same ports and config. Two Envoys
//! (Delta and SotW ADS) keep serving their last config while it is down (zero failed requests), reconnect, and
//! converge on a config change made after the restart.
//!
//! ```text
//!  LoadLoop ×2 ──▶ Envoy (Delta) ─┐                 ┌─▶ Backend v1
//!                  Envoy (SotW) ──┴─ ADS ─▶ sluice ─┘   Backend v3   (sluice: child process, kill -9, restart)
//! ```

use crate::common;

use common::{Backend, LoadLoop, SluiceChild, load, reviews_yaml, start_envoy};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// reviews v1 and v3; with `canary` = Some(w), a policy sending w basis points to v3.
fn config(v1: u16, v3: u16, canary: Option<u32>) -> String {
    let policy = canary.map(|w| {
        format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {{name: reviews-v3}}\n\
             spec: {{service: reviews, stable: v1, canary: v3, traffic: {{canaryWeight: {w}}}}}\n"
        )
    });
    reviews_yaml(v1, v3) + &policy.unwrap_or_default()
}

/// Waits until every request through `listen` reaches v3 only.
async fn wait_all_v3(listen: SocketAddr, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let probe = load(listen, "reviews", 50, 4).await;
        if probe.of("v3") == 50 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: not all on v3 after 15 s: {probe:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_killed_under_load_loses_no_request_and_both_envoys_reconverge() {
    let _serial = crate::serial().await;
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, config(v1.port(), v3.port(), Some(0))).expect("write config");
    let [xds, admin] = common::free_addrs();
    let log = |n: u32| dir.path().join(format!("sluice-{n}.log"));

    let server = SluiceChild::start(&file, xds, admin, log(1), &[]).await;
    let (delta, delta_listen) = start_envoy(xds, "envoy-delta", false).await;
    let (sotw, sotw_listen) = start_envoy(xds, "envoy-sotw", true).await;
    for listen in [delta_listen, sotw_listen] {
        let batch = load(listen, "reviews", 200, 4).await;
        assert_eq!((batch.of("v1"), batch.errors, batch.non_2xx), (200, 0, 0), "all on v1 first: {batch:?}");
    }

    let loads = [LoadLoop::start(delta_listen, "reviews", 2, 100), LoadLoop::start(sotw_listen, "reviews", 2, 100)];
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("kill -9 sluice (pid {})", server.pid());
    server.kill9();
    for envoy in [&delta, &sotw] {
        envoy.wait_connected(0, Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // Envoy serves alone for a while, on its last config

    let restarted = Instant::now();
    let server = SluiceChild::start(&file, xds, admin, log(2), &[]).await;
    for (name, envoy) in [("delta", &delta), ("sotw", &sotw)] {
        let took = envoy.wait_connected(1, Duration::from_secs(20)).await;
        println!("Envoy {name} reconnected {took:?} after sluice was ready ({:?} after start)", restarted.elapsed());
    }
    // Converged: a change made after the restart reaches both Envoys.
    std::fs::write(&file, config(v1.port(), v3.port(), Some(10_000))).expect("edit config");
    for (name, listen) in [("delta", delta_listen), ("sotw", sotw_listen)] {
        let took = wait_all_v3(listen, name).await;
        println!("Envoy {name} routes 100% to v3 {took:?} after the edit");
    }

    for (name, running) in ["delta", "sotw"].into_iter().zip(loads) {
        let report = running.stop().await;
        println!("load through Envoy {name} across the kill and restart: {}", report.summary());
        assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "{name}: {}", report.summary());
        assert!(report.counts.total() > 500, "{name}: the load barely ran: {}", report.summary());
    }
    drop((delta, sotw, server));
}
