//! `sluice release ...` as a user runs it: the real binary against a Sluice started in the test.

use crate::common;

use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::process::Output;
use std::time::Duration;

fn reviews() -> Model {
    common::reviews_model(19082, 19084)
}

const POLICY: &str = "\
apiVersion: sluice.dev/v1alpha1
kind: ReleasePolicy
metadata:
  name: reviews-v3
spec:
  service: reviews
  stable: v1
  canary: v3
  traffic:
    canaryWeight: 1000
";

/// Runs `sluice release ARGS` off the async runtime; the server comes from `SLUICE_SERVER`.
async fn sluice(server: &str, args: &[&str]) -> Output {
    let (server, args) = (server.to_string(), args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("release")
            .args(&args)
            .env("SLUICE_SERVER", server)
            .env_remove("SLUICE_NAMESPACE")
            .output()
            .expect("run sluice")
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn release_workflow_from_the_command_line() {
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    s.store().set_model(reviews());
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    let server = format!("http://{}", s.admin_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, POLICY).unwrap();

    let out = stdout(&sluice(&server, &["apply", "-f", file.to_str().unwrap()]).await);
    assert!(out.contains("release default/reviews-v3 applied"), "{out}");

    let table = stdout(&sluice(&server, &["list"]).await);
    let lines: Vec<Vec<&str>> =
        table.lines().map(|l| l.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
    assert_eq!(lines[0], ["NAME", "SERVICE", "PHASE", "WEIGHTS", "STEP", "PROXIES"], "{table}");
    assert_eq!(lines[1][..4], ["reviews-v3", "reviews", "Progressing", "v1=90% v3=10%"], "{table}");

    let out = stdout(&sluice(&server, &["weight", "reviews-v3", "20"]).await);
    assert!(out.contains("v1=80% v3=20%"), "{out}");
    let json = stdout(&sluice(&server, &["get", "reviews-v3", "-o", "json"]).await);
    let view: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(view["status"]["weights"]["v3"], 2000);
    let yaml = stdout(&sluice(&server, &["get", "reviews-v3"]).await);
    assert!(yaml.contains("kind: ReleasePolicy") && yaml.contains("v3: 2000"), "{yaml}");

    let err = refused(&sluice(&server, &["weight", "reviews-v3", "120"]).await);
    assert!(err.contains("between 0 and 100"), "{err}");
    let err = refused(&sluice(&server, &["weight", "reviews-v3", "abc"]).await);
    assert!(err.contains("`abc` is not a number from 0 to 100"), "{err}");
    let err = refused(&sluice(&server, &["finalize", "reviews-v3"]).await);
    assert!(err.contains("promote or abort it first"), "{err}");
    let err = refused(&sluice(&server, &["promote", "nope"]).await);
    assert!(err.contains("default/nope not found"), "{err}");

    let out = stdout(&sluice(&server, &["promote", "reviews-v3"]).await);
    assert!(out.contains("phase Promoted") && out.contains("v3=100%"), "{out}");
    let out = stdout(&sluice(&server, &["finalize", "reviews-v3"]).await);
    assert!(out.contains("phase Finalized"), "{out}");
    let out = stdout(&sluice(&server, &["delete", "reviews-v3"]).await);
    assert!(out.contains("deleted"), "{out}");
    s.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = sluice("http://127.0.0.1:1", &["--server", &format!("http://127.0.0.1:{port}"), "list"]).await;
    let err = refused(&out);
    assert!(err.contains(&format!("cannot connect to http://127.0.0.1:{port}")), "{err}");
}
