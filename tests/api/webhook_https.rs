//! The injection webhook over HTTPS, as the API server meets it: `sluice serve --inject --state-dir D` signs its own
//! serving certificate with a CA it keeps in D, and a real HTTPS client (Python's `ssl`, OpenSSL, verifying the
//! chain against `D/webhook-ca.pem` and the host name) sends AdmissionReviews and bad input:
//!
//! ```text
//!  a Pod CREATE review ─────────────▶ 200 allowed, JSONPatch       wrong Content-Type ─▶ 415
//!  JSON that is not a review ───────▶ 200 allowed, no patch         empty body ────────▶ 400
//!  bytes that are not JSON ─────────▶ 200 allowed, no patch         7 MiB body ────────▶ 413
//!  a Deployment review ─────────────▶ 200 allowed, no patch         GET /inject ───────▶ 405
//!  a client trusting another CA ────▶ handshake refused (certificate verify failed)
//! ```
//! Each answer is counted in `sluice_inject_requests_total{result}`, the process stays up (`/readyz` 200), and a
//! restart reuses the CA (same `webhook-ca.pem`), so a `caBundle` set once stays valid.

use crate::common::child::SluiceChild;
use crate::common::free_addrs;
use crate::common::http::{client, get_with};
use crate::common::https::{ask, wait_listening};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const REVIEWS_POD: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"generateName": "reviews-v1-", "namespace": "bookinfo", "labels": {"app": "reviews", "version": "v1"}},
  "spec": {"serviceAccountName": "bookinfo-reviews",
           "containers": [{"name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                           "ports": [{"containerPort": 9080}]}]}}"#;

fn review(kind: &str, object: Value) -> String {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
           "request": {"uid": format!("uid-{kind}"), "kind": {"group": "", "version": "v1", "kind": kind},
                       "resource": {"group": "", "version": "v1", "resource": if kind == "Pod" { "pods" } else { "deployments" }},
                       "namespace": "bookinfo", "operation": "CREATE", "object": object}})
    .to_string()
}

fn start_args(config: &Path, state: &Path, inject: SocketAddr) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into(), "--state-dir".into(), state.into()];
    for a in ["--inject", "--inject-addr", &inject.to_string(), "--inject-dns-names", "localhost,sluice.test"] {
        args.push(a.into());
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_over_https_with_a_certificate_chained_to_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = (dir.path().join("mesh"), dir.path().join("state"));
    std::fs::create_dir_all(&config).unwrap();
    let [xds, admin, inject] = free_addrs();
    let log = dir.path().join("sluice.log");
    let sluice = SluiceChild::start_with(&start_args(&config, &state, inject), &[], xds, admin, log.clone()).await;
    wait_listening(inject).await;
    let ca = state.join("webhook-ca.pem");
    let ca_pem = std::fs::read_to_string(&ca).expect("Sluice wrote its webhook CA in the state directory");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(state.join("webhook-ca-key.pem")).expect("the CA key").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600, "the CA key is readable by its owner only");

    // Another CA, which the server's certificate does not chain to.
    let other = dir.path().join("other-ca.pem");
    let stranger =
        sluice::ca::Ca::generate("not sluice", std::time::SystemTime::now(), Duration::from_secs(3600)).expect("a CA");
    std::fs::write(&other, &stranger.cert_pem).unwrap();

    let json_ct = json!({"Content-Type": "application/json"});
    let requests = json!([
        {"path": "/inject", "headers": json_ct, "body": review("Pod", serde_json::from_str(REVIEWS_POD).unwrap())},
        {"path": "/inject", "headers": {"Content-Type": "text/plain"}, "body": review("Pod", json!({}))},
        {"path": "/inject", "headers": json_ct, "body": ""},
        {"path": "/inject", "headers": json_ct, "body": "{\"hello\": \"world\"}"},
        {"path": "/inject", "headers": json_ct, "body": "{{{ not json"},
        {"path": "/inject", "headers": json_ct, "body": review("Deployment", json!({"kind": "Deployment"}))},
        {"path": "/inject", "headers": json_ct, "repeat": [" ", 7 * 1024 * 1024]},
        {"method": "GET", "path": "/inject"},
        {"path": "/inject", "headers": json_ct, "body": "{}", "cafile": other},
        {"path": "/inject", "headers": {"Content-Type": "application/json; charset=utf-8"},
         "body": review("Pod", serde_json::from_str(REVIEWS_POD).unwrap())},
    ]);
    let answers = ask(inject, &ca, &requests);
    for (i, a) in answers.iter().enumerate() {
        println!("{i}: {}", a.to_string().chars().take(300).collect::<String>());
    }
    let status = |i: usize| answers[i]["status"].as_u64().unwrap_or_else(|| panic!("answer {i}: {}", answers[i]));
    let body = |i: usize| -> Value { serde_json::from_str(answers[i]["body"].as_str().unwrap()).expect("JSON body") };

    // The review: allowed, with a JSONPatch; the certificate names what --inject-dns-names asked for.
    assert_eq!(status(0), 200);
    let response = &body(0)["response"];
    assert_eq!((response["uid"].as_str(), response["allowed"].as_bool()), (Some("uid-Pod"), Some(true)));
    assert_eq!(response["patchType"], "JSONPatch");
    assert!(response["patch"].as_str().is_some_and(|p| p.len() > 100), "{response}");
    assert_eq!(answers[0]["peer_san"], json!(["localhost", "sluice.test"]));
    assert_eq!(status(1), 415, "wrong Content-Type");
    assert_eq!(status(2), 400, "empty body");
    for (i, what) in [(3, "JSON that is not an AdmissionReview"), (4, "not JSON"), (5, "a Deployment")] {
        assert_eq!(status(i), 200, "{what}");
        let response = &body(i)["response"];
        assert_eq!(response["allowed"], true, "{what} is allowed: {response}");
        assert!(response.get("patch").is_none(), "{what} gets no patch: {response}");
    }
    // A body over the limit: 413, or, when the server's answer and close overtake the client still writing the
    // 7 MiB (a loaded host), the connection closed under the client: refused either way, never read whole.
    let closed =
        answers[6]["error"].as_str().is_some_and(|e| ["EOF", "reset", "Broken pipe"].iter().any(|m| e.contains(m)));
    assert!(closed || status(6) == 413, "a body over the limit: {}", answers[6]);
    assert_eq!(status(7), 405, "GET");
    let refused = answers[8]["error"].as_str().unwrap_or_default();
    assert!(refused.contains("CERTIFICATE_VERIFY_FAILED"), "a client trusting another CA: {}", answers[8]);
    assert_eq!(status(9), 200, "Content-Type with parameters");
    assert_eq!(body(9)["response"]["patchType"], "JSONPatch");

    // Counted by result, and still up.
    let http = client();
    let (code, metrics) = get_with(&http, admin, "localhost", "/metrics", &[]).await.expect("/metrics");
    assert_eq!(code, 200);
    for (result, n) in [("injected", 2), ("unsupported-media-type", 1), ("empty", 1), ("invalid", 2), ("not-a-pod", 1)]
    {
        let line = format!("sluice_inject_requests_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in /metrics:\n{}", grep(&metrics, "sluice_inject"));
    }
    assert_eq!(get_with(&http, admin, "localhost", "/readyz", &[]).await.expect("/readyz").0, 200);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("not an AdmissionReview"), "the reason is logged:\n{logged}");

    // A restart reuses the CA: a caBundle set once stays valid.
    sluice.kill9();
    let sluice = SluiceChild::start_with(&start_args(&config, &state, inject), &[], xds, admin, log).await;
    wait_listening(inject).await;
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), ca_pem, "the restarted Sluice kept its CA");
    let again = ask(
        inject,
        &ca,
        &json!([{"path": "/inject", "headers": json_ct, "body": review("Pod", serde_json::from_str(REVIEWS_POD).unwrap())}]),
    );
    assert_eq!(again[0]["status"], 200, "{}", again[0]);
    drop(sluice);
}

fn grep(text: &str, needle: &str) -> String {
    text.lines().filter(|l| l.contains(needle)).collect::<Vec<_>>().join("\n")
}
