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

/// The echo servers v1 and v3 (kept running while the peers live), and Sluice serving `echo_model` at
/// `canary_weight`, published.
async fn start_echo(canary_weight: u32) -> (Sluice, [Peer; 2]) {
    let (v1, v3) = (Peer::grpc_server("v1", 0), Peer::grpc_server("v3", 0));
    let sluice = Sluice::start(Options::local()).await.expect("start");
    sluice.store().set_model(echo_model(v1.port(), v3.port(), canary_weight));
    sluice.wait_published(Duration::from_secs(5)).await.expect("published");
    (sluice, [v1, v3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxyless_grpc_calls_follow_the_weights() {
    let (sluice, _peers) = start_echo(3000).await;

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
    let (sluice, _peers) = start_echo(10_000).await;

    let xds = sluice.xds_addr().to_string();
    let args = ["bootstrap", "--grpc", "--node-id", "boot-grpc", "--xds", &xds, "--labels", "app=ratings"];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("grpc-bootstrap.json");
    std::fs::write(&file, &out.stdout).expect("write");

    let client = tokio::task::spawn_blocking(move || client_with(&file, "echo.default.svc.cluster.local:9090", 300));
    sluice.wait_acked("boot-grpc", Duration::from_secs(20)).await.expect("the client ACKed");
    let statuses = sluice.registry().get("boot-grpc");
    assert_eq!(statuses[0].proxy.mode, InterceptionMode::Proxyless, "known as proxyless");
    let out = client.await.expect("client ran");
    assert_eq!(out["errors"], 0, "{out}");
    assert_eq!(out["counts"]["v3"], 300, "all on v3 at 100%: {out}");
    sluice.shutdown().await;
}

/// `grpc_peer.py client` with `GRPC_XDS_BOOTSTRAP=bootstrap`: `n` calls to `xds:///TARGET`, its JSON line.
fn client_with(bootstrap: &std::path::Path, target: &str, n: usize) -> serde_json::Value {
    let out = std::process::Command::new(common::venv_python())
        .arg(common::peer("grpc_peer.py"))
        .args(["client", "--target", target, "-n", &n.to_string(), "--wait-ready", "5"])
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .output()
        .expect("grpc_peer.py client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON line")
}

/// `sluice bootstrap --grpc ARGS` written to `dir/NAME.json`.
fn bootstrap_file(dir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bootstrap", "--grpc"])
        .args(args)
        .output()
        .expect("sluice bootstrap");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, &out.stdout).expect("write");
    file
}

/// Over Sluice's mTLS port (plaintext off), a gRPC client with a `default` workload certificate gets `default`'s
/// services and calls them; a Service of namespace `other` does not exist for it (its calls fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_over_mtls_gets_its_namespace_only() {
    use common::pki::{Ca, write_ca};
    let v1 = Peer::grpc_server("v1", 0);
    let v3 = Peer::grpc_server("v3", 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("mesh root");
    let (cert, key) = ca.server("sluice").write(dir.path(), "server");
    let ca_file = write_ca(&ca, dir.path(), "ca");
    let (client_cert, client_key) = ca.proxy("default", "ratings").write(dir.path(), "client");
    let tls = sluice::server::TlsOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        files: sluice::tls::TlsFiles { cert, key, client_ca: ca_file.clone() },
        trust: sluice::xds::Trust { trust_domain: "cluster.local".into(), shared_namespaces: vec![] },
        reload_interval: Duration::from_secs(1),
    };
    let sluice = Sluice::start(Options { tls: Some(tls), plaintext: false, ..Options::local() }).await.expect("start");
    let mut model = echo_model(v1.port(), v3.port(), 0);
    let other = model.insert_service(Service::grpc("other", "hidden", 9090));
    model.push_endpoint(&other, Endpoint::ready("hidden-1", "127.0.0.1", 9090, v3.port()).with_label("version", "v3"));
    sluice.store().set_model(model);
    sluice.wait_published(Duration::from_secs(5)).await.expect("published");

    let xds = sluice.xds_addr().to_string();
    let files = [client_cert.to_str(), client_key.to_str(), ca_file.to_str()].map(|p| p.expect("UTF-8 path"));
    let tls_args = ["--tls-cert", files[0], "--tls-key", files[1], "--tls-ca", files[2]];
    let mut args = vec!["--node-id", "grpc-mtls", "--xds", &xds];
    args.extend(tls_args);
    let file = bootstrap_file(dir.path(), "mtls", &args);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains("\"type\": \"tls\""), "mTLS channel credentials: {text}");

    let client = tokio::task::spawn_blocking({
        let file = file.clone();
        move || client_with(&file, "echo.default.svc.cluster.local:9090", 300)
    });
    sluice.wait_acked("grpc-mtls", Duration::from_secs(20)).await.expect("the client ACKed over mTLS");
    let out = client.await.expect("client ran");
    assert_eq!((out["errors"].as_u64(), out["counts"]["v1"].as_u64()), (Some(0), Some(300)), "{out}");

    let hidden = tokio::task::spawn_blocking(move || client_with(&file, "hidden.other.svc.cluster.local:9090", 5));
    let out = hidden.await.expect("client ran");
    assert_eq!(out["errors"], 5, "namespace `other` does not exist for a `default` certificate: {out}");
    assert_eq!(out["counts"], serde_json::json!({}), "{out}");

    let plain = bootstrap_file(dir.path(), "plain", &["--node-id", "grpc-plain", "--xds", &xds]);
    let refused = tokio::task::spawn_blocking(move || client_with(&plain, "echo.default.svc.cluster.local:9090", 3));
    let out = refused.await.expect("client ran");
    assert_eq!(out["errors"], 3, "no config without a certificate: {out}");
    sluice.shutdown().await;
}
