//! What Sluice knows about one connected proxy, from its Envoy `Node`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// How a proxy captures traffic, which decides the listeners it gets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InterceptionMode {
    /// One HTTP listener bound at this address routes every visible service by Host header (no iptables).
    Listen(SocketAddr),
    /// Istio-style: an outbound capture listener on 15001 and an inbound one on 15006.
    Intercept,
    /// A proxyless gRPC client: asks LDS by name (`reviews.default.svc.cluster.local:9080`) and needs API
    /// listeners holding an HttpConnectionManager with RDS.
    Proxyless,
    /// An ingress gateway (istiod's `router`): listeners only for the servers of the Gateways that select it.
    Gateway(GatewayRole),
}

/// Which Gateways configure a gateway proxy, and where it binds their ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayRole {
    /// The Gateway named by `sluice bootstrap --gateway NS/NAME` (node metadata `SLUICE_GATEWAY`); `None`: every
    /// Gateway whose `selector` the proxy's labels satisfy, as Istio selects.
    pub named: Option<crate::model::ObjectKey>,
    /// The address the server ports bind (`0.0.0.0` as istiod's, a loopback address in tests).
    pub bind: std::net::IpAddr,
}

/// The facts about a proxy that config depends on. Parsed from node metadata by the xDS layer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Envoy's node id.
    pub id: String,
    /// The namespace the proxy runs in: short service names resolve here.
    pub namespace: String,
    pub mode: InterceptionMode,
    /// The labels of the workload this proxy fronts (for `sourceLabels` rules).
    pub labels: BTreeMap<String, String>,
    /// Ports the proxy's own workload serves (intercept mode's inbound listener).
    pub inbound_ports: Vec<u16>,
    /// Which namespaces' services the proxy is given (set from its certificate on the mTLS port).
    pub visibility: Visibility,
    /// The proxy takes part in workload mTLS: its agent serves it SDS (`default`, `ROOTCA`), so its clusters carry
    /// upstream TLS and its inbound listener terminates mTLS. Node metadata `SLUICE_MTLS: "true"`; every other
    /// proxy gets no TLS at all.
    #[serde(default)]
    pub mtls: bool,
    /// The proxy takes its sidecar route configurations' virtual hosts over VHDS (one resource per virtual host,
    /// so a weight change sends one): set by the stream for an Envoy on Delta ADS, unless `serve --no-vhds` or
    /// node metadata `SLUICE_VHDS: "false"`.
    #[serde(default)]
    pub vhds: bool,
}

/// The namespaces whose services (clusters, endpoints, routes, listeners) a proxy may see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Visibility {
    /// Every namespace: plaintext streams (no identity to scope by) and `--shared-namespaces '*'`.
    #[default]
    All,
    /// Only these: an mTLS proxy's own namespace plus the mesh-wide `--shared-namespaces`.
    Namespaces(BTreeSet<String>),
    /// Narrowed by an Istio Sidecar: the services its egress hosts allow, within the namespaces above (never set
    /// from a node: `Snapshot::view` derives it from the model, see `model::mesh::sidecar_scope`).
    Egress(Box<super::mesh::Egress>),
}

impl Visibility {
    pub fn sees(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespaces(set) => set.contains(namespace),
            Self::Egress(e) => e.within.as_ref().is_none_or(|set| set.contains(namespace)),
        }
    }
}

impl ProxyInfo {
    /// A proxy in listen mode, as tests and harnesses use.
    pub fn listening(id: &str, namespace: &str, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            namespace: namespace.into(),
            mode: InterceptionMode::Listen(addr),
            labels: BTreeMap::new(),
            inbound_ports: Vec::new(),
            visibility: Visibility::All,
            mtls: false,
            vhds: false,
        }
    }
}
