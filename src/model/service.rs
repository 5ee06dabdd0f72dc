//! Services and the endpoints behind them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Kubernetes-shaped Service: a name, ports, and (for sources that select) a label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    /// Labels a workload must carry to back this service (file source only; Kubernetes resolves selection).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The virtual IP clients reach it at (`spec.clusterIP`; `None` for a headless Service or none given): an
    /// intercepting sidecar routes connections to it, and HTTP requests addressed to it by IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name; may be empty for a single-port service.
    #[serde(default)]
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    /// `http`, `http2`, `grpc`, `tcp`...; decides the listener's protocol. Empty means HTTP, as Bookinfo uses.
    #[serde(default)]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// Whether this port carries HTTP (HTTP/1.1, HTTP/2, gRPC) and so gets routes; other ports get TCP proxying.
    pub fn is_http(&self) -> bool {
        let proto = self.app_protocol.as_deref().unwrap_or("");
        let by_name = self.name.split('-').next().unwrap_or("");
        let p = if proto.is_empty() { by_name } else { proto };
        !matches!(p.to_ascii_lowercase().as_str(), "tcp" | "tls" | "mongo" | "mysql" | "redis")
    }

    /// Whether upstream connections should use HTTP/2 (gRPC and h2 ports).
    pub fn is_http2(&self) -> bool {
        let proto = self.app_protocol.as_deref().unwrap_or(&self.name);
        let p = proto.to_ascii_lowercase();
        p.starts_with("grpc") || p.starts_with("http2") || p == "h2c" || p == "kubernetes.io/h2c"
    }
}

/// A Service's `targetPort`: a number, or the name of a port the workload declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// The labels istiod reads a workload's locality from (its node's topology labels; in Kubernetes mode an
/// EndpointSlice's `zone` fills the zone): EDS groups endpoints by them.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// One address that serves a service: a pod, or a `Workload` from a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The workload or pod name (for debugging and metadata only).
    pub name: String,
    /// IP address.
    pub address: String,
    /// Service port → the port this endpoint listens on. A service port missing here is not served by it.
    pub ports: BTreeMap<u16, u16>,
    /// The workload's labels; the version label decides its subset.
    pub labels: BTreeMap<String, String>,
    /// Ready endpoints get traffic; others get none.
    pub ready: bool,
    /// Terminating endpoints get no new requests but stay listed (draining) rather than cut.
    #[serde(default)]
    pub terminating: bool,
    /// The workload's service account (a Pod's `spec.serviceAccountName`, a Workload's `spec.serviceAccount`):
    /// its mesh identity `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`, which clients verify when they connect over mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl Endpoint {
    /// The value of a label, e.g. the version under `version`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// Whether a sidecar fronts this endpoint and takes mesh mTLS: the label `security.istio.io/tlsMode: istio`
    /// (injected pods carry it), which istiod exports as endpoint metadata for the clusters' transport socket match.
    pub fn has_sidecar(&self) -> bool {
        self.label(TLS_MODE_LABEL) == Some(TLS_MODE_ISTIO)
    }
}

/// The label that says a workload has a sidecar (istiod's `security.istio.io/tlsMode`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Its value for a workload whose sidecar takes mesh mTLS.
pub const TLS_MODE_ISTIO: &str = "istio";
