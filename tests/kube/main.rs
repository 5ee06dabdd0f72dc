//! Kubernetes mode against the kmock API emulator (`tests/common/kmock.rs`), one test binary: the watch of
//! Services, Pods and ReleasePolicies, Istio/Gateway API objects (ingress gateways and their status), release
//! deploy tasks, leader election, replicas acting as one (reports through ConfigMaps: the gate, traffic, expiry)
//! and release changes sent to any of three replicas.
//! (The leader-election test that stops a replica mid-release is in `tests/heavy`.)
//!
//! Shared by the tests of this binary: the capturing log subscriber (`common::captured_log`) and the metrics
//! recorder; each test that reads a counter asserts one only it moves (its own kind of invalid object).

#[path = "../common/mod.rs"]
mod common;

mod console;
mod deploy;
mod gateway;
mod leader;
mod mesh;
mod replicas;
mod replicas_verbs;
mod serve;
mod sidecar;
mod webhook;
