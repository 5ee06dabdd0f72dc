//! An ingress gateway Envoy (`sluice bootstrap --gateway NS/NAME`) configured from Bookinfo's Istio
//! `bookinfo-gateway.yaml` shape: the five paths reach productpage, other paths and Hosts no server accepts get
//! 404, and a ReleasePolicy on productpage splits the traffic entering through the gateway; TLS passed through
//! by SNI (`tls.mode: PASSTHROUGH`) to a backend that terminates it.

use crate::common;

use common::free_port;
use common::http::{Client, client, get_response};
use common::{Backend, assert_share};
use futures::StreamExt;
use sluice::server::{Options, Sluice};
use sluice::source;
use sluice::store::Store;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// productpage (v1, v2 on local backends) and Bookinfo's gateway: server `http` on `any` for every host, server
/// `http-named` on `named` for bookinfo.example.com only; the VirtualService `bookinfo` as the sample writes it.
fn config(v1: u16, v2: u16, any: u16, named: u16) -> String {
    format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {any}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {named}, name: http-named, protocol: HTTP}}
    hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    - uri:
        exact: /logout
    - uri:
        prefix: /api/v1/products
    route:
    - destination:
        host: productpage
        port:
          number: 9080
"#,
        common::mesh::versions_yaml("productpage", &[("v1", v1), ("v2", v2)])
    )
}

const POLICY: &str = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: productpage-v2}\nspec:\n  service: productpage\n  stable: v1\n  canary: v2\n  traffic:\n    canaryWeight: 2000\n";

