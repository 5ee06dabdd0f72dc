//! One AdmissionReview in, one out (pure). `admission.k8s.io/v1` and `v1beta1` are answered in their own version.
//! A body that is not a review of a Pod being created is allowed unchanged, with the reason in [`Answer::reason`]
//! for the log and the `sluice_inject_requests_total{result}` counter: a broken injector never blocks pod creation
//! silently, and never crashes on input.

use super::{Outcome, Settings};
use base64::Engine;
use serde_json::{Value, json};

/// The response body and what happened, for the log and the metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub body: Value,
    /// `injected`, `skipped`, `refused`, `not-a-pod` or `invalid`.
    pub result: &'static str,
    /// Why (empty when injected).
    pub reason: String,
}

const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The answer to `body`, which the server already checked is non-empty JSON-typed content.
pub fn answer(body: &[u8], settings: &Settings) -> Answer {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(&Value::Null, format!("the body is not JSON: {e}")),
    };
    let api_version = review["apiVersion"].as_str().unwrap_or_default();
    if review["kind"] != "AdmissionReview" || !VERSIONS.contains(&api_version) {
        return invalid(
            &review,
            format!("not an AdmissionReview (apiVersion {api_version:?}, kind {})", review["kind"]),
        );
    }
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return invalid(&review, "the AdmissionReview has no request.uid".into());
    };
    let respond = |response: Value| json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response});
    let allowed = json!({"uid": uid, "allowed": true});
    let is_pod =
        request["kind"]["kind"] == "Pod" && request["resource"]["resource"].as_str().is_none_or(|r| r == "pods");
    if !is_pod || request["subResource"].as_str().is_some_and(|s| !s.is_empty()) {
        let kind = request["kind"]["kind"].as_str().unwrap_or("?");
        return Answer { body: respond(allowed), result: "not-a-pod", reason: format!("{kind} is not a Pod") };
    }
    if request["operation"].as_str().is_some_and(|op| op != "CREATE") {
        let reason = format!("operation {} (only CREATE is injected)", request["operation"]);
        return Answer { body: respond(allowed), result: "skipped", reason };
    }
    let pod = &request["object"];
    if !pod.is_object() {
        return Answer { body: respond(allowed), result: "invalid", reason: "request.object is not a Pod".into() };
    }
    let namespace =
        request["namespace"].as_str().or_else(|| pod["metadata"]["namespace"].as_str()).unwrap_or("default");
    match super::inject(pod, namespace, settings) {
        Outcome::Injected { ops, warnings } => {
            let patch = base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string());
            let mut response = json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch});
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            Answer { body: respond(response), result: "injected", reason: String::new() }
        }
        Outcome::Skipped(skip) => Answer { body: respond(allowed), result: "skipped", reason: skip.to_string() },
        Outcome::Refused(bad) => {
            let message = format!("sidecar injection: {bad}");
            let response = json!({"uid": uid, "allowed": false, "status": {"code": 400, "message": message}});
            Answer { body: respond(response), result: "refused", reason: bad.to_string() }
        }
    }
}

/// Allowed, unchanged: a request the injector cannot read must not block pod creation.
fn invalid(review: &Value, reason: String) -> Answer {
    let version = review["apiVersion"].as_str().filter(|v| VERSIONS.contains(v)).unwrap_or(VERSIONS[0]);
    let uid = review["request"]["uid"].as_str().unwrap_or_default();
    let body = json!({"apiVersion": version, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": true}});
    Answer { body, result: "invalid", reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(version: &str, kind: &str, object: Value) -> Vec<u8> {
        json!({
            "apiVersion": version, "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "shop", "operation": "CREATE", "object": object},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_pod_gets_a_base64_json_patch_in_the_reviews_own_version() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}});
        for version in VERSIONS {
            let a = answer(&review(version, "Pod", pod.clone()), &Settings::default());
            assert_eq!(a.result, "injected");
            assert_eq!(a.body["apiVersion"], version);
            let r = &a.body["response"];
            assert_eq!(
                (r["uid"].as_str(), r["allowed"].as_bool(), r["patchType"].as_str()),
                (Some("u-1"), Some(true), Some("JSONPatch"))
            );
            let patch = base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap();
            let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
            assert!(ops.iter().any(|o| o["value"]["name"] == "sluice-proxy"), "{ops:?}");
        }
    }

    #[test]
    fn what_is_not_a_pod_creation_is_allowed_unchanged() {
        let not_review = answer(br#"{"kind": "Pod"}"#, &Settings::default());
        assert_eq!((not_review.result, not_review.body["response"]["allowed"].as_bool()), ("invalid", Some(true)));
        assert!(not_review.body["response"].get("patch").is_none());
        let garbage = answer(b"\x00\x01", &Settings::default());
        assert_eq!(garbage.result, "invalid");
        let service = answer(&review(VERSIONS[0], "Service", json!({})), &Settings::default());
        assert_eq!(service.result, "not-a-pod");
        assert!(service.body["response"].get("patch").is_none());
    }

    #[test]
    fn a_bad_annotation_refuses_the_pod_naming_it() {
        let pod = json!({"metadata": {"annotations": {"sidecar.istio.io/proxyCPU": "lots"}},
                         "spec": {"containers": [{"name": "app"}]}});
        let a = answer(&review(VERSIONS[0], "Pod", pod), &Settings::default());
        assert_eq!(a.result, "refused");
        assert_eq!(a.body["response"]["allowed"], false);
        let message = a.body["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("sidecar.istio.io/proxyCPU"), "{message}");
    }
}
