//! The Release API as users call it: REST JSON on the admin port and gRPC on the xDS port, against a real Sluice
//! on 127.0.0.1 with `reviews` (v1, v3) set from code.

use crate::common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice::model::*;
use sluice::proto::release_service_client::ReleaseServiceClient;
use sluice::proto::{self, ActRequest, ApplyReleaseRequest, ReleaseRef, SetWeightRequest};
use sluice::server::{Options, Sluice};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Code;

const RANGE: &str = "spec.traffic.canaryWeight: must be between 0 and 10000";

fn reviews() -> Model {
    common::reviews_model(19082, 19084)
}

pub(crate) async fn start() -> Sluice {
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    s.store().set_model(reviews());
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    s
}

/// One HTTP request to the admin port → (status, JSON body).
pub(crate) async fn call(admin: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().expect("answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

const PATH: &str = "/api/v1/namespaces/default/releases/reviews-v3";

fn policy(weight: u32) -> String {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "ReleasePolicy",
        "metadata": {"name": "reviews-v3", "namespace": "default"},
        "spec": {"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": weight}}
    })
    .to_string()
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn rest_lifecycle() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();

    let (code, view) = call(admin, "PUT", PATH, Some(&policy(1000))).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["kind"], "ReleasePolicy");
    assert_eq!(view["status"]["phase"], "Progressing");
    assert_eq!(view["status"]["weights"], json!({"v1": 9000, "v3": 1000}));

    let (code, list) = call(admin, "GET", "/api/v1/releases", None).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"][0]["metadata"]["name"], "reviews-v3");
    let (_, list) = call(admin, "GET", "/api/v1/namespaces/other/releases", None).await;
    assert_eq!(list["items"], json!([]));

    let (code, view) = call(admin, "GET", PATH, None).await;
    assert_eq!(code, 200);
    assert_eq!(view["spec"]["service"], "reviews");

    let (code, view) = call(admin, "POST", &format!("{PATH}/weight"), Some(r#"{"canaryWeight": 2000}"#)).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["status"]["weights"], json!({"v1": 8000, "v3": 2000}));

    let (_, view) = call(admin, "POST", &format!("{PATH}/pause"), None).await;
    assert_eq!(view["status"]["phase"], "Paused");
    let (_, view) = call(admin, "POST", &format!("{PATH}/resume"), None).await;
    assert_eq!(view["status"]["phase"], "Progressing");

    let (code, body) = call(admin, "POST", &format!("{PATH}/finalize"), None).await;
    assert_eq!(code, 409, "finalize before promote: {body}");
    assert!(error(&body).contains("promote or abort it first"), "{body}");

    let (_, view) = call(admin, "POST", &format!("{PATH}/promote"), None).await;
    assert_eq!(view["status"]["phase"], "Promoted");
    assert_eq!(view["status"]["weights"], json!({"v1": 0, "v3": 10000}));
    let (_, view) = call(admin, "POST", &format!("{PATH}/finalize"), None).await;
    assert_eq!(view["status"]["phase"], "Finalized");

    let (code, body) = call(admin, "DELETE", PATH, None).await;
    assert_eq!((code, body), (200, json!({})));
    let (code, body) = call(admin, "GET", PATH, None).await;
    assert_eq!(code, 404);
    assert!(error(&body).contains("not found"), "{body}");
    s.shutdown().await;
}

#[tokio::test]
async fn rest_refusals_name_the_field() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();

    let (code, body) = call(admin, "PUT", PATH, Some(&policy(20000))).await;
    assert_eq!(code, 400);
    assert_eq!(error(&body), RANGE);
    assert_eq!(body["field"], "spec.traffic.canaryWeight");

    let unknown = r#"{"spec":{"service":"reviews","stable":"v1","canary":"v3","trafic":{}}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(unknown)).await;
    assert_eq!(code, 400);
    assert!(error(&body).contains("unknown field `trafic`"), "{body}");

    let wrong_type = r#"{"spec":{"service":"reviews","stable":"v1","canary":"v3","traffic":{"canaryWeight":"20%"}}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(wrong_type)).await;
    assert_eq!(code, 400);
    assert!(error(&body).starts_with("spec.traffic.canaryWeight: invalid type"), "{body}");

    let analysis = r#"{"spec":{"service":"reviews","stable":"v1","canary":"v3",
        "analysis":{"interval":"10s","failureLimit":0,"successRate":{"min":0.99}}}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(analysis)).await;
    assert_eq!((code, body["field"].as_str()), (400, Some("spec.analysis.failureLimit")), "{body}");
    let analysis = r#"{"spec":{"service":"reviews","stable":"v1","canary":"v3","analysis":{"interval":"10s","successRate":{"min":"high"}}}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(analysis)).await;
    assert_eq!(code, 400);
    assert!(error(&body).starts_with("spec.analysis.successRate.min: invalid type"), "{body}");

    let (code, body) = call(admin, "PUT", PATH, Some("{not json")).await;
    assert_eq!(code, 400);
    assert!(error(&body).contains("not valid JSON"), "{body}");

    let missing = r#"{"spec":{"service":"details","stable":"v1","canary":"v3"}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(missing)).await;
    assert_eq!(code, 400);
    assert_eq!(body["field"], "spec.service");
    assert!(error(&body).contains("no Service default/details"), "{body}");

    let other = r#"{"metadata":{"name":"other"},"spec":{"service":"reviews","stable":"v1","canary":"v3"}}"#;
    let (code, body) = call(admin, "PUT", PATH, Some(other)).await;
    assert_eq!(code, 400);
    assert_eq!(body["field"], "metadata.name");
    let other_ns = r#"{"metadata":{"namespace":"prod"},"spec":{"service":"reviews","stable":"v1","canary":"v3"}}"#;
    let (_, body) = call(admin, "PUT", PATH, Some(other_ns)).await;
    assert_eq!(body["field"], "metadata.namespace");

    let (code, body) = call(admin, "POST", &format!("{PATH}/promote"), None).await;
    assert_eq!(code, 404, "unknown release: {body}");

    assert_eq!(call(admin, "PUT", PATH, Some(&policy(0))).await.0, 200);
    let (code, body) = call(admin, "POST", &format!("{PATH}/weight"), Some(r#"{"canaryWeight": 20000}"#)).await;
    assert_eq!((code, error(&body)), (400, RANGE));
    let (code, body) = call(admin, "POST", &format!("{PATH}/rollback"), None).await;
    assert_eq!(code, 404);
    assert!(error(&body).contains("pause, resume, promote, abort, finalize"), "{body}");
    s.shutdown().await;
}

fn reference() -> Option<ReleaseRef> {
    Some(ReleaseRef { namespace: "default".into(), name: "reviews-v3".into() })
}

fn spec_json(weight: u32) -> String {
    json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": weight}}).to_string()
}

fn release(spec_json: String) -> ApplyReleaseRequest {
    let release = proto::Release { namespace: "default".into(), name: "reviews-v3".into(), spec_json, status: None };
    ApplyReleaseRequest { release: Some(release) }
}

#[tokio::test]
async fn grpc_lifecycle_and_refusals() {
    let s = start().await;
    let mut c = ReleaseServiceClient::connect(format!("http://{}", s.xds_addr())).await.expect("connect");

    let err = c.get_release(reference().unwrap()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let err = c.apply_release(release(spec_json(20000))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(RANGE), "{err:?}");

    let unknown = r#"{"service":"reviews","stable":"v1","canary":"v3","traffic":{"weight":5}}"#.to_string();
    let err = c.apply_release(release(unknown)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("spec.traffic") && err.message().contains("unknown field `weight`"), "{err:?}");

    let missing = json!({"service": "details", "stable": "v1", "canary": "v3"}).to_string();
    let err = c.apply_release(release(missing)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("spec.service:"), "{err:?}");

    let r = c.apply_release(release(spec_json(1000))).await.expect("apply").into_inner();
    let status = r.status.expect("status");
    assert_eq!((status.phase.as_str(), status.canary_weight), ("Progressing", 1000));

    let list = c.list_releases(proto::ListReleasesRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.releases.len(), 1);
    assert_eq!(list.releases[0].name, "reviews-v3");

    let r = c.set_weight(SetWeightRequest { r#ref: reference(), canary_weight: 2000 }).await.unwrap().into_inner();
    assert_eq!(r.status.unwrap().weights, [("v1".to_string(), 8000), ("v3".to_string(), 2000)].into());
    let err = c.set_weight(SetWeightRequest { r#ref: reference(), canary_weight: 20000 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(RANGE), "{err:?}");

    let act = |verb: proto::Verb| ActRequest { r#ref: reference(), verb: verb as i32 };
    let phase = |r: proto::Release| r.status.unwrap().phase;
    assert_eq!(phase(c.act(act(proto::Verb::Pause)).await.unwrap().into_inner()), "Paused");
    assert_eq!(phase(c.act(act(proto::Verb::Resume)).await.unwrap().into_inner()), "Progressing");
    let err = c.act(act(proto::Verb::Finalize)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(phase(c.act(act(proto::Verb::Promote)).await.unwrap().into_inner()), "Promoted");
    assert_eq!(phase(c.act(act(proto::Verb::Finalize)).await.unwrap().into_inner()), "Finalized");
    let got = c.get_release(reference().unwrap()).await.unwrap().into_inner();
    assert_eq!(got.status.unwrap().weights["v3"], 10000);

    c.delete_release(reference().unwrap()).await.expect("delete");
    let err = c.act(act(proto::Verb::Promote)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    s.shutdown().await;
}

/// Every regex class Envoy's RE2 refuses, and an empty prefix, is refused with the field before any proxy sees
/// it (a route Envoy NACKs would freeze every later route change on that proxy).
#[tokio::test]
async fn rest_refuses_what_envoy_would_refuse() {
    let s = start().await;
    let admin = s.admin_addr().unwrap();
    let rule = |m: Value| {
        json!({"spec": {"service": "reviews", "stable": "v1", "canary": "v3",
            "traffic": {"rules": [{"name": "r", "to": "canary", "match": m}]}}})
        .to_string()
    };
    let field = "spec.traffic.rules[0].match";
    let cases = [
        (json!({"headers": [{"name": "x-user", "regex": "(?=jason)"}]}), "headers[0].regex", "invalid perl operator"),
        (json!({"headers": [{"name": "x-user", "regex": "(a)\\1"}]}), "headers[0].regex", "invalid escape"),
        (json!({"headers": [{"name": "x-user", "regex": "(ab"}]}), "headers[0].regex", "missing )"),
        (json!({"query": [{"name": "q", "regex": "a{1000}{1000}"}]}), "query[0].regex", "bad repetition"),
        (json!({"headers": [{"name": "x-user", "regex": "[a-z]{200}"}]}), "headers[0].regex", "program has"),
        (json!({"cookies": [{"name": "c", "regex": "[a-z]{90}"}]}), "cookies[0].regex", "whole cookie header"),
        (json!({"headers": [{"name": "x-user", "prefix": ""}]}), "headers[0].prefix", "must not be empty"),
        (json!({"query": [{"name": "q", "prefix": ""}]}), "query[0].prefix", "must not be empty"),
        (json!({"headers": [{"name": "x user", "exact": "a"}]}), "headers[0].name", "not a header name"),
    ];
    for (m, path, says) in cases {
        let (code, body) = call(admin, "PUT", PATH, Some(&rule(m.clone()))).await;
        assert_eq!((code, body["field"].as_str()), (400, Some(format!("{field}.{path}").as_str())), "{m}: {body}");
        assert!(error(&body).contains(says), "{m}: {body}");
    }
    // What RE2 takes within Envoy's limit is accepted.
    let ok = json!({"headers": [{"name": "x-user", "regex": "jason|ana"}], "cookies": [{"name": "c", "regex": "b.*"}]});
    assert_eq!(call(admin, "PUT", PATH, Some(&rule(ok))).await.0, 200);
    s.shutdown().await;
}
