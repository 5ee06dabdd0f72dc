//! Translate (placeholder API; the real module replaces this file).
use crate::model::{Model, ObjectKey, ProxyInfo};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteScope {
    pub namespace: String,
}
pub fn clusters(_: &Model) -> Vec<Cluster> {
    Vec::new()
}
pub fn load_assignments(_: &Model) -> Vec<ClusterLoadAssignment> {
    Vec::new()
}
pub fn service_load_assignments(_: &Model, _: &ObjectKey) -> Vec<ClusterLoadAssignment> {
    Vec::new()
}
pub fn route_scope(_: &Model, p: &ProxyInfo) -> RouteScope {
    RouteScope { namespace: p.namespace.clone() }
}
pub fn route_configs(_: &Model, _: &RouteScope) -> Vec<RouteConfiguration> {
    Vec::new()
}
pub fn listeners(_: &Model, _: &ProxyInfo) -> Vec<Listener> {
    Vec::new()
}
pub fn proxy_clusters(_: &Model, _: &ProxyInfo) -> Vec<Cluster> {
    Vec::new()
}
