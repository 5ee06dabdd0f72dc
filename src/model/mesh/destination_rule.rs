//! `networking.istio.io` DestinationRule: subsets (by labels) and the traffic policy of a host's clusters.
//!
//! A subset's `trafficPolicy` replaces the rule's policy section by section (`loadBalancer`, `connectionPool`,
//! `outlierDetection`, `tls`), as istiod merges them. TLS also has a per-port level (`portLevelSettings[].tls`):
//! for one cluster the subset's port level wins, then the subset's `tls`, then the rule's port level, then the
//! rule's `tls` (istiod's `MergeTrafficPolicy`); a port-level entry without `tls` means no TLS (it does not
//! inherit). Sluice translates only `tls` of a port-level entry (the other sections are reported as ignored).

use super::PortSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationRule {
    pub name: String,
    pub namespace: String,
    pub spec: DestinationRuleSpec,
    /// Where it came from and how old it is: decides between two objects for one Service.
    #[serde(default, skip_serializing_if = "super::is_unset")]
    pub provenance: super::Provenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// `portLevelSettings[]`: the TLS of one destination port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortTrafficPolicy {
    #[serde(default)]
    pub port: PortSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

/// `tls`: how a client connects to the destination (istiod's `ClientTLSSettings`). File paths are read by the
/// client's Envoy; `credentialName` (a Kubernetes Secret) is not supported and refuses the rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    #[serde(default)]
    pub mode: ClientTlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plaintext (istiod's default when `tls` is written without a mode).
    #[default]
    Disable,
    /// TLS, verifying the server with `caCertificates`.
    Simple,
    /// TLS with a client certificate from files.
    Mutual,
    /// The mesh's mTLS: the proxy's SDS identity, the destination's service accounts verified.
    IstioMutual,
}

impl TrafficPolicy {
    /// The TLS of this (merged) policy on `port`: a port-level entry's (absent `tls`: none), else the policy's.
    pub fn tls_for(&self, port: u16) -> Option<&ClientTls> {
        match self.port_level_settings.iter().find(|p| p.port.number == port) {
            Some(level) => level.tls.as_ref(),
            None => self.tls.as_ref(),
        }
    }

    /// `subset` laid over `self`, section by section.
    pub fn merged(base: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>) -> Option<TrafficPolicy> {
        match (base, subset) {
            (None, None) => None,
            (Some(b), None) => Some(b.clone()),
            (None, Some(s)) => Some(s.clone()),
            (Some(b), Some(s)) => Some(TrafficPolicy {
                load_balancer: s.load_balancer.clone().or_else(|| b.load_balancer.clone()),
                connection_pool: s.connection_pool.clone().or_else(|| b.connection_pool.clone()),
                outlier_detection: s.outlier_detection.clone().or_else(|| b.outlier_detection.clone()),
                tls: s.tls.clone().or_else(|| b.tls.clone()),
                // The subset's `tls` beats the rule's port level; otherwise the subset's port levels beat the rule's.
                port_level_settings: match s.tls {
                    Some(_) => s.port_level_settings.clone(),
                    None => {
                        let mut levels = s.port_level_settings.clone();
                        let own = |n: u16| s.port_level_settings.iter().any(|p| p.port.number == n);
                        levels.extend(b.port_level_settings.iter().filter(|p| !own(p.port.number)).cloned());
                        levels
                    }
                },
            }),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// Exactly one hash key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashLb {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash's minimum ring size (Envoy's default 1024 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCookie {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A duration; Envoy generates the cookie when it is set and the request has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}
