//! Sources fill the [`Store`](crate::store::Store) with a [`Model`](crate::model::Model), each as its own part.
//!
//! ```text
//!  config/*.yaml ─▶ file (parse, check, assemble; poll and hot-reload) ─set_part("file")─▶ Store
//! ```
//! The file source reads Kubernetes-shaped objects (v1 Service, sluice.dev/v1alpha1 Workload and ReleasePolicy),
//! so one policy works in a file and in a cluster. Every error names `file:line`, the object and the field.
//!
//! - `file`: the public API (load, watch, validate) and reading files.
//! - `objects`: the serde wire types and per-object checks.
//! - `documents`: one file's text → typed objects, with lines for serde errors.
//! - `assemble`: typed objects → Model (selection, ports, duplicates, policy targets).
//! - `lines`, `error`: document splitting, key lookup, and error formatting.
//! - `shape`: size and nesting depth, checked before the YAML parser runs.
//! - `settle`: which edits wait for the removal grace (a slow writer's half-written file).
//! - `kube`: Kubernetes mode: watchers, one index, the ReleasePolicy CRD.

mod assemble;
mod documents;
mod error;
pub mod file;
#[cfg(feature = "kube")]
pub mod kube;
mod lines;
mod objects;
mod settle;
mod shape;

pub use file::{
    FileSourceStatus, LoadError, LoadErrors, REMOVAL_GRACE, SOURCE, WatchOptions, load_paths, parse_str,
    validate_command, validate_to, watch, watch_with,
};

/// The Bookinfo example (`config/bookinfo.yaml`), served when no source is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/bookinfo.yaml");
