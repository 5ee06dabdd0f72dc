//! The harness runs as its users run it (`cargo run -p sluice-harness-example`) and succeeds: a real Envoy and a
//! grpcio client ACK Sluice's config and their calls reach the backends. Built with the workspace's tests, so
//! `scripts/test` compiles nothing more for it.

use std::process::Command;

#[test]
fn the_harness_drives_a_real_envoy_and_a_grpc_client() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-harness-example")).output().expect("running the harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the harness failed ({}):\n{stdout}\n{stderr}", out.status);
    for line in ["envoy-1: 20/20 requests reached reviews-v1", "grpc-1: 3000/3000 calls reached the echo backend"] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
}
