//! Sluice: an Envoy xDS control plane for grayscale (canary) releases, without istiod.
//!
//! ```text
//!  source (files) ──▶ Store (Model) ──debounce──▶ translate ──▶ Snapshot ──watch──▶ one task per Envoy stream
//!                                                                                      │ ACK/NACK
//!                     admin HTTP (/readyz, /metrics, /debug/syncz, config_dump) ◀── proxy registry ──▶ CSDS
//! ```
//! See ARCHITECTURE.md for the map.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod bench;
pub mod bootstrap;
pub mod ca;
#[cfg(feature = "kube")]
pub mod cli;
pub mod conn;
pub mod envoy_json;
pub mod inject;
pub mod iptables;
pub mod model;
pub mod parallel;
pub mod release;
pub mod server;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod xds;

/// An error and its sources, `a: b: c`: the top error alone often says only what kind of call failed (tonic's
/// "transport error", hyper's "client error (Connect)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// Sluice's own gRPC API (`proto/sluice/v1`), compiled by build.rs.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sluice.v1");

    /// Istio's `istio.v1.auth.IstioCertificateService` (wire-compatible with istiod's CA).
    pub mod istio_ca {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("istio.v1.auth");
    }
}
