//! circuit_breaking, ring_hash and outlier_detection: a DestinationRule's `connectionPool`, `consistentHash` and
//! `outlierDetection`, as a gRPC client applies them (gRFCs A32, A42, A50).

use super::fixture::{self, Backends, UNARY};
use crate::common::interop::{RpcType::EmptyCall, RpcType::UnaryCall, in_flight};
use std::time::{Duration, Instant};

/// circuit_breaking: UnaryCall to subset `one` (`http2MaxRequests: 50`), EmptyCall to subset `two` (100), every
/// call `keep-open`: calls in flight settle at 50 and 100 (−5%/+1%), and at 80 once `one`'s limit changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaking_caps_calls_in_flight() {
    let backends = Backends::start(&["one", "two"]);
    let mesh = |one: u32| {
        let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  \
                  hosts: [echo]\n  http:\n  - match: [{uri: {exact: /grpc.testing.TestService/UnaryCall}}]\n    \
                  route: [{destination: {host: echo, subset: one}}]\n  \
                  - route: [{destination: {host: echo, subset: two}}]\n";
        let limit = |n: u32| format!("{{connectionPool: {{http: {{http2MaxRequests: {n}}}}}}}");
        let dr = format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo}}\nspec:\n  \
             host: echo\n  subsets:\n  - {{name: one, labels: {{version: one}}, trafficPolicy: {}}}\n  \
             - {{name: two, labels: {{version: two}}, trafficPolicy: {}}}\n",
            limit(one),
            limit(100)
        );
        format!("{}{vs}{dr}", backends.yaml("echo"))
    };
    let sluice = fixture::sluice(&mesh(50)).await;
    let client = fixture::client(&sluice, "breaker", 100, &["--rpc", "EmptyCall,UnaryCall"]).await;
    fixture::until(&client, 20, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    let open = [(UnaryCall, "rpc-behavior", "keep-open"), (EmptyCall, "rpc-behavior", "keep-open")];
    client.configure(&[EmptyCall, UnaryCall], &open, 0).await;

    settles(&client, "UNARY_CALL", 50).await;
    settles(&client, "EMPTY_CALL", 100).await;
    fixture::apply(&sluice, "breaker", &mesh(80)).await;
    settles(&client, "UNARY_CALL", 80).await;
    settles(&client, "EMPTY_CALL", 100).await;
    sluice.shutdown().await;
}

/// Waits until `method`'s calls in flight stay within −5%/+1% of `max` for 2 s (the limit holds while calls
/// keep coming at 100 a second), failing after 20 s.
async fn settles(client: &crate::common::interop::Client, method: &str, max: i64) {
    let (lo, hi) = (max - max / 20, max + max / 100);
    let start = Instant::now();
    let mut steady_since: Option<Instant> = None;
    loop {
        let n = in_flight(&client.accumulated().await, method);
        if (lo..=hi).contains(&n) {
            let since = *steady_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(2) {
                return;
            }
        } else {
            steady_since = None;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{method}: {n} in flight, want {lo}..={hi}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ring_hash: `consistentHash.httpHeaderName: x-user` over 4 backends. Calls with one value all reach one
/// backend; 8 values reach more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_backend() {
    let names = ["a", "b", "c", "d"];
    let backends = Backends::start(&names);
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n  \
              host: echo\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n";
    let sluice = fixture::sluice(&format!("{}{dr}", backends.yaml("echo"))).await;
    let client = fixture::client(&sluice, "ring", 100, &[]).await;
    fixture::until(&client, 20, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;

    let mut homes = std::collections::BTreeSet::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
        client.configure(&[UnaryCall], &[(UnaryCall, "x-user", user)], 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await; // calls started before the change are answered
        let s = client.stats(50, 10).await;
        let peers = fixture::by_peer(&s, UNARY);
        assert_eq!(peers.len(), 1, "x-user: {user} reaches one backend: {s:?}");
        assert_eq!(peers[0].1, 50, "{s:?}");
        let again = fixture::by_peer(&client.stats(50, 10).await, UNARY);
        assert_eq!(again, peers, "x-user: {user} stays on {}", peers[0].0);
        homes.insert(peers[0].0.clone());
    }
    assert!(homes.len() >= 2, "8 keys spread over more than one backend: {homes:?}");
    sluice.shutdown().await;
}

/// outlier_detection: backend `a` answers errors for 10 s. `outlierDetection` (5 consecutive errors, 1 s
/// interval) ejects it for 12 s: all calls reach the others and succeed. Once it answers well again and its
/// ejection has passed, it gets calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_backend() {
    let names = ["a", "b", "c", "d"];
    let backends = Backends::start(&names);
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: echo}\nspec:\n  \
              host: echo\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: \
              {consecutive5xxErrors: 5, interval: 1s, baseEjectionTime: 12s, maxEjectionPercent: 50}\n";
    let sluice = fixture::sluice(&format!("{}{dr}", backends.yaml("echo"))).await;
    let client = fixture::client(&sluice, "outlier", 100, &[]).await;
    fixture::until(&client, 100, Duration::from_secs(20), "every backend answers", |s| {
        s.num_failures == 0 && s.rpcs_by_peer.len() == 4
    })
    .await;

    let failing = Instant::now();
    client.configure(&[UnaryCall], &[(UnaryCall, "rpc-behavior", "hostname=a error-code-2")], 0).await;
    let ejected = fixture::until(&client, 100, Duration::from_secs(8), "a ejected", |s| {
        s.num_failures == 0 && !s.rpcs_by_peer.contains_key("a")
    })
    .await;
    assert_eq!(ejected.rpcs_by_peer.values().sum::<i32>(), 100, "all OK on b, c, d: {ejected:?}");
    // Still failing, still ejected: every window until the 10 s are over is clean.
    while failing.elapsed() < Duration::from_secs(10) {
        let s = client.stats(100, 10).await;
        assert!(s.num_failures == 0 && !s.rpcs_by_peer.contains_key("a"), "a stays ejected: {s:?}");
    }

    client.configure(&[UnaryCall], &[], 0).await;
    let back =
        fixture::until(&client, 100, Duration::from_secs(20), "a returns", |s| s.rpcs_by_peer.contains_key("a")).await;
    assert_eq!(back.num_failures, 0, "{back:?}");
    sluice.shutdown().await;
}
