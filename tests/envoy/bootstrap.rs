//! `sluice bootstrap` renders are accepted by the real Envoy (`envoy --mode validate`).

use crate::common;

use clap::Parser;
use sluice::bootstrap::{BootstrapArgs, render};
use std::process::Command;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

fn validate(flags: &[&str]) {
    let cli = Cli::try_parse_from(std::iter::once("bootstrap").chain(flags.iter().copied())).expect("flags parse");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&render(&cli.args)).unwrap()).unwrap();
    let out = Command::new(common::envoy_bin())
        .args(["--mode", "validate", "--use-dynamic-base-id", "--log-level", "warn", "-c"])
        .arg(&file)
        .output()
        .expect("running envoy --mode validate");
    assert!(
        out.status.success(),
        "envoy rejected the bootstrap for {flags:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn envoy_accepts_the_default_bootstrap() {
    validate(&["--node-id=p1"]);
}

#[test]
fn envoy_accepts_listen_sotw_labels_and_ports() {
    validate(&[
        "--node-id=p2",
        "--namespace=shop",
        "--listen=127.0.0.1:15080",
        "--sotw",
        "--labels=app=reviews,version=v3",
        "--inbound-ports=9080,9081",
    ]);
}

#[test]
fn envoy_accepts_a_hostname_xds_address() {
    validate(&["--node-id=p3", "--xds=sluice.sluice-system.svc.cluster.local:15010", "--listen=127.0.0.1:15080"]);
}

#[test]
fn envoy_accepts_an_mtls_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::pki::Ca::new("mesh root");
    let (cert, key) = ca.proxy("shop", "cart").write(dir.path(), "proxy");
    let root = common::pki::write_ca(&ca, dir.path(), "ca");
    let flag = |name: &str, p: &std::path::Path| format!("--{name}={}", p.display());
    let (cert, key, root) = (flag("tls-cert", &cert), flag("tls-key", &key), flag("tls-ca", &root));
    validate(&["--node-id=p4", "--namespace=shop", "--xds=127.0.0.1:15012", &cert, &key, &root]);
    validate(&["--node-id=p5", "--xds=sluice.sluice-system.svc:15012", &cert, &key, &root]);
}

/// The sidecar bootstrap `sluice proxy` renders: intercept mode (no `--listen`), inbound ports, labels, stats
/// inclusions and the Prometheus listener on 15090.
#[test]
fn envoy_accepts_the_sidecar_bootstrap() {
    validate(&[
        "--node-id=sidecar~10.1.0.5~reviews-v3-abc.default~default.svc.cluster.local",
        "--xds=10.1.0.1:15010",
        "--labels=app=reviews,version=v3",
        "--inbound-ports=9080",
        "--prometheus-port=15090",
        "--stats-inclusion-suffixes=upstream_rq_retry",
    ]);
}

/// The ingress gateway bootstraps: `sluice bootstrap --gateway` (loopback bind, as the tests run it), and the one
/// `sluice proxy --gateway --mtls` renders (an istiod router node id, SDS from the agent's socket for its upstream
/// mTLS, Prometheus on 15090).
#[test]
fn envoy_accepts_the_gateway_bootstraps() {
    validate(&["--node-id=public-gateway-1", "--gateway=gateways/public", "--gateway-bind=127.0.0.1"]);
    validate(&[
        "--node-id=router~10.1.0.9~bookinfo-gateway-abc.bookinfo~bookinfo.svc.cluster.local",
        "--xds=sluice.sluice-system.svc:15010",
        "--gateway=bookinfo/bookinfo-gateway",
        "--labels=app=bookinfo-gateway,istio=ingressgateway",
        "--sds-socket=/etc/sluice/proxy/sds.sock",
        "--prometheus-port=15090",
    ]);
}
