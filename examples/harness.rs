//! Driving a real Envoy from code: start Sluice in-process on 127.0.0.1:0, describe the mesh as a `Model`, wait
//! until the proxy has ACKed it, change it, wait again. This is the library API integration-test harnesses use.
//!
//! Run: `scripts/setup && cargo run --example harness` (Envoy from `.venv/bin/envoy`, or `$SLUICE_ENVOY`).

use sluice::bootstrap::{BootstrapArgs, render};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Two real HTTP backends that answer their version.
    let v1 = backend("v1").await?;
    let v3 = backend("v3").await?;

    // Sluice in-process, the model set from code.
    let sluice = Sluice::start(Options::local()).await?;
    sluice.store().set_model(reviews(v1.port(), v3.port(), 5000));

    // A real Envoy bootstrapped to Sluice, with one listener that routes by Host header.
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let args = BootstrapArgs {
        node_id: "example".into(),
        xds: sluice.xds_addr().to_string().parse().map_err(anyhow::Error::msg)?,
        listen: Some(listen),
        admin_port: free_port()?,
        ..Default::default()
    };
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("envoy.json");
    std::fs::write(&file, serde_json::to_vec(&render(&args))?)?;
    let envoy_bin = std::env::var("SLUICE_ENVOY").unwrap_or_else(|_| ".venv/bin/envoy".into());
    let mut envoy = std::process::Command::new(envoy_bin)
        .args(["--use-dynamic-base-id", "--log-level", "warn", "-c"])
        .arg(&file)
        .spawn()?;
    let result = drive(&sluice, listen, v1.port(), v3.port()).await;
    envoy.kill()?; // by its PID, also when driving failed
    envoy.wait()?;
    sluice.shutdown().await;
    result
}

async fn drive(sluice: &Sluice, listen: SocketAddr, v1: u16, v3: u16) -> anyhow::Result<()> {
    // "Proxy X has ACKed the current config."
    let version = sluice.wait_acked("example", Duration::from_secs(30)).await?;
    println!("Envoy holds snapshot {version}; 50/50: {:?}", split(listen, 200).await?);

    // Edit the model from code; wait for the ACK again.
    sluice.store().update(|m| *m = reviews(v1, v3, 10_000));
    let version = sluice.wait_acked("example", Duration::from_secs(10)).await?;
    println!("Envoy holds snapshot {version}; all to v3: {:?}", split(listen, 200).await?);
    Ok(())
}

/// reviews with v1 and v3 endpoints and a release policy giving v3 `weight` basis points.
fn reviews(v1: u16, v3: u16, weight: u32) -> Model {
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    m.push_endpoint(&svc, Endpoint::ready("reviews-v1", "127.0.0.1", 9080, v1).with_label("version", "v1"));
    m.push_endpoint(&svc, Endpoint::ready("reviews-v3", "127.0.0.1", 9080, v3).with_label("version", "v3"));
    m.insert_policy(ReleasePolicy::new(
        "default",
        "reviews-v3",
        ReleasePolicySpec::split("reviews", "v1", "v3", weight),
    ));
    m
}

/// `n` requests through Envoy; answers counted by body.
async fn split(listen: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let mut conn = tokio::net::TcpStream::connect(listen).await?;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n").await?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        *counts.entry(body).or_insert(0) += 1;
    }
    Ok(counts)
}

async fn backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
