//! The xDS metrics, as handles registered once per process: a push, an ACK or a NACK costs an atomic update,
//! never a registry lookup or an allocation.
//!
//! The handles bind to the recorder installed when they are first used; [`crate::server::Sluice::start`] installs
//! Sluice's before any stream runs.

use super::names;
use crate::xds::TypeKind;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use std::sync::LazyLock;
use std::time::Duration;

/// Per type (indexed by [`TypeKind::index`]) and per protocol.
pub struct XdsMetrics {
    pushes: [Counter; 5],
    push_time: [Histogram; 5],
    config_size: [Histogram; 5],
    rejects: [Counter; 5],
    contained: [Counter; 5],
    connected_sotw: Gauge,
    connected_delta: Gauge,
    convergence: Histogram,
    debounce: Histogram,
}

static XDS: LazyLock<XdsMetrics> = LazyLock::new(|| {
    super::install();
    let per_type = |f: &dyn Fn(&'static str) -> Counter| TypeKind::ALL.map(|k| f(k.short()));
    let per_type_h = |f: &dyn Fn(&'static str) -> Histogram| TypeKind::ALL.map(|k| f(k.short()));
    XdsMetrics {
        pushes: per_type(&|t| counter!(names::XDS_PUSHES, "type" => t)),
        push_time: per_type_h(&|t| histogram!(names::XDS_PUSH_TIME, "type" => t)),
        config_size: per_type_h(&|t| histogram!(names::XDS_CONFIG_SIZE, "type" => t)),
        rejects: per_type(&|t| counter!(names::XDS_REJECTS, "type" => t)),
        contained: per_type(&|t| counter!(names::XDS_CONTAINED, "type" => t)),
        connected_sotw: gauge!(names::XDS_CONNECTED, "protocol" => "sotw"),
        connected_delta: gauge!(names::XDS_CONNECTED, "protocol" => "delta"),
        convergence: histogram!(names::PROXY_CONVERGENCE_TIME),
        debounce: histogram!(names::DEBOUNCE_TIME),
    }
});

/// The process's xDS metrics.
pub fn get() -> &'static XdsMetrics {
    &XDS
}

impl XdsMetrics {
    /// One response of `kind` sent: `bytes` of resources, `took` to compute and hand to the transport.
    pub fn pushed(&self, kind: TypeKind, bytes: usize, took: Duration) {
        self.pushes[kind.index()].increment(1);
        self.push_time[kind.index()].record(took.as_secs_f64());
        self.config_size[kind.index()].record(bytes as f64);
    }

    /// The proxy rejected a response of `kind`.
    pub fn rejected(&self, kind: TypeKind) {
        self.rejects[kind.index()].increment(1);
    }

    /// A NACK was traced to one part of the config (a resource, or a route configuration's virtual host), which is
    /// held back for that proxy while everything else goes on.
    pub fn contained(&self, kind: TypeKind) {
        self.contained[kind.index()].increment(1);
    }

    /// A stream of `protocol` (`sotw` or `delta`) opened (`+1`) or closed (`-1`).
    pub fn connected(&self, protocol: &str, delta: f64) {
        let gauge = if protocol == "delta" { &self.connected_delta } else { &self.connected_sotw };
        gauge.increment(delta);
    }

    /// A proxy holds in full a config that changed `took` ago.
    pub fn converged(&self, took: Duration) {
        self.convergence.record(took.as_secs_f64());
    }

    /// A change waited `took` before its snapshot build started.
    pub fn debounced(&self, took: Duration) {
        self.debounce.record(took.as_secs_f64());
    }
}
