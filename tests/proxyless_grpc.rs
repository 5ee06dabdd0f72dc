//! A proxyless gRPC client (Python grpcio's `xds:///` resolver) takes its config from Sluice: API listener,
//! routes, clusters and endpoints, and its calls follow the release weights.

mod common;

use common::{Peer, assert_share, peers::grpc_client};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::collections::BTreeMap;
use std::time::Duration;

fn echo_model(v1: u16, v3: u16, canary_weight: u32) -> Model {
    let mut m = Model::default();
    let port = ServicePort {
        name: "grpc".into(),
        port: 9090,
        target_port: TargetPort::Number(9090),
        app_protocol: Some("grpc".into()),
    };
    let key = ObjectKey::new("default", "echo");
    m.services.insert(
        key.clone(),
        Service { name: "echo".into(), namespace: "default".into(), ports: vec![port], selector: BTreeMap::new() },
    );
    let ep = |version: &str, p: u16| Endpoint {
        name: format!("echo-{version}"),
        address: "127.0.0.1".into(),
        ports: BTreeMap::from([(9090, p)]),
        labels: BTreeMap::from([("app".into(), "echo".into()), ("version".into(), version.into())]),
        ready: true,
        terminating: false,
    };
    m.endpoints.insert(key, vec![ep("v1", v1), ep("v3", v3)]);
    let spec = ReleasePolicySpec {
        service: "echo".into(),
        stable: "v1".into(),
        canary: "v3".into(),
        traffic: Traffic { canary_weight, ..Default::default() },
        ..Default::default()
    };
    let policy = ReleasePolicy { name: "echo-v3".into(), namespace: "default".into(), spec, state: Default::default() };
    m.policies.insert(ObjectKey::new("default", "echo-v3"), policy);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyless_grpc_calls_follow_the_weights() {
    let v1 = Peer::grpc_server("v1", 0);
    let v3 = Peer::grpc_server("v3", 0);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    sluice.store().set_model(echo_model(v1.port(), v3.port(), 3000));
    sluice.wait_published(Duration::from_secs(5)).await.expect("published");

    let xds = sluice.xds_addr().to_string();
    let n = 1000;
    let out = tokio::task::spawn_blocking(move || {
        grpc_client(&["--xds", &xds, "--target", "echo.default.svc.cluster.local:9090", "-n", &n.to_string()])
    })
    .await
    .expect("client ran");
    assert_eq!(out["errors"], 0, "every call succeeds: {out}");
    let count = |v: &str| out["counts"][v].as_u64().unwrap_or(0) as usize;
    assert_eq!(count("v1") + count("v3"), n, "{out}");
    assert_share("proxyless v3 share at 30%", count("v3"), n, 0.3);

    sluice.shutdown().await;
}
