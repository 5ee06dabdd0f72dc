//! A real Envoy 1.40 reaches Sluice only over mTLS (plaintext off), with the bootstrap `sluice bootstrap` writes
//! for its certificate, gets its namespace's config and routes traffic; another namespace's service is not there.

use crate::common;

use common::pki::{Ca, write_ca};
use common::{Backend, Envoy, get};
use sluice::bootstrap::{BootstrapArgs, BootstrapTls, render};
use sluice::model::{Endpoint, Service};
use sluice::server::{Options, Sluice, TlsOptions};
use sluice::tls::TlsFiles;
use sluice::xds::Trust;
use std::time::Duration;

#[tokio::test]
async fn envoy_over_mtls_gets_its_namespace_and_routes() {
    let (v1, v3, other) = (Backend::start("v1").await, Backend::start("v3").await, Backend::start("other").await);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("mesh root");
    let (cert, key) = ca.server("sluice").write(dir.path(), "server");
    let ca_file = write_ca(&ca, dir.path(), "ca");
    let (proxy_cert, proxy_key) = ca.proxy("default", "productpage").write(dir.path(), "proxy");

    let tls = TlsOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        files: TlsFiles { cert, key, client_ca: ca_file.clone() },
        trust: Trust { trust_domain: "cluster.local".into(), shared_namespaces: vec![] },
        reload_interval: Duration::from_secs(1),
    };
    let sluice = Sluice::start(Options { tls: Some(tls), plaintext: false, ..Options::local() }).await.unwrap();
    let xds = sluice.xds_tls_addr().unwrap();
    assert_eq!(sluice.xds_addr(), xds, "with plaintext off the only xDS port is the mTLS one");
    let mut model = common::reviews_model(v1.port(), v3.port());
    let ratings = model.insert_service(Service::http("other", "ratings", 9080));
    model.push_endpoint(&ratings, Endpoint::ready("ratings-1", "127.0.0.1", 9080, other.port()));
    sluice.store().set_model(model);

    let args = BootstrapArgs {
        node_id: "productpage-1".into(),
        xds: xds.to_string().parse().unwrap(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_port: 0,
        tls: BootstrapTls {
            tls_cert: Some(proxy_cert),
            tls_key: Some(proxy_key),
            tls_ca: Some(ca_file),
            tls_server_name: None,
        },
        ..Default::default()
    };
    let envoy = Envoy::start(&render(&args));
    envoy.wait_live(Duration::from_secs(30)).await;
    let listen = envoy.listener_addr(Duration::from_secs(10)).await;
    sluice.wait_acked("productpage-1", Duration::from_secs(10)).await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get(listen, "reviews", &[]).await.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.insert(body);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v1", "v3"], "both versions serve through Envoy");

    let (status, _) = get(listen, "ratings.other", &[]).await.unwrap();
    assert_eq!(status, 404, "namespace `other` is not visible to a `default` certificate");
    let clusters = envoy.admin_get("/config_dump?resource=dynamic_active_clusters").await;
    assert!(clusters.contains("reviews.default.svc.cluster.local"), "{clusters}");
    assert!(!clusters.contains("ratings.other"), "{clusters}");
    assert_eq!(other.count(), 0);
}
