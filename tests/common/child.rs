//! The real `sluice serve` binary as a child process on fixed ports (so a restart comes back on the same ones),
//! its output in a log file; SIGKILLed by PID when dropped.

use super::http::{client, get_with};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SluiceChild {
    child: Child,
    log: PathBuf,
    pub admin: SocketAddr,
    /// The xDS port (also the gRPC Release API).
    pub xds: SocketAddr,
}

impl SluiceChild {
    /// Starts `sluice serve --config CONFIG` plus `extra` flags and waits until `/readyz` answers 200.
    pub async fn start(config: &Path, xds: SocketAddr, admin: SocketAddr, log: PathBuf, extra: &[&str]) -> Self {
        let mut args = vec![std::ffi::OsString::from("--config"), config.into()];
        args.extend(extra.iter().map(std::ffi::OsString::from));
        Self::start_with(&args, &[], xds, admin, log).await
    }

    /// Starts `sluice serve ARGS` with `env` added to its environment and waits until `/readyz` answers 200.
    pub async fn start_with(
        args: &[std::ffi::OsString],
        env: &[(&str, &std::ffi::OsStr)],
        xds: SocketAddr,
        admin: SocketAddr,
        log: PathBuf,
    ) -> Self {
        let out = std::fs::File::create(&log).expect("create sluice log");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .args(["--xds-addr", &xds.to_string(), "--admin-addr", &admin.to_string()])
            .args(["--reload-interval-ms", "100"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .expect("spawn sluice");
        let server = SluiceChild { child, log, admin, xds };
        let http = client();
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = get_with(&http, admin, "localhost", "/readyz", &[]).await {
                return server;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "sluice not ready in 20 s\n{}", server.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (what `Child::kill` sends on Unix): no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL sluice");
        let status = self.child.wait().expect("reap sluice");
        println!("sluice (pid {}) killed: {status}", self.child.id());
    }

    /// Resident memory now, in KiB (`VmRSS` in /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- sluice log ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for SluiceChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
