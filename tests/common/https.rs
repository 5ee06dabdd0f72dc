//! A real HTTPS client for tests (`tests/peers/https_client.py`: Python's `ssl`, OpenSSL), verifying the server's
//! chain against a CA file and the host name `localhost`.

use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `requests` (a JSON array; see the script for the fields) to `localhost:PORT`; one answer per request.
pub fn ask(addr: SocketAddr, cafile: &Path, requests: &Value) -> Vec<Value> {
    ask_as(addr, "localhost", cafile, requests)
}

/// [`ask`] connecting to `addr` with TLS server name (SNI, and the name verified) `server_name`.
pub fn ask_as(addr: SocketAddr, server_name: &str, cafile: &Path, requests: &Value) -> Vec<Value> {
    let mut child = Command::new(super::venv_python())
        .arg(super::peer("https_client.py"))
        .args([server_name, &addr.port().to_string()])
        .arg(cafile)
        .arg(addr.ip().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python HTTPS client");
    child.stdin.take().expect("stdin").write_all(requests.to_string().as_bytes()).expect("write the requests");
    let out = child.wait_with_output().expect("the HTTPS client");
    assert!(out.status.success(), "https_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the client's answers")
}

/// Waits until something accepts TCP connections on `addr` (10 s at most).
pub async fn wait_listening(addr: SocketAddr) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "nothing listens on {addr} after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
