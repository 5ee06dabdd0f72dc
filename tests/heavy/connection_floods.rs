//! Connection floods against the real `sluice serve` binary with a 1,024 file limit (`ulimit -n 1024`): 1,100
//! admin connections that send half a request head and 900 xDS connections that send nothing or half an HTTP/2
//! preface. Each is closed within the handshake timeout (sooner when the budget needs its place), `/healthz`
//! keeps answering, and a new Envoy gets its config. Then one client opens 500 ADS streams on one connection:
//! at most the per-connection cap (100) is open at once.

use crate::client::node;
use crate::common;

use common::http::{client, get_with};
use common::{Backend, free_addrs, load, start_envoy};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_stream::StreamExt;

const TIMEOUT_MS: u64 = 2000;

struct Child9(Child);

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sluice serve` under `ulimit -n 1024`, on `config`.
fn serve_limited(config: &std::path::Path, xds: SocketAddr, admin: SocketAddr, log: &std::path::Path) -> Child9 {
    let out = std::fs::File::create(log).expect("log");
    let script = "ulimit -n 1024 && exec \"$0\" \"$@\"";
    let child = Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_sluice"), "serve", "--config"])
        .arg(config)
        .args(["--xds-addr", &xds.to_string(), "--admin-addr", &admin.to_string()])
        .args(["--handshake-timeout-ms", &TIMEOUT_MS.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn sluice");
    Child9(child)
}

/// Opens a connection, writes `first`, and reports how long until the server closes it (None: not within 30 s).
async fn held(addr: SocketAddr, first: &'static [u8]) -> Option<Duration> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.write_all(first).await;
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_slow_connections_are_closed_and_real_clients_get_through() {
    let _serial = crate::serial().await;
    let backend = Backend::start("reviews-v1").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, common::reviews_yaml(backend.port(), backend.port())).unwrap();
    let [xds, admin] = free_addrs();
    let log = dir.path().join("sluice.log");
    let _sluice = serve_limited(&config, xds, admin, &log);
    let http = client();
    let started = Instant::now();
    while get_with(&http, admin, "localhost", "/readyz", &[]).await.map(|r| r.0).unwrap_or(0) != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "not ready:\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut floods = Vec::new();
    for i in 0..1100 {
        floods.push(tokio::spawn(held(admin, b"GET /healthz HTTP/1.1\r\nHost: loca")));
        if i < 900 {
            let first: &'static [u8] = if i % 3 == 0 { b"PRI * HTTP/2.0\r\n" } else { b"" };
            floods.push(tokio::spawn(held(xds, first)));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Meanwhile the probe still answers, and a new Envoy gets its config.
    let probe = Instant::now();
    let (status, body) = get_with(&http, admin, "localhost", "/healthz", &[]).await.expect("/healthz answers");
    let probe = probe.elapsed();
    assert_eq!(status, 200, "{body}");
    let (_envoy, listen) = start_envoy(xds, "envoy-flood", false).await;
    let routed = load(listen, "reviews", 20, 2).await;
    assert_eq!(routed.of("reviews-v1"), 20, "the new Envoy got its config: {routed:?}");

    let mut longest = Duration::ZERO;
    let mut open = 0;
    for f in floods {
        match f.await.unwrap() {
            Some(d) => longest = longest.max(d),
            None => open += 1,
        }
    }
    println!("floods: /healthz answered in {probe:?}; the slowest flood connection was closed after {longest:?}");
    assert_eq!(open, 0, "every slow connection was closed");
    assert!(longest < Duration::from_millis(TIMEOUT_MS + 3000), "closed within the timeout: {longest:?}");
    assert!(probe < Duration::from_secs(2), "/healthz answered in {probe:?}");

    // One client, one connection, 500 ADS streams: at most 100 open at once.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}")).unwrap().connect().await.unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    for i in 0..500 {
        let (channel, opened) = (channel.clone(), opened.clone());
        streams.push(tokio::spawn(async move {
            let mut ads = AggregatedDiscoveryServiceClient::new(channel);
            let first = DiscoveryRequest { node: Some(node(&format!("many-{i}"))), ..Default::default() };
            let requests = tokio_stream::once(first).chain(tokio_stream::pending());
            let response = ads.stream_aggregated_resources(requests).await;
            opened.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(response);
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = opened.load(Ordering::Relaxed);
    println!("500 streams asked on one connection: {now} open");
    assert!((1..=100).contains(&now), "{now} streams open on one connection");
    streams.iter().for_each(|s| s.abort());
}
