//! The Python peers in `tests/peers/` as child processes, killed by PID when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

/// A peer that printed `ready PORT` and is serving on 127.0.0.1:PORT.
pub struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    /// Runs `tests/peers/SCRIPT ARGS` with the venv's Python and waits for its `ready PORT` line.
    pub fn spawn(script: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(super::venv_python())
            .arg(super::peer(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {script}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        // A peer that fails to start exits, which ends stdout: read_line cannot hang on it.
        // The pipe closes after this line: peers print nothing after `ready` (they log to stderr).
        BufReader::new(stdout).read_line(&mut line).expect("reading peer stdout");
        let port = line.strip_prefix("ready ").and_then(|p| p.trim().parse().ok());
        match port {
            Some(port) => Peer { child, port },
            None => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("{script} {args:?} did not print `ready PORT` (got {line:?}, {status})")
            }
        }
    }

    /// `backend.py`: HTTP/1.1 answering `name`, on a port the kernel picks (or `port`).
    pub fn http_backend(name: &str, port: u16) -> Peer {
        Peer::spawn("backend.py", &["--name", name, "--port", &port.to_string()])
    }

    /// `grpc_peer.py server`: gRPC `/sluice.test.Echo/Echo` answering `name`.
    pub fn grpc_server(name: &str, port: u16) -> Peer {
        Peer::spawn("grpc_peer.py", &["server", "--name", name, "--port", &port.to_string()])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `grpc_peer.py client ARGS` to completion and parses its JSON line:
/// `{"counts": {VERSION: N}, "errors": N, "error_codes": {CODE: N}}`.
pub fn grpc_client(args: &[&str]) -> serde_json::Value {
    let Output { status, stdout, stderr } = Command::new(super::venv_python())
        .arg(super::peer("grpc_peer.py"))
        .arg("client")
        .args(args)
        .output()
        .expect("running grpc_peer.py client");
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(status.success(), "grpc_peer.py client {args:?}: {status}\n{stdout}\n{}", String::from_utf8_lossy(&stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("grpc_peer.py output {stdout:?}: {e}"))
}
