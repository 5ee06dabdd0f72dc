//! Release changes need the API token (REST, gRPC and the CLI), reads stay open, and a browser page from another
//! origin cannot change anything. A real Sluice on 127.0.0.1 with `--api-token-file` set.

use crate::common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice::proto::release_service_client::ReleaseServiceClient;
use sluice::proto::{ReleaseRef, SetWeightRequest};
use sluice::server::{Options, Sluice};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

const PATH: &str = "/api/v1/namespaces/default/releases/reviews-v3";

async fn start(token_file: &Path) -> Sluice {
    let options = Options { api_token_file: Some(token_file.to_path_buf()), ..Options::local() };
    let s = Sluice::start(options).await.expect("start sluice");
    s.store().set_model(common::reviews_model(19082, 19084));
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    s
}

/// One HTTP request with extra headers → (status, JSON body); a 401 must carry `WWW-Authenticate: Bearer`.
async fn call(admin: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().expect("answer");
    let status = resp.status().as_u16();
    if status == 401 {
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}")))
}

fn policy(weight: u32) -> String {
    json!({
        "metadata": {"name": "reviews-v3", "namespace": "default"},
        "spec": {"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": weight}}
    })
    .to_string()
}

#[tokio::test]
async fn rest_mutations_need_the_token_and_the_admin_origin() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken-one\n").unwrap();
    let s = start(&token_file).await;
    let admin = s.admin_addr().unwrap();
    let bearer = [("authorization", "Bearer t0ken-one")];

    let (code, body) = call(admin, "PUT", PATH, &[], &policy(1000)).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Authorization: Bearer"), "{body}");
    let (code, body) = call(admin, "PUT", PATH, &[("authorization", "Bearer wrong")], &policy(1000)).await;
    assert_eq!(code, 401, "{body}");
    assert!(s.releases().list(None).is_empty(), "nothing was created by refused calls");

    let (code, body) = call(admin, "PUT", PATH, &bearer, &policy(1000)).await;
    assert_eq!(code, 200, "{body}");
    let same_origin = format!("http://{admin}");
    let with_origin = [bearer[0], ("origin", same_origin.as_str())];
    let (code, body) = call(admin, "POST", &format!("{PATH}/weight"), &with_origin, r#"{"canaryWeight": 2000}"#).await;
    assert_eq!((code, &body["status"]["weights"]["v3"]), (200, &json!(2000)), "{body}");

    // A page elsewhere that somehow holds the token is still refused by its Origin.
    let cross = [bearer[0], ("origin", "http://evil.example")];
    let (code, body) = call(admin, "POST", &format!("{PATH}/promote"), &cross, "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Origin `http://evil.example`"), "{body}");
    let (code, _) = call(admin, "DELETE", PATH, &[("sec-fetch-site", "cross-site"), bearer[0]], "").await;
    assert_eq!(code, 403);

    // Every mutation on the admin port passes the same gate, the log level included.
    let (code, body) = call(admin, "PUT", "/debug/loglevel", &[], "debug").await;
    assert_eq!(code, 401, "{body}");

    // Reads stay open.
    let (code, body) = call(admin, "GET", PATH, &[], "").await;
    assert_eq!((code, &body["status"]["phase"]), (200, &json!("Progressing")), "{body}");

    // A rotated token file applies at once; the old token stops working.
    std::fs::write(&token_file, "t0ken-two-rotated\n").unwrap();
    let (code, _) = call(admin, "POST", &format!("{PATH}/pause"), &bearer, "").await;
    assert_eq!(code, 401);
    let (code, body) =
        call(admin, "POST", &format!("{PATH}/pause"), &[("authorization", "Bearer t0ken-two-rotated")], "").await;
    assert_eq!((code, &body["status"]["phase"]), (200, &json!("Paused")), "{body}");
}

#[tokio::test]
async fn grpc_mutations_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "grpc-token").unwrap();
    let s = start(&token_file).await;
    let (code, _) =
        call(s.admin_addr().unwrap(), "PUT", PATH, &[("authorization", "Bearer grpc-token")], &policy(1000)).await;
    assert_eq!(code, 200);
    let mut client = ReleaseServiceClient::connect(format!("http://{}", s.xds_addr())).await.unwrap();
    let weight = |w| SetWeightRequest {
        r#ref: Some(ReleaseRef { namespace: "default".into(), name: "reviews-v3".into() }),
        canary_weight: w,
    };
    let err = client.set_weight(weight(3000)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let mut req = tonic::Request::new(weight(3000));
    req.metadata_mut().insert("authorization", "Bearer grpc-token".parse().unwrap());
    let view = client.set_weight(req).await.unwrap().into_inner();
    assert_eq!(view.status.unwrap().canary_weight, 3000);
    // Reads need no token.
    let got = client.get_release(ReleaseRef { namespace: "default".into(), name: "reviews-v3".into() }).await;
    assert!(got.is_ok());
}

/// `sluice release` as a user runs it, with and without `--token-file`.
#[tokio::test]
async fn the_cli_sends_the_token_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "cli-token\n").unwrap();
    let s = start(&token_file).await;
    let server = format!("http://{}", s.admin_addr().unwrap());
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, "metadata: {name: reviews-v3}\nspec: {service: reviews, stable: v1, canary: v3}\n")
        .unwrap();
    let run = |args: Vec<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("release")
                .args(&args)
                .env("SLUICE_SERVER", server)
                .env_remove("SLUICE_API_TOKEN_FILE")
                .output()
                .expect("run sluice")
        })
    };
    let apply = vec!["apply".to_string(), "-f".into(), policy_file.display().to_string()];
    let out = run(apply.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Authorization: Bearer"), "{out:?}");
    let with_token = |mut a: Vec<String>| {
        a.extend(["--token-file".to_string(), token_file.display().to_string()]);
        a
    };
    let out = run(with_token(apply)).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(with_token(vec!["weight".into(), "reviews-v3".into(), "25".into()])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let views = s.releases().list(None);
    assert_eq!(views[0].status.weights.get("v3"), Some(&2500));
}

/// A page that rebinds its own name to 127.0.0.1 sends its name as `Host`: reads of the mesh (releases, config
/// dumps, the dashboard's data) are refused unless the token comes with them; probes and metrics stay open.
#[tokio::test]
async fn reads_on_a_name_that_is_not_loopback_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let s = start(&token_file).await;
    let admin = s.admin_addr().unwrap();
    let rebound = [("host", "evil.example:15014")];
    let (code, body) = call(admin, "GET", "/api/v1/releases", &rebound, "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not a loopback name"), "{body}");
    let (code, _) = call(admin, "GET", "/debug/syncz", &rebound, "").await;
    assert_eq!(code, 403);
    let with_token = [("host", "evil.example:15014"), ("authorization", "Bearer s3cret")];
    assert_eq!(call(admin, "GET", "/api/v1/releases", &with_token, "").await.0, 200);
    assert_eq!(call(admin, "GET", "/api/v1/releases", &[("host", "localhost:15014")], "").await.0, 200);
    // Probes and scrapers use the pod's address as Host.
    let client = common::http::client();
    for path in ["/healthz", "/readyz"] {
        let (code, _) = common::http::get_with(&client, admin, "10.1.2.3:15014", path, &[]).await.unwrap();
        assert_eq!(code, 200, "{path}");
    }
    s.shutdown().await;
}
