//! Real Envoy 1.40 end to end, one test binary: routing and release traffic through Envoys that take their
//! config from Sluice, Istio/Gateway API objects, mTLS, `sluice bootstrap`, proxyless gRPC, a release under load
//! and across a `kill -9`, and the self-test of the helpers in `tests/common`.
//!
//! One binary instead of one per file: each links the whole dependency tree, so fewer links cut CI time. Tests
//! run concurrently on the test threads; none here touches process-wide state (metrics recorder, log subscriber).

#[path = "../common/mod.rs"]
mod common;

mod bootstrap;
mod containment;
mod gateway;
mod gateway_api;
mod gateway_release;
mod grpc_interop;
mod harness_selftest;
mod istio;
mod istio_defaults;
mod istio_samples;
mod mtls;
mod proxyless_grpc;
mod release_flows;
mod release_restart;
mod release_traffic;
mod routing;
mod sidecar;
