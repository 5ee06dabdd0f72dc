//! The setup the real-Envoy tests share: the `reviews` config (v1 and v3 on local backends) and an Envoy
//! bootstrapped by `sluice bootstrap --listen` on port 0 (Envoy picks a free port, so tests never race for one).

use super::Envoy;
use sluice::bootstrap::{BootstrapArgs, render};
use sluice::model::{Endpoint, Model, Service};
use std::net::SocketAddr;
use std::time::Duration;

/// A `reviews` Service and two Workloads (v1, v3) on `127.0.0.1`, in config-file YAML; tests append a policy.
pub fn reviews_yaml(v1: u16, v3: u16) -> String {
    versions_yaml("reviews", &[("v1", v1), ("v3", v3)])
}

/// A Service `service` (port 9080, `http`) and a Workload `SERVICE-VERSION` per version on `127.0.0.1:PORT`, in
/// config-file YAML.
pub fn versions_yaml(service: &str, versions: &[(&str, u16)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {service}}}\nspec:\n  selector: {{app: {service}}}\n  \
         ports: [{{name: http, port: 9080}}]\n"
    );
    for (version, port) in versions {
        out.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {service}-{version}, labels: \
             {{app: {service}, version: {version}}}}}\nspec: {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
        ));
    }
    out
}

/// The same mesh as a model built in code: `reviews` with a v1 and a v3 endpoint on `127.0.0.1`.
pub fn reviews_model(v1: u16, v3: u16) -> Model {
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    for (version, port) in [("v1", v1), ("v3", v3)] {
        let ep = Endpoint::ready(&format!("reviews-{version}"), "127.0.0.1", 9080, port)
            .with_label("app", "reviews")
            .with_label("version", version);
        m.push_endpoint(&svc, ep);
    }
    m
}

/// Starts an Envoy that takes its config from Sluice at `xds` (Delta ADS, or SotW), waits until it is LIVE, and
/// returns it with the address its single HTTP listener bound.
pub async fn start_envoy(xds: SocketAddr, node: &str, sotw: bool) -> (Envoy, SocketAddr) {
    start_envoy_with(BootstrapArgs { sotw, ..listen_args(xds, node) }).await
}

/// The bootstrap flags of a listen-mode Envoy on port 0 for `node` (tests add their own).
pub fn listen_args(xds: SocketAddr, node: &str) -> BootstrapArgs {
    BootstrapArgs {
        node_id: node.into(),
        xds: xds.to_string().parse().expect("xds host:port"),
        listen: Some("127.0.0.1:0".parse().expect("listen address")),
        admin_port: 0,
        ..Default::default()
    }
}

/// [`start_envoy`] from bootstrap flags.
pub async fn start_envoy_with(args: BootstrapArgs) -> (Envoy, SocketAddr) {
    let envoy = Envoy::start(&render(&args));
    envoy.wait_live(Duration::from_secs(30)).await;
    let listen = envoy.listener_addr(Duration::from_secs(10)).await;
    (envoy, listen)
}

/// A gateway Envoy for the Gateway `gateway` (`NS/NAME`; `sluice bootstrap --gateway NS/NAME --gateway-bind
/// 127.0.0.1`), live and ACKed by `sluice`.
pub async fn gateway_envoy(sluice: &sluice::server::Sluice, node: &str, gateway: &str) -> Envoy {
    let args = BootstrapArgs {
        node_id: node.into(),
        xds: sluice.xds_addr().to_string().parse().expect("xds"),
        admin_port: 0,
        gateway: Some(gateway.into()),
        gateway_bind: Some("127.0.0.1".parse().expect("ip")),
        ..Default::default()
    };
    let envoy = Envoy::start(&render(&args));
    envoy.wait_live(Duration::from_secs(30)).await;
    sluice.wait_acked(node, Duration::from_secs(20)).await.expect("the gateway ACKs its config");
    envoy
}

/// Waits (at most 10 s) until the release `default/NAME` is what `want` says and the one connected proxy ACKed it:
/// what a test checks before it measures traffic through Envoy.
pub async fn until_release(
    sluice: &sluice::server::Sluice,
    name: &str,
    want: impl Fn(&sluice::release::ReleaseView) -> bool,
    what: &str,
) {
    let key = sluice::model::ObjectKey::new("default", name);
    let started = std::time::Instant::now();
    loop {
        let view = sluice.releases().get(&key);
        if let Ok(v) = &view
            && want(v)
            && (v.status.proxies.total, v.status.proxies.acked) == (1, 1)
        {
            return;
        }
        let status = view.map(|v| format!("{:?}", v.status)).unwrap_or_else(|e| e.to_string());
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: not applied within 10 s: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
