//! A test harness as a user of the `sluice-xds` crate writes one: Sluice in-process on `127.0.0.1:0`, the mesh
//! set from code, one real Envoy and one proxyless gRPC client (Python grpcio, `xds:///`) taking their config from
//! it. It awaits each one's ACK, reads what each holds, and checks that their calls reach the backends.
//!
//! ```text
//!   this harness ──set_model──▶ Sluice (127.0.0.1:0) ◀──ADS── Envoy (node envoy-1) ──HTTP──▶ reviews backend
//!        │  wait_acked / held                      ◀──ADS── grpcio client (node grpc-1) ──gRPC──▶ echo backend
//! ```
//! Run from the repository: `cargo run -p sluice-harness-example` after `scripts/setup` (Envoy and grpcio in
//! `.venv`; `SLUICE_ENVOY` and `SLUICE_PYTHON` point elsewhere). Exits non-zero, saying why, when a check fails.

use anyhow::{Context, bail, ensure};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use sluice::bootstrap::{BootstrapArgs, render};
use sluice::model::{Endpoint, Model, Service};
use sluice::server::{Options, Sluice};
use sluice::xds::TypeKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const ACK_WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("SLUICE_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo.join(".venv/bin/python"));
    let envoy = std::env::var("SLUICE_ENVOY").map(PathBuf::from).unwrap_or_else(|_| repo.join(".venv/bin/envoy"));
    let peer = repo.join("tests/peers/grpc_peer.py");

    // The backends: an HTTP one in this process, a gRPC one (the Python peer) answering `v1`.
    let http = http_backend("reviews-v1").await?;
    let (mut grpc_server, grpc_port) = grpc_backend(&python, &peer).await?;

    let sluice = Sluice::start(Options::local()).await?;
    sluice.store().set_model(mesh(http.port(), grpc_port));
    sluice.wait_published(Duration::from_secs(5)).await?;

    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let dir = tempfile::tempdir()?;
    let mut envoy = start_envoy(&sluice, &envoy, listen, &dir).await?;
    let result = drive(&sluice, listen, &python, &peer).await;
    // Every process this harness started ends by its PID, also when a check failed.
    let _ = envoy.kill().await;
    let _ = grpc_server.kill().await;
    sluice.shutdown().await;
    result
}

async fn drive(sluice: &Sluice, listen: SocketAddr, python: &PathBuf, peer: &PathBuf) -> anyhow::Result<()> {
    // Envoy: its ACK, what it holds, then requests through it.
    let version = sluice.wait_acked("envoy-1", ACK_WAIT).await?;
    let clusters = cluster_names(sluice, "envoy-1")?;
    println!("envoy-1 ACKed snapshot {version}; it holds clusters {clusters:?}");
    ensure!(clusters.iter().any(|c| c == "outbound|9080||reviews.default.svc.cluster.local"), "no reviews cluster");
    for _ in 0..20 {
        let body = get(listen, "reviews").await?;
        ensure!(body == "reviews-v1", "Envoy answered {body:?}");
    }
    println!("envoy-1: 20/20 requests reached reviews-v1");

    // The gRPC client: it resolves xds:///echo... through Sluice and calls while we await its ACK.
    let xds = sluice.xds_addr().to_string();
    let target = "echo.default.svc.cluster.local:9090";
    let mut client = Command::new(python)
        .arg(peer)
        .args(["client", "--xds", &xds, "--node-id", "grpc-1", "--target", target, "-n", "3000"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the grpcio client")?;
    let version = sluice.wait_acked("grpc-1", ACK_WAIT).await?;
    let held = sluice.held("grpc-1");
    let listeners: Vec<&str> = held.get(&TypeKind::Listener).into_iter().flatten().map(|r| r.name.as_str()).collect();
    println!("grpc-1 ACKed snapshot {version}; it holds listeners {listeners:?}");
    ensure!(listeners.contains(&target), "the gRPC client holds no API listener for {target}");
    let grpc_clusters = cluster_names(sluice, "grpc-1")?;
    println!("grpc-1 holds clusters {grpc_clusters:?}");
    ensure!(!grpc_clusters.is_empty(), "the gRPC client holds no cluster");

    let mut out = String::new();
    client.stdout.take().context("client stdout")?.read_to_string(&mut out).await?;
    let status = client.wait().await?;
    ensure!(status.success(), "the grpcio client failed: {status}");
    let calls: serde_json::Value = serde_json::from_str(out.trim()).context("the client's JSON line")?;
    ensure!(calls["errors"] == 0 && calls["counts"]["v1"] == 3000, "gRPC calls: {calls}");
    println!("grpc-1: 3000/3000 calls reached the echo backend");
    Ok(())
}

/// Service `reviews` (HTTP) and `echo` (gRPC), one endpoint each, on loopback.
fn mesh(http_port: u16, grpc_port: u16) -> Model {
    let mut m = Model::default();
    let reviews = m.insert_service(Service::http("default", "reviews", 9080));
    m.push_endpoint(&reviews, Endpoint::ready("reviews-v1", "127.0.0.1", 9080, http_port).with_label("version", "v1"));
    let echo = m.insert_service(Service::grpc("default", "echo", 9090));
    m.push_endpoint(&echo, Endpoint::ready("echo-v1", "127.0.0.1", 9090, grpc_port).with_label("version", "v1"));
    m
}

/// The names of the clusters `node` holds, decoded from what it ACKed.
fn cluster_names(sluice: &Sluice, node: &str) -> anyhow::Result<Vec<String>> {
    let held = sluice.held(node);
    let mut names = Vec::new();
    for r in held.get(&TypeKind::Cluster).into_iter().flatten() {
        let cluster: Cluster = r.decode()?;
        names.push(cluster.name);
    }
    Ok(names)
}

async fn start_envoy(
    sluice: &Sluice,
    envoy: &PathBuf,
    listen: SocketAddr,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Child> {
    let args = BootstrapArgs {
        node_id: "envoy-1".into(),
        xds: sluice.xds_addr().to_string().parse().map_err(anyhow::Error::msg)?,
        listen: Some(listen),
        admin_port: free_port()?,
        ..Default::default()
    };
    let file = dir.path().join("envoy.json");
    std::fs::write(&file, serde_json::to_vec(&render(&args))?)?;
    Command::new(envoy)
        .args(["--use-dynamic-base-id", "--log-level", "error", "-c"])
        .arg(&file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting Envoy {} (run scripts/setup, or set SLUICE_ENVOY)", envoy.display()))
}

async fn grpc_backend(python: &PathBuf, peer: &PathBuf) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new(python)
        .arg(peer)
        .args(["server", "--name", "v1", "--port", "0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (run scripts/setup, or set SLUICE_PYTHON)", python.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line).await?;
    match line.trim().strip_prefix("ready ").and_then(|p| p.parse().ok()) {
        Some(port) => Ok((child, port)),
        None => bail!("the gRPC backend printed {line:?}, not `ready PORT`"),
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request with `name`.
async fn http_backend(name: &'static str) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}", name.len());
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// One request through Envoy's listener with `Host: host`; the body, once Envoy routes (503s retried for 5 s).
async fn get(listen: SocketAddr, host: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = tokio::net::TcpStream::connect(listen).await?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await?;
        if text.starts_with("HTTP/1.1 200") {
            return Ok(text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("Envoy answered: {}", text.lines().next().unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
