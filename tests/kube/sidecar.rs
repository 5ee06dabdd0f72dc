//! An Istio `Sidecar` from the Kubernetes API emulator (`sidecars.networking.istio.io`) scopes a real Envoy: with
//! `egress.hosts: [./reviews...]` the proxy holds reviews' cluster and not ratings'; a merge patch widening it
//! to `./*` brings ratings back, and reviews answers throughout.

use crate::common;

use super::mesh::service_with_pods;
use common::kmock::{Kmock, create, obj, patch};
use common::{Backend, load, start_envoy, until};
use serde_json::{Value, json};
use sluice::server::{Options, Sluice};
use sluice::store::Store;
use std::time::Duration;
use tokio::sync::watch;

const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local::";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_from_the_cluster_scopes_envoy_and_follows_a_patch() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (reviews, ratings) = (Backend::start("reviews").await, Backend::start("ratings").await);
    service_with_pods(&client, "reviews", &[("v1", &reviews)]).await;
    service_with_pods(&client, "ratings", &[("v1", &ratings)]).await;
    let spec = json!({"spec": {"egress": [{"hosts": ["./reviews.default.svc.cluster.local"]}]}});
    create(&client, obj("networking.istio.io/v1", "Sidecar", "default", json!({}), spec)).await;

    let (_stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    let _watching = sluice::source::kube::start(client.clone(), &[], store.clone(), stop_rx);
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    assert_eq!(sluice.store().model().sidecars.len(), 1, "the Sidecar is in the model");
    let (envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
    let clusters = envoy.admin_get("/clusters").await;
    assert!(clusters.contains("outbound|9080||reviews.default.svc.cluster.local::"), "{clusters}");
    assert!(!clusters.contains(RATINGS), "the Sidecar hides ratings: {clusters}");
    assert_eq!(load(listen, "reviews", 20, 2).await.of("reviews"), 20);

    patch(&client, "networking.istio.io/v1", "Sidecar", "default", json!({"spec": {"egress": [{"hosts": ["./*"]}]}}))
        .await;
    until("ratings' cluster reaches Envoy", Duration::from_secs(20), || {
        let envoy = &envoy;
        async move { envoy.admin_get("/clusters").await.contains(RATINGS).then_some(()) }
    })
    .await;
    let routed = || async { (load(listen, "ratings", 1, 1).await.of("ratings") == 1).then_some(()) };
    until("ratings is routed", Duration::from_secs(10), routed).await;
    assert_eq!(load(listen, "reviews", 20, 2).await.of("reviews"), 20);
    sluice.shutdown().await;
}
