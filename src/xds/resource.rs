//! Encoded xDS resources: each encoded once per change, its bytes shared by every stream that sends it.

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType, cluster::DiscoveryType};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, route::Action, route_action::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::sync::Arc;

/// The five resource types Sluice serves, in the order a push sends them (make before break). `VirtualHost`
/// (VHDS) carries the virtual hosts of route configurations served in their VHDS form (see `translate::vhds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum TypeKind {
    Cluster,
    Endpoint,
    Listener,
    Route,
    VirtualHost,
}

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT_TYPE: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const VIRTUAL_HOST_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

impl TypeKind {
    /// Push order: clusters, their endpoints, listeners, routes, then the routes' virtual hosts.
    pub const ALL: [TypeKind; 5] =
        [TypeKind::Cluster, TypeKind::Endpoint, TypeKind::Listener, TypeKind::Route, TypeKind::VirtualHost];

    pub fn type_url(self) -> &'static str {
        match self {
            TypeKind::Cluster => CLUSTER_TYPE,
            TypeKind::Endpoint => ENDPOINT_TYPE,
            TypeKind::Listener => LISTENER_TYPE,
            TypeKind::Route => ROUTE_TYPE,
            TypeKind::VirtualHost => VIRTUAL_HOST_TYPE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Self> {
        TypeKind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// CDS and LDS are wildcard types: a stream that names nothing gets everything. So is VHDS as Envoy asks it:
    /// its first request names nothing, and Envoy files each virtual host under its route configuration by the
    /// name's prefix (namespace matching), so it gets the virtual hosts of every configuration in its view.
    pub fn is_wildcard(self) -> bool {
        matches!(self, TypeKind::Cluster | TypeKind::Listener | TypeKind::VirtualHost)
    }

    /// Short name for logs, metrics and debug pages.
    pub fn short(self) -> &'static str {
        match self {
            TypeKind::Cluster => "cds",
            TypeKind::Endpoint => "eds",
            TypeKind::Listener => "lds",
            TypeKind::Route => "rds",
            TypeKind::VirtualHost => "vhds",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One encoded resource. `refs` names what it depends on: for routes and listeners the clusters they send
/// traffic to; for an EDS cluster its assignment's name. Ordering uses them (make before break).
#[derive(Debug)]
pub struct Resource {
    pub name: String,
    /// Content hash of `body`: equal bytes, equal version.
    pub version: String,
    pub kind: TypeKind,
    pub body: Bytes,
    /// Ascending, no duplicates (merge passes in `xds::sorted` rely on it).
    pub refs: Box<[String]>,
}

/// Equal name, type and content hash: the same resource (the hash stands for the bytes, so diffs never compare them).
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.version == other.version && self.name == other.name
    }
}

impl Eq for Resource {}

/// Resources of one type by name; values are shared, never copied per stream.
pub type ResourceSet = imbl::OrdMap<String, Arc<Resource>>;

impl Resource {
    pub fn new(kind: TypeKind, name: String, body: Vec<u8>, mut refs: Vec<String>) -> Self {
        refs.sort_unstable();
        refs.dedup();
        let version = content_version(&body);
        Self { name, version, kind, body: Bytes::from(body), refs: refs.into_boxed_slice() }
    }

    pub fn cluster(c: &Cluster) -> Self {
        let eds =
            matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32);
        let refs = if eds {
            let service = c.eds_cluster_config.as_ref().map(|e| e.service_name.clone()).unwrap_or_default();
            vec![if service.is_empty() { c.name.clone() } else { service }]
        } else {
            Vec::new()
        };
        Self::new(TypeKind::Cluster, c.name.clone(), c.encode_to_vec(), refs)
    }

    pub fn route(r: &RouteConfiguration) -> Self {
        Self::new(TypeKind::Route, r.name.clone(), r.encode_to_vec(), route_refs(r))
    }

    /// A VHDS virtual host: its name is its resource name (`<route configuration>/<virtual host>`), which is how
    /// Envoy files it under its route configuration and how a removal finds it.
    pub fn virtual_host(v: &VirtualHost) -> Self {
        Self::new(TypeKind::VirtualHost, v.name.clone(), v.encode_to_vec(), vhost_refs(std::slice::from_ref(v)))
    }

    pub fn listener(l: &Listener) -> Self {
        Self::new(TypeKind::Listener, l.name.clone(), l.encode_to_vec(), listener_refs(l))
    }

    pub fn load_assignment(cla: &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment) -> Self {
        Self::new(TypeKind::Endpoint, cla.cluster_name.clone(), cla.encode_to_vec(), Vec::new())
    }

    /// The resource as a Delta response carries it: name, version and the `Any`.
    pub fn to_delta(&self) -> envoy_types::pb::envoy::service::discovery::v3::Resource {
        envoy_types::pb::envoy::service::discovery::v3::Resource {
            name: self.name.clone(),
            version: self.version.clone(),
            resource: Some(self.to_any()),
            ..Default::default()
        }
    }

    /// The resource as its message (`Cluster`, `ClusterLoadAssignment`, `Listener`, `RouteConfiguration` or
    /// `VirtualHost`, by [`Resource::kind`]).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.body.clone())
    }

