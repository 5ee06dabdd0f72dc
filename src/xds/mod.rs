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

pub mod csds;
mod delta;
pub mod node;
pub mod publisher;
pub mod registry;
pub mod resource;
pub mod server;
mod session;
pub mod snapshot;
mod sotw;
pub mod stream;
pub mod trust;
mod visible;

pub use registry::{ProxyStatus, Registry};
pub use resource::TypeKind;
pub use server::Xds;
pub use snapshot::Snapshot;
pub use stream::{Limits, StreamCtx};
pub use trust::Trust;
