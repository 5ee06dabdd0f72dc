//! Proves the test helpers in `tests/common` before anything depends on them: backends, the load
//! client, the split statistics, the Python peers, and a real Envoy on a static config (no xDS).

use crate::common;

use common::{Backend, Envoy, Peer, assert_share, free_port, get, load, split_bound};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn split_bound_matches_the_normal_approximation() {
    let (lo, hi) = split_bound(2000, 0.2);
    assert!((lo - 0.1605).abs() < 1e-3 && (hi - 0.2395).abs() < 1e-3, "{lo} {hi}");
    assert_eq!(split_bound(10, 0.0), (0.0, 0.0));
    assert_eq!(split_bound(10, 1.0), (1.0, 1.0));
    let (lo, hi) = split_bound(10, 0.5);
    assert!(lo >= 0.0 && hi <= 1.0, "clamped: {lo} {hi}");
    // Wrong splits that a canary test must catch at 2000 requests fall outside.
    let (lo, hi) = split_bound(2000, 0.2);
    assert!(lo > 0.15 && hi < 0.25, "{lo} {hi}");
}

/// A correct 80/20 split, sampled 2000 times × 2000 requests, stays within the bound (it fails about 1 run in
/// 100,000); a 70/30 split never does.
#[test]
fn split_bound_passes_correct_splits_and_fails_wrong_ones() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let (n, p, runs) = (2000, 0.2, 2000);
    let (lo, hi) = split_bound(n, p);
    let failures = (0..runs)
        .filter(|_| {
            let hits = (0..n).filter(|_| rng.unit() < p).count();
            !(lo..=hi).contains(&(hits as f64 / n as f64))
        })
        .count();
    // Expected none of 2000; more than 2 would mean the bound is far too tight.
    assert!(failures <= 2, "{failures} of {runs} correct runs fell outside [{lo}, {hi}]");
    let passed_wrong = (0..200)
        .filter(|_| {
            let hits = (0..n).filter(|_| rng.unit() < 0.3).count();
            (lo..=hi).contains(&(hits as f64 / n as f64))
        })
        .count();
    assert_eq!(passed_wrong, 0, "a 30% split passed the 20% bound [{lo}, {hi}]");
}

struct XorShift(u64);
impl XorShift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[tokio::test]
async fn backend_answers_its_name_and_counts() {
    let backend = Backend::start("v1").await;
    let (status, body) = get(backend.addr(), "anything", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "v1"));
    let counts = load(backend.addr(), "anything", 300, 8).await;
    assert_eq!(counts.of("v1"), 300, "{counts:?}");
    assert_eq!((counts.errors, counts.non_2xx), (0, 0));
    assert_eq!(backend.count(), 301);

    backend.fail_percent(20);
    let counts = load(backend.addr(), "anything", 500, 8).await;
    assert_eq!((counts.of("v1"), counts.non_2xx, counts.errors), (400, 100, 0), "{counts:?}");
}

#[tokio::test]
async fn load_counts_connection_errors() {
    let (_socket, port) = common::refusing_port();
    let closed: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let counts = load(closed, "x", 5, 2).await;
    assert_eq!((counts.errors, counts.total()), (5, 5), "{counts:?}");
}

#[tokio::test]
async fn python_peers_answer() {
    let http = Peer::http_backend("v9", 0);
    let addr: SocketAddr = format!("127.0.0.1:{}", http.port()).parse().unwrap();
    let counts = load(addr, "reviews", 200, 4).await;
    assert_eq!((counts.of("v9"), counts.total()), (200, 200), "{counts:?}");

    let grpc = Peer::grpc_server("v7", 0);
    let out = common::peers::grpc_client(&["--direct", &format!("127.0.0.1:{}", grpc.port()), "-n", "20"]);
    assert_eq!(out["counts"], json!({ "v7": 20 }), "{out}");
    assert_eq!(out["errors"], 0);
}

/// Envoy on a static config: one listener, `reviews` split 80/20 between two backends, and
/// `end-user: jason` pinned to v2. Exercises every Envoy helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn envoy_routes_a_static_split() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let envoy = Envoy::start(&static_bootstrap(listen, &v1, &v2));
    envoy.wait_live(Duration::from_secs(20)).await;
    envoy.wait_for(Duration::from_secs(5), |dump| dump.to_string().contains("\"reviews\"")).await;

    let n = 2000;
    let counts = load(listen, "reviews", n, 16).await;
    assert_eq!((counts.total(), counts.errors, counts.non_2xx), (n, 0, 0), "{counts:?}");
    assert_share("v2 through Envoy", counts.of("v2"), n, 0.2);

    let jason = common::http::load_with(listen, "reviews", &[("end-user", "jason")], 50, 4).await;
    assert_eq!(jason.of("v2"), 50, "{jason:?}");

    assert_eq!(envoy.stat("cluster.v2.upstream_rq_total").await, Some(v2.count()));
    assert_eq!(envoy.stat("cluster.v1.upstream_rq_200").await, Some(v1.count()));
    assert_eq!(envoy.stat("cluster.v1.no_such_stat").await, None);
    assert!(envoy.admin_get("/clusters").await.contains(&v1.addr().to_string()));

    let pid = envoy.pid();
    drop(envoy);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "Envoy {pid} still runs after drop");
}

/// A bootstrap Envoy refuses fails `Envoy::start` at once, with Envoy's reason in the message.
#[test]
fn envoy_start_reports_a_rejected_bootstrap() {
    let bad = json!({ "static_resources": { "clusters": [{ "name": "x", "no_such_field": 1 }] } });
    let panic = std::panic::catch_unwind(|| Envoy::start(&bad)).err().expect("start must fail");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("exited") && message.contains("no_such_field"), "{message}");
}

fn static_bootstrap(listen: SocketAddr, v1: &Backend, v2: &Backend) -> Value {
    let cluster = |b: &Backend| {
        json!({
            "name": b.name(), "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": { "cluster_name": b.name(), "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": b.port() } } } }] }] },
        })
    };
    let routes = json!([
        { "match": { "prefix": "/", "headers": [{ "name": "end-user", "string_match": { "exact": "jason" } }] },
          "route": { "cluster": "v2" } },
        { "match": { "prefix": "/" },
          "route": { "weighted_clusters": { "clusters": [{ "name": "v1", "weight": 80 }, { "name": "v2", "weight": 20 }] } } },
    ]);
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "http",
        "route_config": { "name": "local", "virtual_hosts": [{ "name": "reviews", "domains": ["reviews", "reviews:*"], "routes": routes }] },
        "http_filters": [{ "name": "envoy.filters.http.router",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
    });
    json!({
        "node": { "id": "selftest", "cluster": "default" },
        "static_resources": {
            "listeners": [{
                "name": "http",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": listen.port() } },
                "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }] }],
            }],
            "clusters": [cluster(v1), cluster(v2)],
        },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
    })
}
