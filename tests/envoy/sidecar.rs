//! An Istio `Sidecar` narrowing and widening a real Envoy's config under continuous load: the proxy keeps
//! `alpha` (0 failed requests at every step) while `beta` leaves its config (no cluster in `/clusters`, no virtual
//! host) and comes back, over Delta and SotW. (`REGISTRY_ONLY` needs an intercepting proxy: the goldens
//! `sidecar-registry-only` cover its shapes, each accepted by `envoy --mode validate`.)

use crate::common;

use common::mesh::versions_yaml;
use common::{Backend, LoadLoop, get, load, start_envoy, until};
use sluice::server::{Options, Sluice};
use sluice::source;
use sluice::store::Store;
use std::time::Duration;

const BETA_CLUSTER: &str = "outbound|9080||beta.default.svc.cluster.local";
const ALPHA_CLUSTER: &str = "outbound|9080||alpha.default.svc.cluster.local";
/// How long each step runs under the load before the next change.
const HOLD: Duration = Duration::from_millis(800);

/// The namespace's Sidecar (no selector: it applies to the Envoy, node namespace `default`).
fn sidecar(hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default}}\nspec:\n  egress:\n  - hosts: [{}]\n",
        hosts.join(", ")
    )
}

async fn narrow_and_widen(sotw: bool) {
    let (alpha, beta) = (Backend::start("alpha").await, Backend::start("beta").await);
    let base = format!(
        "{}---\n{}",
        versions_yaml("alpha", &[("v1", alpha.port())]),
        versions_yaml("beta", &[("v1", beta.port())])
    );
    let store = Store::new();
    store.register_source(source::SOURCE);
    store.set_part(source::SOURCE, source::parse_str(&base, "base.yaml").expect("base config"));
    let sluice = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.expect("start");
    let node = if sotw { "sidecar-sotw" } else { "sidecar-delta" };
    let (envoy, listen) = start_envoy(sluice.xds_addr(), node, sotw).await;
    let serve = |extra: String| {
        let model = source::parse_str(&format!("{base}{extra}"), "mesh.yaml").unwrap_or_else(|e| panic!("{e}"));
        sluice.store().set_part(source::SOURCE, model);
    };
    let has_cluster = |name: &'static str, want: bool| {
        let envoy = &envoy;
        async move { (envoy.admin_get("/clusters").await.contains(&format!("{name}::")) == want).then_some(()) }
    };
    sluice.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the first config");
    assert_eq!(load(listen, "beta", 50, 4).await.of("beta"), 50, "beta is served before any Sidecar");

    let steady = LoadLoop::start(listen, "alpha", 4, 50);
    tokio::time::sleep(HOLD).await;
    for round in 0..2 {
        // Narrow: only alpha (by its FQDN, in the Sidecar's own namespace).
        serve(sidecar(&["./alpha.default.svc.cluster.local"]));
        sluice.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the narrowed config");
        until("beta's cluster leaves Envoy", Duration::from_secs(10), || has_cluster(BETA_CLUSTER, false)).await;
        has_cluster(ALPHA_CLUSTER, true).await.expect("alpha's cluster stays");
        let gone = load(listen, "beta", 20, 2).await;
        assert_eq!((gone.ok(), gone.non_2xx), (0, 20), "round {round}: beta has no virtual host any more: {gone:?}");
        tokio::time::sleep(HOLD).await;
        // Widen: the whole namespace again.
        serve(sidecar(&["./*"]));
        sluice.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the widened config");
        until("beta's cluster comes back", Duration::from_secs(10), || has_cluster(BETA_CLUSTER, true)).await;
        let routed = || async { get(listen, "beta", &[]).await.ok().filter(|(status, _)| *status == 200) };
        until("beta is routed again", Duration::from_secs(10), routed).await;
        let back = load(listen, "beta", 50, 4).await;
        assert_eq!(back.of("beta"), 50, "round {round}: beta is served again: {back:?}");
        tokio::time::sleep(HOLD).await;
    }
    let report = steady.stop().await;
    println!("alpha under the Sidecar changes ({}): {}", if sotw { "SotW" } else { "Delta" }, report.summary());
    assert_eq!((report.counts.non_2xx, report.counts.errors), (0, 0), "no request to alpha fails");
    assert!(report.counts.of("alpha") > 300, "the load ran: {}", report.summary());

    sluice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_narrows_and_widens_a_delta_proxy_under_load() {
    narrow_and_widen(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_narrows_and_widens_a_sotw_proxy_under_load() {
    narrow_and_widen(true).await;
}
