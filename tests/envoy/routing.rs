//! Real Envoy 1.40, bootstrapped by `sluice bootstrap --listen`, takes all its config from Sluice (file source,
//! hot reload) and routes to real HTTP backends by version. Run for Delta and for SotW.

use crate::common;

use common::http::{Counts, client, get_with, load_with};
use common::{Backend, Envoy, assert_share, load, reviews_yaml, start_envoy};
use sluice::server::{Options, Sluice};
use sluice::source;
use sluice::store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The config file: reviews with v1 and v3 workloads, a policy at `weight`, and a header rule for jason.
fn config(v1: u16, v3: u16, extra: Option<u16>, weight: u32) -> String {
    let mut text = reviews_yaml(v1, v3);
    text.push_str(&format!(
        r#"---
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata: {{name: reviews-v3}}
spec:
  service: reviews
  stable: v1
  canary: v3
  traffic:
    canaryWeight: {weight}
    rules:
    - name: jason
      to: canary
      match:
        headers: [{{name: end-user, exact: jason}}]
"#
    ));
    if let Some(port) = extra {
        text.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {{name: reviews-v1b, labels: {{app: reviews, version: v1}}}}\nspec: {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
        ));
    }
    text
}

struct Mesh {
    sluice: Sluice,
    envoy: Envoy,
    listen: SocketAddr,
    file: PathBuf,
    _dir: tempfile::TempDir,
    stop_watch: tokio::sync::watch::Sender<bool>,
    v1: Backend,
    v3: Backend,
}

async fn mesh(sotw: bool) -> Mesh {
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reviews.yaml");
    std::fs::write(&file, config(v1.port(), v3.port(), None, 2000)).unwrap();
    let store = Store::new();
    store.register_source(source::SOURCE);
    store.set_part(source::SOURCE, source::load_paths(std::slice::from_ref(&file)).expect("config loads"));
    let (stop_watch, mut stop) = tokio::sync::watch::channel(false);
    tokio::spawn(source::watch(vec![file.clone()], store.clone(), Duration::from_millis(100), async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    let sluice = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.expect("start");
    let (envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", sotw).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
    Mesh { sluice, envoy, listen, file, _dir: dir, stop_watch, v1, v3 }
}

/// The file's policy weight split, the header rule, a backend added by an edit, ten edits under load.
async fn scenario(sotw: bool) {
    let m = mesh(sotw).await;

    let split = load(m.listen, "reviews", 2000, 8).await;
    assert_eq!((split.errors, split.non_2xx), (0, 0), "{split:?}");
    let v3_share = split.of("v3") as f64 / 2000.0;
    assert!((0.17..=0.23).contains(&v3_share), "canaryWeight 2000 sends 17-23% to v3, got {split:?}");
    assert_share("v3 at 20%", split.of("v3"), 2000, 0.2);
    assert!(m.v1.count() > 0 && m.v3.count() > 0);

    let jason = load_with(m.listen, "reviews", &[("end-user", "jason")], 200, 4).await;
    assert_eq!(jason.of("v3"), 200, "every request of jason goes to v3: {jason:?}");

    // Adding a backend by editing the file gives it traffic within 2 s.
    let v1b = Backend::start("v1b").await;
    std::fs::write(&m.file, config(m.v1.port(), m.v3.port(), Some(v1b.port()), 2000)).unwrap();
    let edited = Instant::now();
    let http = client();
    while v1b.count() == 0 {
        assert!(edited.elapsed() < Duration::from_secs(2), "the new backend got no traffic within 2 s");
        let _ = get_with(&http, m.listen, "reviews", "/", &[]).await;
    }
    println!("new backend got traffic {:?} after the edit", edited.elapsed());

    // Ten edits of the file under a continuous request loop: not one request fails.
    let running = Arc::new(AtomicBool::new(true));
    let loops: Vec<_> = (0..4).map(|_| tokio::spawn(request_loop(m.listen, running.clone()))).collect();
    for (i, weight) in [0, 1000, 5000, 10000, 2500, 0, 8000, 10000, 3000, 2000].into_iter().enumerate() {
        let extra = (i % 2 == 0).then_some(v1b.port());
        std::fs::write(&m.file, config(m.v1.port(), m.v3.port(), extra, weight)).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    running.store(false, Ordering::Relaxed);
    let mut total = Counts::default();
    let mut first_failure = None;
    for l in loops {
        let (c, failure) = l.await.unwrap();
        first_failure = first_failure.or(failure);
        total.errors += c.errors;
        total.non_2xx += c.non_2xx;
        for (k, v) in c.by_body {
            *total.by_body.entry(k).or_default() += v;
        }
    }
    println!("under edits: {total:?}");
    assert_eq!(
        (total.errors, total.non_2xx),
        (0, 0),
        "no request fails while the file is edited: {total:?}; first failure: {first_failure:?}; envoy log: {}",
        m.envoy.log_tail(20)
    );
    assert!(total.ok() > 200, "the loop ran: {total:?}");
    assert!(total.of("v3") > 0 && total.of("v1") > 0);
    // The shape those edits went out in: on Delta each virtual host is a VHDS resource (a weight edit sends only
    // reviews'), on SotW the route configuration is whole.
    let dump: serde_json::Value =
        serde_json::from_str(&m.envoy.admin_get("/config_dump?resource=dynamic_route_configs").await).unwrap();
    let route_config = &dump["configs"][0]["route_config"];
    let vhosts: Vec<&str> =
        route_config["virtual_hosts"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    if sotw {
        assert!(route_config.get("vhds").is_none(), "SotW: no VHDS: {route_config}");
        assert!(vhosts.contains(&"reviews.default.svc.cluster.local:9080"), "{vhosts:?}");
    } else {
        assert_eq!(
            route_config["vhds"]["config_source"]["ads"],
            serde_json::json!({}),
            "Delta: VHDS over ADS: {route_config}"
        );
        assert!(vhosts.contains(&"sluice-listen/reviews.default.svc.cluster.local:9080"), "{vhosts:?}");
    }

    // A bad edit is refused; the last good config (weight 2000, the last edit) keeps serving.
    std::fs::write(&m.file, config(m.v1.port(), m.v3.port(), None, 20_000)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = load(m.listen, "reviews", 1000, 8).await;
    assert_eq!((after.errors, after.non_2xx), (0, 0), "{after:?}");
    assert_share("v3 still at 20% after a refused edit", after.of("v3"), 1000, 0.2);

    let _ = m.stop_watch.send(true);
    drop(m.envoy);
    m.sluice.shutdown().await;
}

async fn request_loop(addr: SocketAddr, running: Arc<AtomicBool>) -> (Counts, Option<String>) {
    let http = client();
    let mut counts = Counts::default();
    let mut first_failure = None;
    while running.load(Ordering::Relaxed) {
        match get_with(&http, addr, "reviews", "/", &[]).await {
            Ok((status, body)) if (200..300).contains(&status) => *counts.by_body.entry(body).or_default() += 1,
            Ok((status, body)) => {
                counts.non_2xx += 1;
                first_failure.get_or_insert(format!("{status} {body:?}"));
            }
            Err(e) => {
                counts.errors += 1;
                first_failure.get_or_insert(format!("{e:#}"));
            }
        }
    }
    (counts, first_failure)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_routes_by_version_and_survives_edits() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_routes_by_version_and_survives_edits() {
    scenario(true).await;
}
