//! gRPC's xDS interop cases (grpc/grpc `doc/xds-test-descriptions.md`) with Sluice as the control plane; each
//! case is a file. The peers are `tests/peers/xds_interop.py` (a TestService server naming itself in a `hostname`
//! header, and a client sending a constant load); the driver's side is `tests/common/interop.rs`.
//!
//! ```text
//!   case ──stats / accumulated / configure──▶ client ──xds:///…──▶ servers (hostname a, b, …)
//!                                               └──ADS──▶ Sluice (the model the case sets)
//! ```

mod balancing;
mod cluster_policies;
mod csds;
mod fixture;
mod policies;
mod release;
mod routing;
mod selftest;
