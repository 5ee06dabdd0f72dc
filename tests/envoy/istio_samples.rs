//! The real `sluice serve` binary on a config directory that holds Istio's samples as its tasks leave them, and
//! a real Envoy routing through it:
//!
//! - two VirtualServices for `reviews` (to v1, then to v3): `serve` starts, logs the conflict naming both objects
//!   and their files, and every request goes to v1 (the first loaded);
//! - then `destination-rule-all-mtls.yaml` is added: it applies (ISTIO_MUTUAL is translated), and this Envoy,
//!   which has no workload mTLS (`SLUICE_MTLS`), keeps routing to v1 in plaintext;
//! - then a DestinationRule with `tls.credentialName` (not translated): `serve` logs the refusal naming the field
//!   and Envoy keeps routing on the last good config.

use crate::common;

use common::http::{client, get_with};
use common::istio_samples::{DESTINATION_RULE_ALL_MTLS, bookinfo_services, reviews_to};
use common::{Backend, SluiceChild, free_addrs, load, start_envoy};
use std::path::Path;
use std::time::{Duration, Instant};

fn workloads(v1: u16, v3: u16) -> String {
    let mut yaml = String::new();
    for (version, port) in [("v1", v1), ("v3", v3)] {
        yaml.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {{name: reviews-{version}, labels: \
             {{app: reviews, version: {version}}}}}\nspec: {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
        ));
    }
    yaml.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: \
         reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v3, labels: {version: v3}}\n",
    );
    yaml
}

/// Waits until the log file holds a line containing every one of `parts`; returns that line.
async fn log_line(log: &Path, parts: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no log line with {parts:?} in 10 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_with_two_virtual_services_applies_the_all_mtls_sample_and_refuses_a_credential_name() {
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("bookinfo.yaml"), format!("{}{}", bookinfo_services(), workloads(v1.port(), v3.port())))
        .unwrap();
    std::fs::write(config.join("virtual-service-reviews-v1.yaml"), reviews_to("reviews", "v1")).unwrap();
    std::fs::write(config.join("virtual-service-reviews-v3.yaml"), reviews_to("reviews-v3", "v3")).unwrap();

    let [xds, admin] = free_addrs();
    let log = dir.path().join("sluice.log");
    let sluice = SluiceChild::start(&config, xds, admin, log.clone(), &[]).await;
    let conflict = log_line(&log, &["conflict:", "default/reviews-v3", "default/reviews ("]).await;
    assert!(
        conflict.contains("virtual-service-reviews-v3.yaml:3")
            && conflict.contains("virtual-service-reviews-v1.yaml:3"),
        "both objects are named with their files: {conflict}"
    );

    let text = get_with(&client(), admin, "localhost", "/metrics", &[]).await.expect("/metrics").1;
    assert!(text.lines().any(|l| l == "sluice_config_conflicts{kind=\"VirtualService\"} 1"), "{text}");

    let (_envoy, listen) = start_envoy(xds, "envoy-1", false).await;
    let before = load(listen, "reviews", 400, 8).await;
    assert_eq!((before.of("v1"), before.total()), (400, 400), "the first loaded VirtualService routes: {before:?}");

    let loads = || std::fs::read_to_string(&log).unwrap_or_default().matches("file source: config loaded").count();
    let loaded_before = loads();
    // As Istio's task applies it: the sample replaces the plain rule named `reviews` (one object per name).
    let services = format!("{}{}", bookinfo_services(), workloads(v1.port(), v3.port()));
    let without_rule = &services[..services.rfind("---\napiVersion: networking.istio.io/v1").unwrap()];
    std::fs::write(config.join("bookinfo.yaml"), without_rule).unwrap();
    std::fs::write(config.join("destination-rule-all-mtls.yaml"), DESTINATION_RULE_ALL_MTLS).unwrap();
    let started = Instant::now();
    while loads() <= loaded_before {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(20), "the all-mtls sample was not applied in 20 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = load(listen, "reviews", 400, 8).await;
    assert_eq!((after.of("v1"), after.total()), (400, 400), "a proxy without SLUICE_MTLS keeps plaintext: {after:?}");

    let secret = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings-secret}\n\
                  spec:\n  host: ratings\n  trafficPolicy:\n    tls: {mode: SIMPLE, credentialName: ratings-ca}\n";
    std::fs::write(config.join("ratings-secret.yaml"), secret).unwrap();
    let refusal =
        log_line(&log, &["ratings-secret.yaml:7", "default/ratings-secret", "spec.trafficPolicy.tls.credentialName"])
            .await;
    println!("{refusal}");
    log_line(&log, &["keeping the last valid config"]).await;
    let last = load(listen, "reviews", 400, 8).await;
    assert_eq!((last.of("v1"), last.total()), (400, 400), "the last good config keeps serving: {last:?}");
    drop(sluice);
}
