//! Release tasks: the grayscale workflow for one service (stable beside canary), driven by the operator's verbs
//! and an optional step plan.
//!
//! ```text
//!  file policies ─┐                          ┌─▶ Store::set_release_states ─▶ translate (routes by phase/weight)
//!  API apply ─────┼─▶ ReleaseController ─────┤
//!  verbs/weight ──┘   (machine: pure)        └─▶ StateDir (atomic JSON) before any change is acknowledged
//!                         ▲ ticks for timed pauses; status reads the registry (proxies ACKed / connected)
//! ```
//! In Kubernetes mode the cluster's releases are shared by the replicas: only the Lease holder drives them, the
//! others serve the state it stored in the ReleasePolicy status ([`shared`]).

pub mod analysis;
pub mod api;
pub mod cluster;
mod controller;
pub mod forward;
pub mod grpc;
pub mod machine;
pub mod persist;
pub mod replicas;
pub mod shared;
pub mod status;

pub use controller::plan::{LoserPlan, Plan};
pub use controller::{Change, ReleaseController, ReleaseError, STORE_WAIT};
pub use machine::{Record, Refused, Verb};
pub use persist::{CorruptState, PersistError, StateDir};
pub use shared::{Shared, StoredRecords};
pub use status::{Condition, ReleaseStatus, ReleaseView};
