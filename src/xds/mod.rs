//! The xDS server: snapshots of encoded config, and one task per Envoy stream that keeps the protocol's rules.
//!
//! ```text
//!  Store ──▶ publisher (translate, off-thread) ──watch<Arc<Snapshot>>──▶ stream task per proxy
//!                                                                          ├─ session: subscriptions, ACK/NACK,
//!                                                                          │  make-before-break ordering
//!                                                                          ├─ sotw / delta: the wire forms
//!                                                                          └─ registry: per-proxy sync state
//!                                                          CSDS (csds) reads the registry + the newest snapshot
//! ```

pub mod contain;
pub mod csds;
mod delta;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod limits;
mod names;
pub mod node;
pub mod pgv;
pub mod publisher;
mod queue;
pub mod registry;
pub mod resource;
mod response;
mod route_check;
pub mod server;
mod session;
mod shared_run;
#[cfg(test)]
mod sidecar_tests;
pub mod snapshot;
mod sorted;
mod sotw;
pub mod stream;
pub mod trust;
mod visible;
pub mod wire;

pub use limits::{Limits, StreamSlots};
pub use registry::{ProxyStatus, Registry};
pub use resource::{Resource, TypeKind};
pub use server::Xds;
pub use snapshot::Snapshot;
pub use stream::StreamCtx;
pub use trust::Trust;
