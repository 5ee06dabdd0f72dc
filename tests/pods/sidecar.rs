//! An Istio `Sidecar`'s `outboundTrafficPolicy` at a really intercepting proxy: with `ALLOW_ANY` (istiod's
//! default) a call to a host outside the mesh reaches it (HTTP through `allow_any`, TCP through
//! `virtualOutbound`'s default chain, both to `PassthroughCluster`); with `REGISTRY_ONLY` the same HTTP call is
//! answered 502 by the proxy (`block_all`) and the TCP connection goes to `BlackHoleCluster`, while the mesh's own
//! Service still answers; back to `ALLOW_ANY`, the outside is reachable again.
//!
//! ```text
//!  client (sidecar) ─ http://web:9080 ─▶ 0.0.0.0_9080 ─▶ web               (always)
//!                   ─ http://outside:9080 ─▶ allow_any ─▶ outside │ block_all: 502
//!                   ─ outside:8000 ─▶ virtualOutbound default ─▶ outside │ BlackHoleCluster: closed
//! ```

use crate::common::podmesh::{PodMesh, Sidecar, service_yaml, workload_yaml};
use crate::common::podnet::HttpRequest;
use std::net::SocketAddr;
use std::time::Duration;

const REGISTRY_ONLY: &str = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

async fn call(mesh: &PodMesh, addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let req = HttpRequest { host, ..HttpRequest::get(addr, path) };
    tokio::time::timeout(Duration::from_secs(5), mesh.net.http(mesh.pod("client"), req)).await.ok()?.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_hosts_outside_the_mesh_and_allow_any_passes_them() {
    let _serial = crate::serial().await;
    let mut mesh = PodMesh::new();
    let web = mesh.add_pod("web");
    mesh.add_pod("client");
    let outside = mesh.add_pod("outside").ip;
    let web_ip = mesh.add_service("web");
    mesh.net.add_host(outside, &["outside"]);
    let base = format!("{}{}", service_yaml("web", web_ip, 9080, "http"), workload_yaml("web", "web", "v1", web.ip));
    mesh.write_config(&base);
    mesh.start_sluice_with(&["--file-removal-grace-ms", "300"]).await;
    mesh.intercept("client");
    let labels = vec![("app".to_string(), "client".to_string())];
    mesh.start_agent("client", &Sidecar { labels, drain_seconds: 1, ..Default::default() });
    mesh.start_app("web", "web", "bookinfo.py", &["--role", "details"]).await;
    for port in ["9080", "8000"] {
        let label = format!("outside-{port}");
        mesh.start_app("outside", &label, "backend.py", &["--host", "0.0.0.0", "--port", port, "--name", &label]).await;
    }
    mesh.wait_ready("client", Duration::from_secs(30)).await;
    let web_vip = SocketAddr::from((web_ip, 9080));
    let (http_out, tcp_out) = (SocketAddr::from((outside, 9080)), SocketAddr::from((outside, 8000)));

    // ALLOW_ANY (no Sidecar): the outside is reached.
    assert_eq!(call(&mesh, http_out, "outside:9080", "/").await, Some((200, "outside-9080".into())));
    assert_eq!(call(&mesh, tcp_out, "outside:8000", "/").await, Some((200, "outside-8000".into())));

    // REGISTRY_ONLY: the proxy answers unknown HTTP hosts itself, and closes unknown TCP destinations.
    mesh.write_config(&format!("{base}{REGISTRY_ONLY}"));
    let refused = || async { call(&mesh, http_out, "outside:9080", "/").await.is_some_and(|(s, _)| s == 502) };
    mesh.wait(Duration::from_secs(20), "block_all answers 502", refused).await;
    let tcp = call(&mesh, tcp_out, "outside:8000", "/").await;
    assert!(tcp.is_none(), "BlackHoleCluster: no answer from the outside: {tcp:?}");
    assert!(mesh.envoy_stat("client", "tcp.BlackHoleCluster.downstream_cx_total").await >= 1);
    let (status, body) = call(&mesh, web_vip, "web:9080", "/details/0").await.expect("web answers");
    assert_eq!(status, 200, "a Service of the mesh is still reached: {body}");

    // ALLOW_ANY again.
    mesh.write_config(&base);
    let passed = || async { call(&mesh, http_out, "outside:9080", "/").await.is_some_and(|(s, _)| s == 200) };
    mesh.wait(Duration::from_secs(20), "allow_any passes the outside again", passed).await;
    assert_eq!(call(&mesh, tcp_out, "outside:8000", "/").await, Some((200, "outside-8000".into())));
}