    /// The resource as the `Any` a response carries (copies the bytes into the message).
    pub fn to_any(&self) -> Any {
        Any { type_url: self.kind.type_url().to_string(), value: self.body.to_vec() }
    }
}

/// A 64-bit xxh3 of the bytes, in hex: stable across runs and builds.
pub fn content_version(body: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body))
}

/// One version for a whole set: the hash of its names and versions (SotW `version_info`).
pub fn set_version<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (name, version) in items {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(version.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}

/// Clusters a route configuration sends traffic (or mirrors) to.
pub fn route_refs(r: &RouteConfiguration) -> Vec<String> {
    vhost_refs(&r.virtual_hosts)
}

/// The clusters a gRPC client asks for after taking this route configuration: those its routes send calls to with
/// a weight above 0 (gRPC skips weight-0 clusters and does not mirror).
pub fn routed_clusters(route_config: &[u8]) -> Vec<String> {
    let Ok(r) = RouteConfiguration::decode(route_config) else { return Vec::new() };
    let mut out = Vec::new();
    for action in route_actions(&r.virtual_hosts) {
        match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => out.push(c.clone()),
            Some(ClusterSpecifier::WeightedClusters(w)) => out.extend(
                w.clusters.iter().filter(|c| c.weight.as_ref().is_some_and(|w| w.value > 0)).map(|c| c.name.clone()),
            ),
            _ => {}
        }
    }
    out
}

/// The route actions of these virtual hosts (redirects and direct responses have none).
fn route_actions(
    vhosts: &[VirtualHost],
) -> impl Iterator<Item = &envoy_types::pb::envoy::config::route::v3::RouteAction> {
    vhosts.iter().flat_map(|vh| &vh.routes).filter_map(|route| match &route.action {
        Some(Action::Route(action)) => Some(action),
        _ => None,
    })
}

/// Clusters these virtual hosts send traffic (or mirror) to.
fn vhost_refs(vhosts: &[VirtualHost]) -> Vec<String> {
    let mut out = Vec::new();
    for action in route_actions(vhosts) {
        match &action.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => out.push(c.clone()),
            Some(ClusterSpecifier::WeightedClusters(w)) => out.extend(w.clusters.iter().map(|c| c.name.clone())),
            _ => {}
        }
        out.extend(action.request_mirror_policies.iter().map(|m| m.cluster.clone()));
    }
    out.sort();
    out.dedup();
    out
}

/// Clusters a listener names directly: TCP proxies and inline route configurations.
pub fn listener_refs(l: &Listener) -> Vec<String> {
    let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    let mut out: Vec<String> = chains.flat_map(|fc| fc.filters.iter()).flat_map(filter_refs).collect();
    out.sort();
    out.dedup();
    out
}

/// The route configurations a listener's HTTP connection managers take over RDS (filter chains and API listener).
pub fn rds_names(listener: &[u8]) -> Vec<String> {
    let Ok(l) = Listener::decode(listener) else { return Vec::new() };
    let chains = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    let hcms = chains.flat_map(|fc| fc.filters.iter()).filter_map(|f| match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => Some(any.clone()),
        _ => None,
    });
    let api = l.api_listener.and_then(|a| a.api_listener);
    hcms.chain(api)
        .filter(|any| any.type_url.ends_with("http_connection_manager.v3.HttpConnectionManager"))
        .filter_map(|any| HttpConnectionManager::decode(any.value.as_slice()).ok())
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect()
}

fn filter_refs(f: &Filter) -> Vec<String> {
    let Some(ConfigType::TypedConfig(any)) = &f.config_type else { return Vec::new() };
    if any.type_url.ends_with("tcp_proxy.v3.TcpProxy") {
        if let Ok(tcp) = TcpProxy::decode(any.value.as_slice())
            && let Some(tcp_proxy::ClusterSpecifier::Cluster(c)) = tcp.cluster_specifier
        {
            return vec![c];
        }
    } else if any.type_url.ends_with("http_connection_manager.v3.HttpConnectionManager")
        && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
        && let Some(RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier
    {
        return route_refs(&rc);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_equal_version_and_set_version_is_order_sensitive_to_content() {
        assert_eq!(content_version(b"abc"), content_version(b"abc"));
        assert_ne!(content_version(b"abc"), content_version(b"abd"));
        let a = set_version([("x", "1"), ("y", "2")].into_iter());
        let b = set_version([("x", "1"), ("y", "3")].into_iter());
        assert_ne!(a, b);
        // Name/version boundaries matter: ("xy","1") is not ("x","y1").
        assert_ne!(set_version([("xy", "1")].into_iter()), set_version([("x", "y1")].into_iter()));
    }

    #[test]
    fn type_urls_round_trip_in_push_order() {
        for k in TypeKind::ALL {
            assert_eq!(TypeKind::from_type_url(k.type_url()), Some(k));
        }
        assert!(TypeKind::Cluster < TypeKind::Endpoint && TypeKind::Listener < TypeKind::Route);
    }
}
