//! A mesh larger than `--max-names-per-request` (20,000): a real Delta Envoy names every one of its 20,100 EDS
//! clusters in one request and in its subscription. Names of resources Sluice serves it never count against the
//! limit, so it gets and ACKs its config on one stream (never refused, never reconnecting), and after the mesh
//! shrinks back it keeps getting updates.

use crate::common;

use common::{Backend, Envoy, load};
use sluice::bootstrap::{BootstrapArgs, render};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::time::Duration;

const SERVICES: usize = 20_100;

/// `reviews` (HTTP, on `backend`) and `n` TCP services (clusters and assignments, no routes), one endpoint each.
fn mesh(n: usize, backend: u16) -> Model {
    let mut m = Model::default();
    let reviews = m.insert_service(Service::http("default", "reviews", 9080));
    m.push_endpoint(&reviews, Endpoint::ready("reviews-1", "127.0.0.1", 9080, backend).with_label("version", "v1"));
    for i in 0..n {
        let mut svc = Service::http("default", &format!("db-{i:05}"), 5432);
        svc.ports[0].app_protocol = Some("tcp".into());
        let key = m.insert_service(svc);
        m.push_endpoint(&key, Endpoint::ready(&format!("db-{i:05}-0"), "127.0.0.1", 5432, 9));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_envoy_takes_a_mesh_past_the_names_limit_and_keeps_getting_updates() {
    let _serial = crate::serial().await;
    let backend = Backend::start("reviews-v1").await;
    let sluice = Sluice::start(Options::local()).await.expect("start");
    assert!(sluice::xds::limits::Limits::default().max_names_per_request < SERVICES + 1);
    sluice.store().set_model(mesh(SERVICES, backend.port()));
    let args = BootstrapArgs {
        node_id: "envoy-large".into(),
        xds: sluice.xds_addr().to_string().parse().expect("xds"),
        listen: Some("127.0.0.1:0".parse().expect("listen")),
        admin_port: 0,
        ..Default::default()
    };
    let envoy = Envoy::start(&render(&args));
    envoy.wait_live(Duration::from_secs(120)).await;
    sluice.wait_acked("envoy-large", Duration::from_secs(120)).await.expect("Envoy ACKs 20,101 clusters");
    let stream = sluice.registry().get("envoy-large")[0].stream;
    let clusters = envoy.stat("cluster_manager.active_clusters").await.unwrap_or(0);
    assert!(clusters > SERVICES as u64, "Envoy holds every cluster: {clusters}");
    let listen = envoy.listener_addr(Duration::from_secs(10)).await;
    assert_eq!(load(listen, "reviews", 50, 4).await.of("reviews-v1"), 50);

    // The mesh shrinks back; updates keep flowing on the same stream.
    let other = Backend::start("reviews-v2").await;
    sluice.store().set_model(mesh(100, other.port()));
    sluice.wait_acked("envoy-large", Duration::from_secs(60)).await.expect("the smaller mesh is ACKed");
    assert_eq!(load(listen, "reviews", 50, 4).await.of("reviews-v2"), 50, "the update reached Envoy");
    let status = &sluice.registry().get("envoy-large")[0];
    assert_eq!(status.stream, stream, "one stream throughout: no request was refused, nothing reconnected");
    println!("large mesh: {clusters} clusters held; stream {stream} kept throughout");
    sluice.shutdown().await;
}
