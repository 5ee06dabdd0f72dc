//! A real Envoy as a child process: its own tempdir (bootstrap, log, admin address), an admin port
//! the kernel picks, and a kill by PID when dropped. When a test panics while an `Envoy` is alive,
//! the tail of its log is printed.

use super::http::{self, Client};
use serde_json::Value;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Log lines shown when something fails.
const TAIL_LINES: usize = 40;
/// Where Envoy writes its admin address (`--admin-address-path`), in its tempdir.
const ADMIN_ADDRESS_FILE: &str = "admin-address";

/// The Envoy binary: `$SLUICE_ENVOY`, else the project venv's. Panics when it is missing: a test
/// that silently skips Envoy proves nothing.
pub fn envoy_bin() -> PathBuf {
    let bin = match std::env::var_os("SLUICE_ENVOY") {
        Some(path) => PathBuf::from(path),
        None => super::repo().join(".venv/bin/envoy"),
    };
    assert!(bin.exists(), "Envoy binary {} is missing: run scripts/setup (or set SLUICE_ENVOY)", bin.display());
    bin
}

/// A running Envoy. Killed (by PID) when dropped.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    client: Client,
}

impl Envoy {
    /// Writes `bootstrap` to a tempdir with its admin port set to 0, starts Envoy with
    /// `--use-dynamic-base-id`, and waits until the admin port is bound (Envoy writes its address
    /// to `--admin-address-path`; no port is guessed). The log level is `warn`, or
    /// `$SLUICE_ENVOY_LOG_LEVEL`.
    pub fn start(bootstrap: &Value) -> Envoy {
        let dir = tempfile::Builder::new().prefix("sluice-envoy-").tempdir().expect("tempdir");
        let mut bootstrap = bootstrap.clone();
        bootstrap["admin"]["address"] =
            serde_json::json!({ "socket_address": { "address": "127.0.0.1", "port_value": 0 } });
        let config = dir.path().join("bootstrap.json");
        fs::write(&config, serde_json::to_vec_pretty(&bootstrap).expect("bootstrap JSON")).expect("write bootstrap");
        let address_file = dir.path().join(ADMIN_ADDRESS_FILE);
        let log = File::create(dir.path().join("envoy.log")).expect("create envoy.log");
        let level = std::env::var("SLUICE_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
        let mut child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&address_file)
            .args(["--use-dynamic-base-id", "--log-level", &level])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", envoy_bin().display()));
        let admin = await_admin_address(&mut child, dir.path(), Duration::from_secs(30));
        Envoy { child, dir, admin, client: http::client() }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The tempdir holding `bootstrap.json` and `envoy.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(self.dir.path(), lines)
    }

    /// GET an admin path (`/ready`, `/clusters`, ...) → (status, body).
    pub async fn try_admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http::get_with(&self.client, self.admin, "localhost", path, &[]).await
    }

    /// GET an admin path, panicking (with the log tail) unless it answers 200.
    pub async fn admin_get(&self, path: &str) -> String {
        match self.try_admin_get(path).await {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!("admin {path}: {status}: {body}\n{}", self.log_tail(TAIL_LINES)),
            Err(e) => panic!("admin {path}: {e:#}\n{}", self.log_tail(TAIL_LINES)),
        }
    }

    /// Waits until `/ready` says LIVE (Envoy has its initial config and serves traffic).
    pub async fn wait_live(&self, timeout: Duration) {
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.try_admin_get("/ready").await {
                Ok((200, body)) if body.trim() == "LIVE" => return,
                Ok((status, body)) => last = format!("{status} {}", body.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("Envoy not LIVE after {timeout:?} (last /ready: {last})\n{}", self.log_tail(TAIL_LINES));
    }

    /// Polls `/config_dump?include_eds` until `pred` holds, and returns that dump.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.admin_get("/config_dump?include_eds").await;
            let dump: Value = serde_json::from_str(&body).expect("config_dump is JSON");
            if pred(&dump) {
                return dump;
            }
            if Instant::now() >= deadline {
                let text = serde_json::to_string_pretty(&dump).unwrap_or_default();
                let head: String = text.chars().take(4000).collect();
                panic!("condition not met after {timeout:?}; config_dump:\n{head}\n{}", self.log_tail(TAIL_LINES));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address a listener actually bound (for listeners configured on port 0, so concurrent tests and
    /// processes never race for a port). Waits until the listener exists.
    pub async fn listener_addr(&self, timeout: Duration) -> std::net::SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            let body = self.admin_get("/listeners?format=json").await;
            let v: Value = serde_json::from_str(&body).expect("/listeners is JSON");
            let bound = v["listener_statuses"].as_array().into_iter().flatten().find_map(|l| {
                let a = &l["local_address"]["socket_address"];
                let port = a["port_value"].as_u64().filter(|p| *p != 0)?;
                format!("{}:{port}", a["address"].as_str()?).parse().ok()
            });
            if let Some(addr) = bound {
                return addr;
            }
            if Instant::now() >= deadline {
                panic!("no bound listener after {timeout:?}: {body}\n{}", self.log_tail(TAIL_LINES));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter or gauge by its exact name, or None if Envoy has no such stat.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        let filter = percent_encode(&format!("^{}$", regex_escape(name)));
        let body = self.admin_get(&format!("/stats?filter={filter}")).await;
        body.lines().find_map(|line| {
            let (stat, value) = line.split_once(": ")?;
            if stat == name { value.trim().parse().ok() } else { None }
        })
    }

    /// Waits until Envoy's view of its ADS stream (`control_plane.connected_state`) is `connected` (1 or 0);
    /// returns how long that took, and panics past `timeout`.
    pub async fn wait_connected(&self, connected: u64, timeout: Duration) -> Duration {
        let started = Instant::now();
        while self.stat("control_plane.connected_state").await != Some(connected) {
            assert!(started.elapsed() < timeout, "Envoy's control_plane.connected_state is not {connected}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }
}

/// Blocks (briefly: Envoy binds admin before it fetches any config) until Envoy has written its admin
/// address; panics with the log tail if Envoy exits first (a rejected bootstrap) or takes too long.
fn await_admin_address(child: &mut Child, dir: &Path, timeout: Duration) -> SocketAddr {
    let deadline = Instant::now() + timeout;
    loop {
        let written = fs::read_to_string(dir.join(ADMIN_ADDRESS_FILE)).ok();
        if let Some(addr) = written.and_then(|s| s.trim().parse().ok()) {
            return addr;
        }
        if let Some(status) = child.try_wait().expect("try_wait envoy") {
            panic!("Envoy exited with {status} before binding admin\n{}", log_tail(dir, TAIL_LINES));
        }
        assert!(Instant::now() < deadline, "Envoy admin not bound after {timeout:?}\n{}", log_tail(dir, TAIL_LINES));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_tail(dir: &Path, lines: usize) -> String {
    let log = fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- envoy.log (last {lines} lines) ---\n{tail}\n--- end ---")
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID (SIGKILL); wait() reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("Envoy (pid {}, admin {}):\n{}", self.child.id(), self.admin, self.log_tail(TAIL_LINES));
        }
    }
}

/// Escapes RE2 metacharacters so a stat name (`cluster.outbound|9080|v1|...`) matches literally.
fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything but unreserved characters, for a query parameter value.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
