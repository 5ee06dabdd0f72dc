//! One election round ([`try_hold`]) against kube's `tower_test` mock of the API server: each test answers the
//! requests a round makes and checks what it asked for (method, path, precondition, body) and what it decided.

use super::{LeaseConfig, try_hold};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases/sluice";

type Server = Handle<Request<Body>, Response<Body>>;

fn config() -> LeaseConfig {
    LeaseConfig {
        namespace: "sluice".into(),
        name: "sluice".into(),
        identity: "me".into(),
        duration: Duration::from_secs(15),
    }
}

/// Starts one round against a mock server; the test answers its requests through the returned handle.
fn round() -> (JoinHandle<Result<Option<String>, kube::Error>>, Server) {
    let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
    let api = Api::<Lease>::namespaced(Client::new(service, "default"), "sluice");
    (tokio::spawn(async move { try_hold(&api, &config()).await }), server)
}

/// The next request: its method, path and JSON body (Null when empty); `respond` answers it.
async fn next(server: &mut Server, status: StatusCode, respond: Value) -> (Method, String, Value, Option<String>) {
    let (request, reply) = server.next_request().await.expect("the round sends a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    let content_type = parts.headers.get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_string());
    let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(&respond).unwrap()));
    reply.send_response(response.unwrap());
    (parts.method, parts.uri.path().to_string(), body, content_type)
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

/// A stored Lease held by `holder`, renewed `age` ago, at resourceVersion 7.
fn lease(holder: &str, age: Duration) -> Value {
    let renewed = Timestamp::now() - SignedDuration::try_from(age).unwrap();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "sluice", "namespace": "sluice", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string(),
                 "leaseTransitions": 2},
    })
}

#[tokio::test]
async fn an_absent_lease_is_created_with_this_replica_as_holder() {
    let (round, mut server) = round();
    let (method, path, _, _) = next(&mut server, StatusCode::NOT_FOUND, status(404, "NotFound")).await;
    assert_eq!((method, path.as_str()), (Method::GET, PATH));
    let (method, path, body, _) = next(&mut server, StatusCode::CREATED, lease("me", Duration::ZERO)).await;
    assert_eq!((method, path.as_str()), (Method::POST, "/apis/coordination.k8s.io/v1/namespaces/sluice/leases"));
    assert_eq!(body["metadata"]["name"], "sluice");
    assert_eq!((&body["spec"]["holderIdentity"], &body["spec"]["leaseDurationSeconds"]), (&json!("me"), &json!(15)));
    assert_eq!(round.await.unwrap().expect("no error").as_deref(), Some("me"), "the creator leads");
}

#[tokio::test]
async fn losing_the_create_race_does_not_lead() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::NOT_FOUND, status(404, "NotFound")).await;
    next(&mut server, StatusCode::CONFLICT, status(409, "AlreadyExists")).await;
    assert_eq!(round.await.unwrap().expect("a lost race is no error"), None, "the winner is not known yet");
}

#[tokio::test]
async fn a_lease_another_replica_renewed_recently_is_left_alone() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::OK, lease("other", Duration::from_secs(5))).await;
    assert_eq!(round.await.unwrap().expect("no error").as_deref(), Some("other"));
    assert!(server.next_request().await.is_none(), "no write to a lease another replica holds");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_the_read_version_as_precondition() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::OK, lease("other", Duration::from_secs(20))).await;
    let (method, path, body, content_type) = next(&mut server, StatusCode::OK, lease("me", Duration::ZERO)).await;
    assert_eq!((method, path.as_str()), (Method::PATCH, PATH));
    assert_eq!(content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(body["metadata"]["resourceVersion"], "7", "the takeover is conditional on what was read");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseTransitions"], 3, "a takeover counts a transition");
    assert!(body["spec"]["acquireTime"].is_string());
    assert_eq!(round.await.unwrap().expect("no error").as_deref(), Some("me"));
}

#[tokio::test]
async fn the_holder_renews_without_counting_a_transition() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::OK, lease("me", Duration::from_secs(5))).await;
    let (method, _, body, _) = next(&mut server, StatusCode::OK, lease("me", Duration::ZERO)).await;
    assert_eq!(method, Method::PATCH);
    assert!(body["spec"]["renewTime"].is_string());
    assert!(body["spec"].get("leaseTransitions").is_none() && body["spec"].get("acquireTime").is_none(), "{body}");
    assert_eq!(round.await.unwrap().expect("no error").as_deref(), Some("me"));
}

#[tokio::test]
async fn a_takeover_another_replica_won_first_does_not_lead() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::OK, lease("other", Duration::from_secs(20))).await;
    next(&mut server, StatusCode::CONFLICT, status(409, "Conflict")).await;
    assert_eq!(round.await.unwrap().expect("a lost race is no error"), None);
}

#[tokio::test]
async fn an_api_server_error_is_returned_not_taken_as_an_answer() {
    let (round, mut server) = round();
    next(&mut server, StatusCode::INTERNAL_SERVER_ERROR, status(500, "InternalError")).await;
    let error = round.await.unwrap().expect_err("a 500 is an error");
    assert!(matches!(&error, kube::Error::Api(s) if s.code == 500), "{error}");
}
