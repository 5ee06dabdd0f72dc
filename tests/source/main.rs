//! The file source and translation, one test binary: `bookinfo.yaml` and every error path, hot reload, Istio and
//! Gateway API objects in files and `sluice validate`, the golden tests of `sluice::translate`, and its purity.
//!
//! Only `mesh` installs the metrics recorder, so `sluice_unsupported_fields_total` moves by its file alone.

#[path = "../common/mod.rs"]
mod common;

mod file;
mod gateway;
mod golden;
mod inject_golden;
mod istio_compat;
mod mesh;
mod mtls;
mod sidecar;
mod slow_writes;
mod translate_purity;
mod watch;