/// Status (and body, for 200) of `n` requests, 8 at a time.
async fn tally(http: &Client, addr: SocketAddr, host: &str, path: &str, n: usize) -> BTreeMap<String, usize> {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| get_response(http, addr, host, path, &[]))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for r in results {
        let key = match r {
            Ok(resp) if resp.status == 200 => resp.body,
            Ok(resp) => resp.status.to_string(),
            Err(e) => format!("error: {e}"),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_routes_and_splits_at_the_gateway() {
    let (v1, v2) = (Backend::start("v1").await, Backend::start("v2").await);
    let (any, named) = (free_port(), free_port());
    let base = config(v1.port(), v2.port(), any, named);
    let store = Store::new();
    store.register_source(source::SOURCE);
    store.set_part(source::SOURCE, source::parse_str(&base, "gateway.yaml").expect("config"));
    let sluice = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.expect("start");
    let envoy = common::mesh::gateway_envoy(&sluice, "bookinfo-gateway-1", "default/bookinfo-gateway").await;
    let http = client();
    let (any, named): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{any}").parse().expect("addr"), format!("127.0.0.1:{named}").parse().expect("addr"));

    // A listener per server port, named as istiod names a bound server's (`IP_PORT`), RDS `http.PORT`; nothing of
    // the sidecar config.
    let dump = envoy.admin_get("/config_dump?resource=dynamic_listeners").await;
    for port in [any.port(), named.port()] {
        assert!(dump.contains(&format!("\"127.0.0.1_{port}\"")), "listener 127.0.0.1_{port}: {dump}");
        assert!(dump.contains(&format!("\"http.{port}\"")), "route configuration http.{port}: {dump}");
    }
    assert!(!dump.contains("virtualOutbound") && !dump.contains("sluice_listen"), "{dump}");

    for path in ["/productpage", "/static/x", "/login", "/logout", "/api/v1/products", "/api/v1/products/1"] {
        let got = tally(&http, any, "anything.example", path, 5).await;
        assert_eq!(got.get("v1").copied().unwrap_or(0) + got.get("v2").copied().unwrap_or(0), 5, "{path}: {got:?}");
    }
    for path in ["/", "/productpage/x", "/loginx", "/nothing"] {
        let got = tally(&http, any, "anything.example", path, 3).await;
        assert_eq!(got.get("404"), Some(&3), "{path} is no route of the VirtualService: {got:?}");
    }
    let known = tally(&http, named, "bookinfo.example.com", "/productpage", 5).await;
    assert_eq!(known.get("v1").copied().unwrap_or(0) + known.get("v2").copied().unwrap_or(0), 5, "{known:?}");
    let unknown = tally(&http, named, "other.example.com", "/productpage", 5).await;
    assert_eq!(unknown.get("404"), Some(&5), "a Host no server on the port accepts: {unknown:?}");

    // A ReleasePolicy on productpage at 20% applies inside the gateway's route.
    let model = source::parse_str(&format!("{base}{POLICY}"), "gateway.yaml").expect("config with policy");
    sluice.store().set_part(source::SOURCE, model);
    sluice.wait_acked("bookinfo-gateway-1", Duration::from_secs(20)).await.expect("the gateway ACKs the policy");
    let split = tally(&http, any, "bookinfo.example.com", "/productpage", 2000).await;
    println!("productpage 20% through the gateway: {split:?}");
    let (s1, s2) = (split.get("v1").copied().unwrap_or(0), split.get("v2").copied().unwrap_or(0));
    assert_eq!(s1 + s2, 2000, "every request reaches productpage: {split:?}");
    assert_share("ReleasePolicy 20% at the gateway: v2", s2, 2000, 0.2);
    assert!((340..=460).contains(&s2), "17–23% of 2,000: {s2}");

    sluice.shutdown().await;
}

/// An HTTPS server with `leaf`'s certificate that answers every request `200 passthrough-ok`: it terminates the
/// TLS the gateway passed through.
async fn tls_backend(leaf: &common::pki::Leaf) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<_, _>>().expect("cert");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = vec![0u8; 4096];
                let _ = tls.read(&mut head).await;
                let body = "passthrough-ok";
                let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                let _ = tls.write_all(answer.as_bytes()).await;
                // Kept open until the client closes (it reads the peer certificate after the answer).
                while matches!(tls.read(&mut head).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// `tls.mode: PASSTHROUGH` (Istio's SNI passthrough task): the gateway holds no certificate; it routes the
/// connection by SNI to the backend, which terminates TLS with its own (the client verifies the backend's name
/// against the CA); an SNI no route names is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_routes_tls_by_sni_to_the_backend_that_terminates_it() {
    let ca = common::pki::Ca::new("passthrough test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let cafile = common::pki::write_ca(&ca, dir.path(), "ca");
    let backend = tls_backend(&ca.host(&["nginx.example.com"])).await;
    let port = free_port();
    let config = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: my-nginx}}
spec:
  selector: {{app: my-nginx}}
  ports: [{{name: tls, port: 443}}]
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {{name: my-nginx-1, labels: {{app: my-nginx}}}}
spec: {{address: 127.0.0.1, ports: {{tls: {}}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: mygateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: tls, protocol: TLS}}
    hosts: [nginx.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: nginx}}
spec:
  hosts: [nginx.example.com]
  gateways: [mygateway]
  tls:
  - match: [{{port: {port}, sniHosts: [nginx.example.com]}}]
    route: [{{destination: {{host: my-nginx, port: {{number: 443}}}}}}]
"#,
        backend.port()
    );
    let store = Store::new();
    store.register_source(source::SOURCE);
    store.set_part(source::SOURCE, source::parse_str(&config, "passthrough.yaml").expect("config"));
    let sluice = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.expect("start");
    let envoy = common::mesh::gateway_envoy(&sluice, "passthrough-gateway-1", "default/mygateway").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    common::https::wait_listening(addr).await;

    let get = serde_json::json!([{"method": "GET", "path": "/", "headers": {"host": "nginx.example.com"}}]);
    let through = common::https::ask_as(addr, "nginx.example.com", &cafile, &get);
    assert_eq!(through[0]["status"], 200, "TLS passed through to the backend: {through:?}");
    assert_eq!(through[0]["body"], "passthrough-ok", "{through:?}");
    assert_eq!(through[0]["peer_san"], serde_json::json!(["nginx.example.com"]), "the backend's certificate");
    let dump = envoy.admin_get("/config_dump?resource=dynamic_listeners").await;
    assert!(dump.contains("tcp_proxy") && !dump.contains("BEGIN CERTIFICATE"), "no certificate at the gateway: {dump}");
    let other = common::https::ask_as(addr, "other.example.com", &cafile, &get);
    assert!(other[0]["error"].is_string(), "an SNI no route names is closed: {other:?}");
    sluice.shutdown().await;
}
