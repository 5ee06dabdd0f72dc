//! mTLS on the xDS port: who may connect, what an identity may see, and certificate reload.
//!
//! Certificates are minted per test with rcgen (`common::pki`); clients are tonic ADS clients over rustls.

use crate::common;

use common::pki::{Ca, Leaf, SERVER_NAME, write_ca};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use sluice::model::{Endpoint, Model, Service};
use sluice::server::{Options, Sluice, TlsOptions};
use sluice::tls::TlsFiles;
use sluice::xds::Trust;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint as GrpcEndpoint, Identity};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// `reviews` in `a`, `ratings` in `b`, `geo` in the shared namespace `common`.
fn model() -> Model {
    let mut m = Model::default();
    for (ns, name, port) in [("a", "reviews", 19101), ("b", "ratings", 19102), ("common", "geo", 19103)] {
        let svc = m.insert_service(Service::http(ns, name, 9080));
        m.push_endpoint(&svc, Endpoint::ready(&format!("{name}-1"), "127.0.0.1", 9080, port));
    }
    m
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    files: TlsFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let (cert, key) = ca.server("sluice-1").write(dir.path(), "server");
    let client_ca = write_ca(&ca, dir.path(), "ca");
    Pki { files: TlsFiles { cert, key, client_ca }, ca, dir }
}

async fn start(files: &TlsFiles, shared: &[&str]) -> Sluice {
    let tls = TlsOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        files: files.clone(),
        trust: Trust {
            trust_domain: "cluster.local".into(),
            shared_namespaces: shared.iter().map(|s| s.to_string()).collect(),
        },
        reload_interval: Duration::from_millis(50),
    };
    let sluice = Sluice::start(Options { tls: Some(tls), ..Options::local() }).await.unwrap();
    sluice.store().set_model(model());
    sluice.wait_published(Duration::from_secs(5)).await.unwrap();
    sluice
}

/// A listen-mode node; `namespace: None` states none.
fn node(id: &str, namespace: Option<&str>) -> Node {
    let mut fields = std::collections::BTreeMap::new();
    if let Some(ns) = namespace {
        fields.insert("NAMESPACE".to_string(), Value { kind: Some(Kind::StringValue(ns.into())) });
    }
    fields.insert("SLUICE_LISTEN".to_string(), Value { kind: Some(Kind::StringValue("127.0.0.1:15999".into())) });
    Node { id: id.into(), metadata: Some(Struct { fields: fields.into_iter().collect() }), ..Default::default() }
}

/// A gRPC channel over mTLS (`client`: the proxy's certificate, if any).
async fn channel(
    addr: SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
) -> Result<tonic::transport::Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(server_ca)).domain_name(SERVER_NAME);
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    let endpoint = GrpcEndpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))
}

