//! The injection webhook's certificates in a cluster (the kmock API emulator), as `kubectl apply -f deploy/` leaves
//! them to Sluice: the MutatingWebhookConfiguration of `deploy/sluice.yaml` is applied without a `caBundle`, and
//!
//! ```text
//!  replica-a: serve --kube --inject ─▶ no Secret: mints a CA + serving cert ─▶ POST Secret sluice-system/sluice-webhook-certs
//!             (lease holder) ─▶ PATCH every webhook's caBundle = the CA        ─▶ HTTPS verified against that CA
//!  replica-b: serve --kube --inject ─▶ reads the Secret, mints nothing          ─▶ HTTPS verified against the same CA
//!  caBundle erased by someone ─▶ the lease holder sets it again (every 10 s)
//! ```

use crate::common;

use common::https::{ask, wait_listening};
use common::kmock::{Kmock, resource_version};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CONFIG: &str = "sluice-sidecar-injector";

/// The MutatingWebhookConfiguration as `deploy/sluice.yaml` has it.
fn webhook_config() -> Value {
    let text = std::fs::read_to_string(common::repo().join("deploy/sluice.yaml")).expect("deploy/sluice.yaml");
    let mut config = serde_yaml::Deserializer::from_str(&text)
        .map(|de| Value::deserialize(de).expect("sluice.yaml parses"))
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("deploy/sluice.yaml has a MutatingWebhookConfiguration");
    config["metadata"]["resourceVersion"] = json!(resource_version());
    config
}

fn bundles(config: &MutatingWebhookConfiguration) -> Vec<Option<String>> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    webhooks.iter().map(|w| w.client_config.ca_bundle.as_ref().map(|b| String::from_utf8_lossy(&b.0).into())).collect()
}

async fn poll<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(t) = f().await {
            return (t, started.elapsed());
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn review() -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                       "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "bookinfo",
                       "operation": "CREATE",
                       "object": {"metadata": {"labels": {"app": "reviews", "version": "v1"}},
                                  "spec": {"containers": [{"name": "reviews", "image": "reviews",
                                                           "ports": [{"containerPort": 9080}]}]}}}})
    .to_string()
}

/// One review to `addr`, the chain verified against `ca`: injected.
fn injects(addr: std::net::SocketAddr, ca: &std::path::Path, who: &str) {
    let answers = ask(
        addr,
        ca,
        &json!([{"path": "/inject", "headers": {"Content-Type": "application/json"},
                                           "body": review()}]),
    );
    assert_eq!(answers[0]["status"], 200, "{who}: {}", answers[0]);
    let body: Value = serde_json::from_str(answers[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["response"]["patchType"], "JSONPatch", "{who}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_webhook_ca_from_a_secret_and_the_leader_keeps_the_ca_bundle_set() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let dir = tempfile::tempdir().unwrap();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let applied = serde_json::from_value(webhook_config()).expect("a MutatingWebhookConfiguration");
    configs.create(&PostParams::default(), &applied).await.expect("apply the webhook configuration");
    assert!(bundles(&applied).iter().all(Option::is_none), "deploy/sluice.yaml leaves caBundle to Sluice");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "sluice-system");

    let [inject_a, inject_b] = common::free_addrs();
    let flags = |addr: std::net::SocketAddr| {
        ["--inject", "--inject-addr", &addr.to_string(), "--inject-dns-names", "localhost"].map(String::from)
    };
    let a_flags = flags(inject_a);
    let a_flags: Vec<&str> = a_flags.iter().map(String::as_str).collect();
    let a = kmock.replica_with("replica-a", 2, dir.path(), &a_flags).await;
    wait_listening(inject_a).await;

    let (ca_pem, took) = poll("the Secret", Duration::from_secs(10), async || {
        let s = secrets.get_opt("sluice-webhook-certs").await.expect("GET Secret")?;
        let data = s.data?;
        Some(String::from_utf8(data.get("ca.crt")?.0.clone()).expect("PEM"))
    })
    .await;
    println!("Secret sluice-system/sluice-webhook-certs written {took:?} after replica-a was ready");
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"), "{ca_pem}");
    let (_, took) = poll("caBundle on every webhook", Duration::from_secs(15), async || {
        let config = configs.get(CONFIG).await.expect("GET the webhook configuration");
        let b = bundles(&config);
        (b.len() == 4 && b.iter().all(|b| b.as_deref() == Some(ca_pem.as_str()))).then_some(())
    })
    .await;
    println!("caBundle set on the 4 webhooks {took:?} after the Secret was seen");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &ca_pem).unwrap();
    injects(inject_a, &ca, "replica-a");

    // A second replica reuses the Secret: no second CA, and its serving certificate chains to the same one.
    let b_flags = flags(inject_b);
    let b_flags: Vec<&str> = b_flags.iter().map(String::as_str).collect();
    let b = kmock.replica_with("replica-b", 2, dir.path(), &b_flags).await;
    wait_listening(inject_b).await;
    injects(inject_b, &ca, "replica-b");
    let stored = secrets.get("sluice-webhook-certs").await.expect("GET Secret");
    assert_eq!(stored.data.unwrap()["ca.crt"].0, ca_pem.as_bytes(), "the Secret still holds the first CA");
    let b_log = std::fs::read_to_string(dir.path().join("replica-b.log")).unwrap();
    assert!(b_log.contains("using the injection webhook certificate stored by a replica"), "{b_log}");
    assert!(!b_log.contains("created the injection webhook's CA"), "{b_log}");

    // Someone erases the caBundle: the lease holder sets it again.
    let mut erased = configs.get(CONFIG).await.unwrap();
    for w in erased.webhooks.as_mut().unwrap() {
        w.client_config.ca_bundle = None;
    }
    let patch = json!({"metadata": {"resourceVersion": resource_version()}, "webhooks": erased.webhooks});
    configs.patch(CONFIG, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("erase the caBundle");
    assert!(bundles(&configs.get(CONFIG).await.unwrap()).iter().all(Option::is_none), "erased");
    let (_, took) = poll("caBundle set again", Duration::from_secs(15), async || {
        let b = bundles(&configs.get(CONFIG).await.unwrap());
        b.iter().all(|b| b.as_deref() == Some(ca_pem.as_str())).then_some(())
    })
    .await;
    println!("caBundle set again {took:?} after it was erased");
    drop((a, b));
}
