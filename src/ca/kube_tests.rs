//! The CA's API calls against kube's `tower_test` mock of the API server: TokenReviews (what is sent, how each
//! answer is judged) and the root's Secret (created once; a lost race reads the winner's).

use super::{TokenReviewer, from_secret};
use crate::ca::authn::{Authenticate, Refusal};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type Server = Handle<Request<Body>, Response<Body>>;

/// The next request: method, path and JSON body; answered with `status` and `respond`.
async fn next(server: &mut Server, status: StatusCode, respond: Value) -> (Method, String, Value) {
    let (request, reply) = server.next_request().await.expect("a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
    let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(&respond).unwrap()));
    reply.send_response(response.unwrap());
    (parts.method, parts.uri.path().to_string(), body)
}

fn review_answer(status: Value) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status})
}

/// Reviews `token` against a mock that answers `status`; returns what was sent and the verdict.
async fn review(status: Value) -> (Method, String, Value, Result<crate::ca::authn::Caller, Refusal>) {
    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let reviewer = TokenReviewer::new(Client::new(service, "default"), vec!["sluice-ca".into(), "istio-ca".into()]);
    let task = tokio::spawn(async move { reviewer.authenticate("the-token").await });
    let (method, path, body) = next(&mut server, StatusCode::CREATED, review_answer(status)).await;
    (method, path, body, task.await.unwrap())
}

#[tokio::test]
async fn a_valid_token_names_its_service_account() {
    let ok = json!({"authenticated": true, "audiences": ["istio-ca"],
                    "user": {"username": "system:serviceaccount:shop:cart"}});
    let (method, path, body, verdict) = review(ok).await;
    assert_eq!((method, path.as_str()), (Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews"));
    assert_eq!(body["spec"]["token"], "the-token");
    assert_eq!(body["spec"]["audiences"], json!(["sluice-ca", "istio-ca"]));
    let caller = verdict.unwrap();
    assert_eq!((caller.namespace.as_str(), caller.service_account.as_str()), ("shop", "cart"));
}

#[tokio::test]
async fn a_rejected_expired_or_foreign_token_is_refused_by_reason() {
    let (_, _, _, v) = review(json!({"authenticated": false, "error": "invalid bearer token"})).await;
    assert!(matches!(&v, Err(Refusal::Invalid(m)) if m.contains("invalid bearer token")), "{v:?}");
    let (_, _, _, v) =
        review(json!({"authenticated": false, "error": "[invalid bearer token, token has expired]"})).await;
    assert_eq!(v.unwrap_err().reason(), "expired-token");
    let other = json!({"authenticated": true, "audiences": ["vault"],
                       "user": {"username": "system:serviceaccount:shop:cart"}});
    let (_, _, _, v) = review(other).await;
    assert!(matches!(&v, Err(Refusal::Audience { got, .. }) if got == &["vault"]), "{v:?}");
    let none = json!({"authenticated": true, "user": {"username": "system:serviceaccount:shop:cart"}});
    assert_eq!(review(none).await.3.unwrap_err().reason(), "wrong-audience", "no audience answered: refused");
    let user = json!({"authenticated": true, "audiences": ["sluice-ca"], "user": {"username": "alice"}});
    assert!(matches!(review(user).await.3, Err(Refusal::NotServiceAccount(_))));
}

#[tokio::test]
async fn an_api_error_is_unavailable_not_a_verdict() {
    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let reviewer = TokenReviewer::new(Client::new(service, "default"), vec!["sluice-ca".into()]);
    let task = tokio::spawn(async move { reviewer.authenticate("t").await });
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                           "reason": "Forbidden", "message": "tokenreviews is forbidden"});
    next(&mut server, StatusCode::FORBIDDEN, forbidden).await;
    assert_eq!(task.await.unwrap().unwrap_err().reason(), "review-failed");
}

#[tokio::test]
async fn the_root_secret_is_created_once_and_a_lost_race_reads_the_winner() {
    let path = "/api/v1/namespaces/sluice-system/secrets";
    let (service, mut server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let task = tokio::spawn(async move { from_secret(&client, "sluice-system/sluice-mesh-ca").await });
    let not_found =
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"});
    let (method, p, _) = next(&mut server, StatusCode::NOT_FOUND, not_found).await;
    assert_eq!((method, p), (Method::GET, format!("{path}/sluice-mesh-ca")));
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                          "reason": "AlreadyExists"});
    let (method, p, body) = next(&mut server, StatusCode::CONFLICT, conflict).await;
    assert_eq!((method, p.as_str()), (Method::POST, path));
    assert!(body["data"]["ca-key.pem"].is_string(), "the key is stored in the Secret: {body}");
    // The winner's root, read back.
    let winner =
        crate::ca::Ca::generate("winner", std::time::SystemTime::now(), std::time::Duration::from_secs(60)).unwrap();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "sluice-mesh-ca", "namespace": "sluice-system"},
                        "data": {"ca-cert.pem": b64(&winner.cert_pem), "ca-key.pem": b64(&winner.key_pem)}});
    let (method, _, _) = next(&mut server, StatusCode::OK, secret).await;
    assert_eq!(method, Method::GET);
    assert_eq!(task.await.unwrap().unwrap().root_pem, winner.cert_pem);
}
