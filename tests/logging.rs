//! Logging: the filter changes at run time through the admin port (`GET`/`PUT /debug/loglevel`), and JSON lines
//! from an xDS stream carry the proxy id (the stream's span) and the type.
//!
//! One test in this binary: it installs the process's log subscriber, writing into a buffer it reads back.

#[path = "protocol/client.rs"]
mod client;

use client::{CDS, Sotw};
use serde_json::Value;
use sluice::model::*;
use sluice::server::{Options, Sluice};
use sluice::telemetry::logging::{self, LogFormat};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 log");
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
    }

    /// Lines logged inside the `xds` span of `proxy` with this message.
    fn of(&self, proxy: &str, message: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["span"]["name"] == "xds" && l["span"]["proxy"] == proxy && l["fields"]["message"] == message)
            .collect()
    }

    async fn wait_for(&self, proxy: &str, message: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self.of(proxy, message);
            if !found.is_empty() {
                return found;
            }
            assert!(Instant::now() < deadline, "no `{message}` line for {proxy}; log: {:#?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One HTTP/1.0 exchange with the admin port → (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("admin port");
    let req = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    (status, body.to_string())
}

/// A proxy that takes CDS and ACKs it; the stream stays open while the returned client lives.
async fn connect_and_sync_cds(s: &Sluice, id: &str) -> Sotw {
    let mut c = Sotw::connect(s.xds_addr(), id).await;
    c.send(CDS, &[], "", "", None).await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c
}

#[tokio::test]
async fn the_log_filter_changes_at_run_time_and_xds_lines_name_the_proxy_and_type() {
    let log = Captured::default();
    let writer = log.clone();
    logging::init_with_writer("info", LogFormat::Json, move || writer.clone()).expect("init logging");
    let s = Sluice::start(Options::local()).await.expect("start sluice");
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    m.push_endpoint(&svc, Endpoint::ready("reviews-v1", "127.0.0.1", 9080, 19082).with_label("version", "v1"));
    s.store().set_model(m);
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    let admin = s.admin_addr().expect("admin");

    assert_eq!(http(admin, "GET", "/debug/loglevel", "").await, (200, "info\n".into()));
    let _before = connect_and_sync_cds(&s, "before").await;
    let connected = log.wait_for("before", "connected").await;
    assert_eq!(connected[0]["span"]["protocol"], "sotw");
    assert!(log.of("before", "push").is_empty(), "debug lines are filtered out at `info`");

    let filter = "info,sluice::xds=debug";
    assert_eq!(http(admin, "PUT", "/debug/loglevel", filter).await, (200, format!("{filter}\n")));
    assert_eq!(http(admin, "GET", "/debug/loglevel", "").await, (200, format!("{filter}\n")));
    let _after = connect_and_sync_cds(&s, "after").await;
    let pushes = log.wait_for("after", "push").await;
    assert_eq!(pushes[0]["fields"]["type"], "cds", "per-type lines carry the type: {pushes:?}");
    assert_eq!(pushes[0]["level"], "DEBUG");
    let acks = log.wait_for("after", "ACK").await;
    assert_eq!(acks[0]["fields"]["type"], "cds");

    // A bad filter is refused, naming it; the one in force stays.
    let (status, body) = http(admin, "PUT", "/debug/loglevel", "sluice=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`sluice=loud`"), "{body}");
    assert_eq!(http(admin, "GET", "/debug/loglevel", "").await, (200, format!("{filter}\n")));
    s.shutdown().await;
}
