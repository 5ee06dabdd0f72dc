//! A proxyless gRPC client (Python grpcio's `xds:///` resolver) takes its config from Sluice: API listener,
//! routes, clusters and endpoints, and its calls follow the release weights.

use crate::common;

use common::{Peer, assert_share, peers::grpc_client};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::time::Duration;

fn echo_model(v1: u16, v3: u16, canary_weight: u32) -> Model {
    let mut m = Model::default();
    // Another Service on another port: the client dials echo's port only, so it never asks for 9080's routes.
    m.insert_service(Service::http("default", "reviews", 9080));
    let svc = m.insert_service(Service::grpc("default", "echo", 9090));
    for (version, port) in [("v1", v1), ("v3", v3)] {
        m.push_endpoint(
            &svc,
            Endpoint::ready(&format!("echo-{version}"), "127.0.0.1", 9090, port).with_label("version", version),
        );
    }
    m.insert_policy(ReleasePolicy::new(
        "default",
        "echo-v3",
        ReleasePolicySpec::split("echo", "v1", "v3", canary_weight),
    ));
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
    let client = tokio::task::spawn_blocking(move || {
        grpc_client(&["--xds", &xds, "--target", "echo.default.svc.cluster.local:9090", "-n", &n.to_string()])
    });
    // While it calls, it holds the config: ACKed, as a harness awaits it.
    let acked = sluice.wait_acked("grpc-peer", Duration::from_secs(20)).await;
    let out = client.await.expect("client ran");
    acked.expect("the gRPC client ACKed the current config");
    assert_eq!(out["errors"], 0, "every call succeeds: {out}");
    let count = |v: &str| out["counts"][v].as_u64().unwrap_or(0) as usize;
    assert_eq!(count("v1") + count("v3"), n, "{out}");
    assert_share("proxyless v3 share at 30%", count("v3"), n, 0.3);

    sluice.shutdown().await;
}

/// `sluice bootstrap --grpc` is the file a gRPC client needs: grpcio reads it from `GRPC_XDS_BOOTSTRAP`, connects
/// and calls through Sluice, and Sluice knows it as proxyless by the `GENERATOR: grpc` it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_bootstrap_grpc_connects_a_grpc_client() {
    let v1 = Peer::grpc_server("v1", 0);
    let v3 = Peer::grpc_server("v3", 0);
    let sluice = Sluice::start(Options::local()).await.expect("start");
    sluice.store().set_model(echo_model(v1.port(), v3.port(), 10_000));
    sluice.wait_published(Duration::from_secs(5)).await.expect("published");

    let xds = sluice.xds_addr().to_string();
    let args = ["bootstrap", "--grpc", "--node-id", "boot-grpc", "--xds", &xds, "--labels", "app=ratings"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("grpc-bootstrap.json");
    std::fs::write(&file, &out.stdout).expect("write");

    let client = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(common::venv_python())
            .arg(common::peer("grpc_peer.py"))
            .args(["client", "--target", "echo.default.svc.cluster.local:9090", "-n", "300"])
            .env("GRPC_XDS_BOOTSTRAP", &file)
            .output()
            .expect("grpc_peer.py client");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON line")
    });
    sluice.wait_acked("boot-grpc", Duration::from_secs(20)).await.expect("the client ACKed");
    let statuses = sluice.registry().get("boot-grpc");
    assert_eq!(statuses[0].proxy.mode, InterceptionMode::Proxyless, "known as proxyless");
    let out = client.await.expect("client ran");
    assert_eq!(out["errors"], 0, "{out}");
    assert_eq!(out["counts"]["v3"], 300, "all on v3 at 100%: {out}");
    sluice.shutdown().await;
}
