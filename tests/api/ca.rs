//! The workload CA through the real binary: `sluice serve --ca --state-dir D --ca-tokens F` serves Istio's
//! `IstioCertificateService` on the mTLS port with a certificate its own mesh CA signed, and a tonic client over
//! rustls (trusting only `D/mesh-ca.pem`, no client certificate) asks it for certificates:
//!
//! ```text
//!  valid token, CSR for its own identity ─────▶ chain [leaf, root], verifies to the root, URI SAN = the token's
//!  CSR naming only a DNS name ────────────────▶ issued, the DNS name dropped, URI SAN = the token's identity
//!  validity_duration past the max ────────────▶ capped at --max-workload-cert-ttl-secs
//!  CSR for another identity ──────────────────▶ PERMISSION_DENIED     ImpersonatedIdentity ─▶ PERMISSION_DENIED
//!  wrong token / no token ────────────────────▶ UNAUTHENTICATED       not a CSR ───────────▶ INVALID_ARGUMENT
//!  ADS, Release API, stats sink without a client certificate ─▶ refused; the Release API with the issued one: served
//! ```
//! and `/metrics` counts issued and refused (by reason) and the root's time left.

use crate::common::child::SluiceChild;
use crate::common::free_addrs;
use crate::common::http::{client, get_with};
use crate::common::prom;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use sluice::proto::istio_ca::IstioCertificateRequest;
use sluice::proto::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use sluice::proto::release_service_client::ReleaseServiceClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use x509_parser::prelude::*;

const ME: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const TOKEN: &str = "cart-token-0123456789abcdef0123456789abcdef";

fn csr(key: &rcgen::KeyPair, sans: Vec<rcgen::SanType>) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.try_into().unwrap())
}

async fn channel(addr: SocketAddr, root: &str, identity: Option<Identity>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root)).domain_name("sluice.test");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    endpoint.connect().await.expect("a TLS connection without a client certificate is accepted")
}

/// CreateCertificate with `token` (None: no authorization metadata) and optional impersonation metadata.
async fn ask(
    ca: &mut IstioCertificateServiceClient<Channel>,
    token: Option<&str>,
    csr: String,
    validity: i64,
    impersonate: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    use prost_types::{Struct, Value, value::Kind};
    let metadata = impersonate.map(|who| Struct {
        fields: [("ImpersonatedIdentity".to_string(), Value { kind: Some(Kind::StringValue(who.into())) })]
            .into_iter()
            .collect(),
    });
    let mut request = tonic::Request::new(IstioCertificateRequest { csr, validity_duration: validity, metadata });
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    ca.create_certificate(request).await.map(|r| r.into_inner().cert_chain)
}