/// Opens an ADS stream over mTLS (`client`: the proxy's certificate, if any) and returns the first response to
/// one request, or the error that ended the attempt (handshake, stream refusal).
async fn first_response(
    addr: SocketAddr,
    server_ca: &str,
    client: Option<&Leaf>,
    node: Node,
    type_url: &str,
    names: &[&str],
) -> Result<DiscoveryResponse, String> {
    let attempt = async {
        let channel = channel(addr, server_ca, client).await?;
        let (tx, rx) = mpsc::channel(4);
        let req = DiscoveryRequest {
            node: Some(node),
            type_url: type_url.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        tx.send(req).await.unwrap();
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
        let mut stream = client.stream_aggregated_resources(ReceiverStream::new(rx)).await.map_err(status)?;
        let resp = stream.get_mut().message().await.map_err(status)?;
        drop(tx);
        resp.ok_or_else(|| "stream ended without a response".to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

fn names<M: Message + Default>(resp: &DiscoveryResponse, name: impl Fn(M) -> String) -> Vec<String> {
    resp.resources.iter().map(|any| name(M::decode(any.value.as_slice()).unwrap())).collect()
}

fn cluster_of(ns: &str, name: &str) -> String {
    format!("outbound|9080||{name}.{ns}.svc.cluster.local")
}

#[tokio::test]
async fn a_proxy_without_a_certificate_from_the_ca_is_refused() {
    let p = pki();
    let sluice = start(&p.files, &[]).await;
    let addr = sluice.xds_tls_addr().unwrap();
    let ca = p.ca.cert_pem.clone();

    let none = first_response(addr, &ca, None, node("anon", Some("a")), CDS, &[]).await;
    assert!(none.is_err(), "no client certificate must not get config: {none:?}");

    let rogue = Ca::new("rogue root").proxy("a", "web");
    let foreign = first_response(addr, &ca, Some(&rogue), node("rogue", Some("a")), CDS, &[]).await;
    assert!(foreign.is_err(), "a certificate from another CA must not get config: {foreign:?}");

    // At the TLS layer, the server's alert says why.
    let alert = tls_refusal(addr, &ca, None).await;
    assert!(alert.contains("CertificateRequired"), "{alert}");
    let alert = tls_refusal(addr, &ca, Some(&rogue)).await;
    assert!(alert.contains("UnknownCA") || alert.contains("BadCertificate"), "{alert}");

    let other_domain = p.ca.proxy_uri("spiffe://evil.example/ns/a/sa/web");
    let err = first_response(addr, &ca, Some(&other_domain), node("td", Some("a")), CDS, &[]).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied") && err.contains("`evil.example`"), "{err}");

    let no_spiffe = p.ca.proxy_uri("https://example.com/a");
    let err = first_response(addr, &ca, Some(&no_spiffe), node("uri", Some("a")), CDS, &[]).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied") && err.contains("not spiffe://"), "{err}");

    let good = first_response(addr, &ca, Some(&p.ca.proxy("a", "web")), node("ok", Some("a")), CDS, &[]).await;
    assert!(good.is_ok_and(|r| !r.resources.is_empty()), "a certificate from the CA gets config");
}

#[tokio::test]
async fn a_namespace_a_certificate_gets_only_a_and_shared_config() {
    let p = pki();
    let sluice = start(&p.files, &["common"]).await;
    let addr = sluice.xds_tls_addr().unwrap();
    let ca = p.ca.cert_pem.clone();
    let cert = p.ca.proxy("a", "web");

    // Wildcard CDS: a's and the shared namespace's clusters, none of b's.
    let cds = first_response(addr, &ca, Some(&cert), node("p-a", Some("a")), CDS, &[]).await.unwrap();
    let mut clusters = names(&cds, |c: Cluster| c.name);
    clusters.sort();
    assert_eq!(clusters, [cluster_of("common", "geo"), cluster_of("a", "reviews")]);

    // Asking for b's assignment by name gets nothing of b; the visible name asked beside it is answered.
    let want = [cluster_of("b", "ratings"), cluster_of("a", "reviews")];
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    let eds = first_response(addr, &ca, Some(&cert), node("p-a2", Some("a")), EDS, &want).await.unwrap();
    assert_eq!(names(&eds, |c: ClusterLoadAssignment| c.cluster_name), [cluster_of("a", "reviews")]);

    // The listen route configuration has virtual hosts for a and common only.
    let rds = first_response(addr, &ca, Some(&cert), node("p-a3", None), RDS, &["sluice-listen"]).await.unwrap();
    let vhosts = names(&rds, |r: RouteConfiguration| {
        r.virtual_hosts.iter().map(|v| v.name.clone()).collect::<Vec<_>>().join(",")
    });
    assert_eq!(vhosts, ["geo.common.svc.cluster.local:9080,reviews.a.svc.cluster.local:9080"]);

    // A node that claims b with a's certificate is refused, naming both.
    let err = first_response(addr, &ca, Some(&cert), node("liar", Some("b")), CDS, &[]).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");
    assert!(err.contains("claims namespace `b`") && err.contains("spiffe://cluster.local/ns/a/sa/web"), "{err}");

    // CSDS (every proxy's config status) is not served on the mTLS port.
    let mut csds = ClientStatusDiscoveryServiceClient::new(channel(addr, &ca, Some(&cert)).await.unwrap());
    let err = csds.fetch_client_status(ClientStatusRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err}");

    // The plaintext port has no identity and serves every namespace (it is for trusted networks; see SECURITY.md).
    let plain = AggregatedDiscoveryServiceClient::connect(format!("http://{}", sluice.xds_addr())).await;
    assert!(plain.is_ok());
}

/// A rustls client connection (with `client`'s certificate, if any).
async fn rustls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let chain = vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector.connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp).await
}

/// The error a client sees once the server has judged its certificate (TLS 1.3 reports it after the handshake).
async fn tls_refusal(addr: SocketAddr, ca_pem: &str, client: Option<&Leaf>) -> String {
    use tokio::io::AsyncReadExt;
    let mut tls = match rustls_connect(addr, ca_pem, client).await {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
        Ok(Ok(n)) => panic!("the server accepted the connection and sent {n} bytes"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("the server neither refused nor answered within 5 s"),
    }
}

/// Connects with rustls directly and returns the DER of the certificate the server presented.
async fn served_cert(addr: SocketAddr, ca_pem: &str, client: &Leaf) -> Vec<u8> {
    let tls = rustls_connect(addr, ca_pem, Some(client)).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_replaced_server_certificate_is_served_to_new_connections() {
    let p = pki();
    let sluice = start(&p.files, &[]).await;
    let addr = sluice.xds_tls_addr().unwrap();
    let client = p.ca.proxy("a", "web");
    let first = std::fs::read_to_string(&p.files.cert).unwrap();
    assert_eq!(served_cert(addr, &p.ca.cert_pem, &client).await, der_of(&first));

    // A broken file is refused and the last good certificate keeps serving.
    replace(&p.files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(served_cert(addr, &p.ca.cert_pem, &client).await, der_of(&first));

    let next = p.ca.server("sluice-2");
    replace(&p.files.key, &next.key_pem);
    replace(&p.files.cert, &next.cert_pem);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if served_cert(addr, &p.ca.cert_pem, &client).await == der_of(&next.cert_pem) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not served within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(p.dir);
}
