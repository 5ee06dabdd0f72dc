//! Sluice's own interfaces without Envoy, one test binary: the Release API (REST, gRPC, CLI, status), API auth,
//! metrics and CSDS against tonic clients that play Envoy, the telemetry sink, mTLS on the xDS port, the workload
//! CA, and the manifests in `deploy/`.
//!
//! Only `observability` NACKs, so the process-wide reject counter moves by its NACK alone.

#[path = "../protocol/client.rs"]
mod client;
#[path = "../common/mod.rs"]
mod common;

mod auth;
mod ca;
mod console_api;
mod deploy_manifests;
mod mtls;
mod observability;
mod release_api;
mod release_cli;
mod release_status;
mod telemetry_sink;
mod webhook_https;