/// Verifies `chain` (leaf first) as a client certificate against `root` now; returns the leaf's URI SANs and
/// lifetime from now.
fn check_chain(chain: &[String], root: &str) -> (Vec<String>, Duration) {
    let der = |p: &str| CertificateDer::from_pem_slice(p.as_bytes()).expect("one PEM certificate per entry");
    let certs: Vec<CertificateDer> = chain.iter().map(|p| der(p)).collect();
    assert_eq!(chain.last().unwrap().trim(), root.trim(), "the chain ends with the root");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(root)).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    let now = UnixTime::since_unix_epoch(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap());
    verifier.verify_client_cert(&certs[0], &certs[1..], now).expect("the leaf verifies to the root");
    let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
    let sans = leaf.subject_alternative_name().unwrap().expect("a SAN").value.general_names.iter().map(|n| match n {
        GeneralName::URI(u) => format!("URI:{u}"),
        other => format!("{other:?}"),
    });
    let left = leaf.validity().not_after.timestamp() - now.as_secs() as i64;
    (sans.collect(), Duration::from_secs(left.max(0) as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_issues_the_tokens_identity_only_and_refuses_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state, tokens) = (dir.path().join("mesh"), dir.path().join("state"), dir.path().join("tokens"));
    std::fs::create_dir_all(&config).unwrap();
    let line = format!("# cart's credential\nshop/cart {}\n", sluice::ca::authn::digest_hex(TOKEN));
    std::fs::write(&tokens, line).unwrap();
    let [xds, admin, tls] = free_addrs();
    let mut args: Vec<std::ffi::OsString> =
        vec!["--config".into(), config.into(), "--state-dir".into(), state.clone().into()];
    let tls_addr = tls.to_string();
    let tokens_arg = tokens.to_str().unwrap().to_string();
    for a in ["--ca", "--ca-tokens", &tokens_arg, "--xds-tls-addr", &tls_addr, "--ca-dns-names", "sluice.test"] {
        args.push(a.into());
    }
    for a in ["--workload-cert-ttl-secs", "3600", "--max-workload-cert-ttl-secs", "7200"] {
        args.push(a.into());
    }
    let _sluice = SluiceChild::start_with(&args, &[], xds, admin, dir.path().join("sluice.log")).await;
    let root = std::fs::read_to_string(state.join("mesh-ca.pem")).expect("the mesh root in the state directory");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("mesh-ca-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is readable by its owner only");

    // Sluice's mTLS port verifies against the mesh root; no client certificate is needed to ask for one.
    let mut ca = IstioCertificateServiceClient::new(channel(tls, &root, None).await);
    let key = rcgen::KeyPair::generate().unwrap();
    let chain = ask(&mut ca, Some(TOKEN), csr(&key, vec![uri(ME)]), 0, None).await.expect("issued");
    assert_eq!(chain.len(), 2, "leaf, root");
    let (sans, left) = check_chain(&chain, &root);
    assert_eq!(sans, [format!("URI:{ME}")]);
    assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600), "default lifetime: {left:?}");

    let dns = rcgen::SanType::DnsName("evil.example".try_into().unwrap());
    let chain = ask(&mut ca, Some(TOKEN), csr(&key, vec![dns]), 0, None).await.expect("issued");
    assert_eq!(check_chain(&chain, &root).0, [format!("URI:{ME}")], "only the token's identity is certified");
    let chain = ask(&mut ca, Some(TOKEN), csr(&key, vec![]), 1_000_000_000, None).await.expect("issued, capped");
    let left = check_chain(&chain, &root).1;
    assert!(left > Duration::from_secs(7190) && left <= Duration::from_secs(7200), "capped: {left:?}");

    let refused = |r: Result<Vec<String>, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_string())
    };
    let admin_id = "spiffe://cluster.local/ns/kube-system/sa/admin";
    let (code, msg) = refused(ask(&mut ca, Some(TOKEN), csr(&key, vec![uri(admin_id)]), 0, None).await);
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains(admin_id) && msg.contains(ME), "names both identities: {msg}");
    let (code, msg) = refused(ask(&mut ca, Some(TOKEN), csr(&key, vec![]), 0, Some(admin_id)).await);
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("impersonate"), "{msg}");
    let (code, msg) = refused(ask(&mut ca, Some("not-the-token"), csr(&key, vec![]), 0, None).await);
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("not valid"), "{msg}");
    let (code, msg) = refused(ask(&mut ca, None, csr(&key, vec![]), 0, None).await);
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("authorization: Bearer"), "{msg}");
    let (code, msg) = refused(
        ask(
            &mut ca,
            Some(TOKEN),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            0,
            None,
        )
        .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("csr"), "{msg}");

    // Every other service on the port refuses a connection without a client certificate.
    let anonymous = channel(tls, &root, None).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut ads = AggregatedDiscoveryServiceClient::new(anonymous.clone());
    let outcome = match ads.stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(mut stream) => stream.get_mut().message().await.map(|_| ()),
        Err(s) => Err(s),
    };
    assert_eq!(outcome.expect_err("ADS refused").code(), Code::Unauthenticated);
    let mut releases = ReleaseServiceClient::new(anonymous.clone());
    let status = releases.list_releases(sluice::proto::ListReleasesRequest::default()).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
    let mut sink = MetricsServiceClient::new(anonymous);
    let status = sink.stream_metrics(futures::stream::pending()).await.expect_err("the stats sink refuses");
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());

    // With the certificate it was issued, a workload speaks mTLS on the same port.
    let chain = ask(&mut ca, Some(TOKEN), csr(&key, vec![uri(ME)]), 0, None).await.expect("issued");
    let identity = Identity::from_pem(chain[..chain.len() - 1].concat(), key.serialize_pem());
    let mut releases = ReleaseServiceClient::new(channel(tls, &root, Some(identity)).await);
    releases.list_releases(sluice::proto::ListReleasesRequest::default()).await.expect("served with a workload cert");

    let (status, text) = get_with(&client(), admin, "localhost", "/metrics", &[]).await.unwrap();
    assert_eq!(status, 200);
    let scrape = prom::parse(&text);
    assert_eq!(prom::value(&scrape, "sluice_ca_certificates_issued_total", &[]), Some(4.0), "{text}");
    for reason in ["other-identity", "impersonation", "invalid-token", "no-token", "bad-csr"] {
        let got = prom::value(&scrape, "sluice_ca_requests_refused_total", &[("reason", reason)]);
        assert_eq!(got, Some(1.0), "{reason}");
    }
    let left = prom::value(&scrape, "sluice_ca_root_expiry_seconds", &[]).expect("the root's time left");
    assert!(left > 9.0 * 365.0 * 86400.0, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_without_a_place_for_its_key_is_refused_naming_the_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "serve",
            "--ca",
            "--ca-tokens",
            "/nonexistent",
            "--admin-addr",
            "127.0.0.1:0",
            "--xds-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-dir") && err.contains("--state-dir") && err.contains("--kube"), "{err}");
}
