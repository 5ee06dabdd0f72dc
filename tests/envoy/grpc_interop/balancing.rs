//! ping_pong, round_robin, traffic_splitting and change_backend_service: where calls go, from a Service's
//! endpoints, a ReleasePolicy's weights and a VirtualService's destination.

use super::fixture::{self, Backends};
use crate::common::assert_share;
use crate::common::interop::failed;
use std::time::Duration;

/// ping_pong and round_robin: 4 backends of one Service, no policy. istiod's `LEAST_REQUEST` default is
/// `ROUND_ROBIN` for gRPC, so once every backend answered, 100 calls are 25 on each (±1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_and_round_robin() {
    let names = ["a", "b", "c", "d"];
    let backends = Backends::start(&names);
    let sluice = fixture::sluice(&backends.yaml("echo")).await;
    let client = fixture::client(&sluice, "rr", 100, &[]).await;

    let seen = fixture::until(&client, 100, Duration::from_secs(20), "every backend answers", |s| {
        names.iter().all(|n| s.rpcs_by_peer.contains_key(*n))
    })
    .await;
    assert_eq!(seen.num_failures, 0, "ping_pong: no call fails once configured: {seen:?}");
    let even = client.stats(100, 20).await;
    assert_eq!(even.num_failures, 0, "{even:?}");
    for n in names {
        let got = even.rpcs_by_peer.get(n).copied().unwrap_or(0);
        assert!((24..=26).contains(&got), "round_robin: {n} answered {got} of 100, want 25 ± 1: {even:?}");
    }
    sluice.shutdown().await;
}

/// traffic_splitting: first all calls on `a`; then a ReleasePolicy sends 80% to `b`, and 1,000 calls split
/// 20/80 (each share within the 99.999% bound of a fair draw, as every split test here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splitting_follows_a_release_policy() {
    let backends = Backends::start(&["a", "b"]);
    let policy = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: echo-b}\n\
                  spec: {service: echo, stable: a, canary: b, traffic: {canaryWeight: 8000}}\n";
    let stable_only = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: echo-b}\n\
                       spec: {service: echo, stable: a, canary: b, traffic: {canaryWeight: 0}}\n";
    let sluice = fixture::sluice(&format!("{}{stable_only}", backends.yaml("echo"))).await;
    let client = fixture::client(&sluice, "split", 100, &[]).await;

    fixture::until(&client, 50, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    let before = client.stats(1000, 30).await;
    assert_eq!(before.rpcs_by_peer.get("a").copied(), Some(1000), "at 0% every call is a's: {before:?}");

    fixture::apply(&sluice, "split", &format!("{}{policy}", backends.yaml("echo"))).await;
    fixture::until(&client, 50, Duration::from_secs(10), "b answers", |s| s.rpcs_by_peer.contains_key("b")).await;
    let split = client.stats(1000, 30).await;
    assert_eq!(split.num_failures, 0, "{split:?}");
    let b = split.rpcs_by_peer.get("b").copied().unwrap_or(0) as usize;
    let a = split.rpcs_by_peer.get("a").copied().unwrap_or(0) as usize;
    assert_eq!(a + b, 1000, "{split:?}");
    assert_share("b's share at 80%", b, 1000, 0.8);
    sluice.shutdown().await;
}

/// change_backend_service: a VirtualService for `echo` sends its calls to Service `echo-a`, then is edited to
/// `echo-b`; every call moves within 10 s, none failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_backend_service_moves_every_call() {
    let old = Backends::start(&["a1", "a2"]);
    let new = Backends::start(&["b1", "b2"]);
    let echo = Backends { servers: vec![] };
    let vs = |to: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo}}\nspec:\n  \
             hosts: [echo]\n  http: [{{route: [{{destination: {{host: {to}}}}}]}}]\n"
        )
    };
    let mesh =
        |to: &str| format!("{}---\n{}---\n{}{}", echo.yaml("echo"), old.yaml("echo-a"), new.yaml("echo-b"), vs(to));
    let sluice = fixture::sluice(&mesh("echo-a")).await;
    let client = fixture::client(&sluice, "change", 100, &[]).await;

    let first = fixture::until(&client, 100, Duration::from_secs(20), "both of echo-a answer", |s| {
        s.rpcs_by_peer.contains_key("a1") && s.rpcs_by_peer.contains_key("a2")
    })
    .await;
    assert_eq!(first.num_failures, 0, "{first:?}");

    let before = failed(&client.accumulated().await, "UNARY_CALL");
    fixture::set(&sluice, &mesh("echo-b")).await;
    let moved = fixture::until(&client, 100, Duration::from_secs(10), "all calls on echo-b", |s| {
        s.rpcs_by_peer.keys().all(|p| p.starts_with('b')) && s.rpcs_by_peer.len() == 2
    })
    .await;
    assert_eq!(moved.num_failures, 0, "{moved:?}");
    let acc = client.accumulated().await;
    assert_eq!(failed(&acc, "UNARY_CALL"), before, "no call failed during the change: {acc:?}");
    sluice.shutdown().await;
}

/// EDS localities: 1 backend in zone `z1`, 3 in zone `z2`. A gRPC client picks a locality by its weight, then a
/// backend in it; Sluice weighs each locality by its endpoints, so every backend gets a quarter of the calls
/// (with equal locality weights `a` would get half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localities_are_weighted_by_their_endpoints() {
    let names = ["a", "b", "c", "d"];
    let backends = Backends::start(&names);
    let zone = |name: &str| {
        let z = if name == "a" { "z1" } else { "z2" };
        format!("topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: {z}")
    };
    let sluice = fixture::sluice(&backends.yaml_labelled("echo", zone)).await;
    let client = fixture::client(&sluice, "zones", 100, &[]).await;
    fixture::until(&client, 100, Duration::from_secs(20), "every backend answers", |s| s.rpcs_by_peer.len() == 4).await;
    let n = 1000;
    let spread = client.stats(n as i32, 30).await;
    assert_eq!(spread.num_failures, 0, "{spread:?}");
    for name in names {
        let got = spread.rpcs_by_peer.get(name).copied().unwrap_or(0) as usize;
        assert_share(&format!("{name}'s share"), got, n, 0.25);
    }
    sluice.shutdown().await;
}
