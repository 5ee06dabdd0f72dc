//! TLS passed through an ingress gateway (an Istio `Gateway` server with `tls.mode: PASSTHROUGH`): the gateway
//! reads only the SNI of each connection and proxies it, still encrypted, to the destination a bound
//! VirtualService's `tls` route names; the backend terminates TLS with its own certificate.
//!
//! ```text
//!  server (PASSTHROUGH, hosts) × VirtualService tls[i].match[j] (sniHosts met with the hosts; port, if set, = P)
//!     ─▶ filter chain: server_names = those names ── tcp_proxy ─▶ outbound|PORT|SUBSET|HOST (weighted if several)
//! ```
//! Destinations resolve as a gateway `http` route's do (`mesh_route::resolve`: a short host in the
//! VirtualService's namespace, the named port or the first); a route none of whose destinations resolves gets no
//! chain, so its SNI finds nothing and the connection is closed.

use super::listener::{TCP_PROXY_FILTER, chain};
use super::{naming, pack};
use crate::model::mesh::{RouteDestination, Server, host_admits, host_intersection, split_host};
use crate::model::{Model, ObjectKey};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use std::collections::BTreeSet;

/// The chains of one PASSTHROUGH server of the Gateway `key` on `port`, in VirtualService key order, then route
/// and match order. Each carries its SNI names; the listener drops names an earlier chain took.
pub(super) fn passthrough_chains(model: &Model, key: &ObjectKey, server: &Server, port: u16) -> Vec<FilterChain> {
    let mut out = Vec::new();
    for (vs_key, vs) in model.virtual_services.iter().filter(|(k, vs)| vs.spec.binds(&k.namespace, key)) {
        let hosts: Vec<&str> = (server.hosts.iter())
            .filter(|h| host_admits(h, &key.namespace, &vs_key.namespace))
            .map(|h| split_host(h).1)
            .collect();
        for route in &vs.spec.tls {
            let Some(proxy) = tcp_proxy_to(model, &vs_key.namespace, &route.route) else { continue };
            for m in route.matches.iter().filter(|m| m.port.is_none_or(|p| p == port)) {
                let names: BTreeSet<&str> = (m.sni_hosts.iter())
                    .flat_map(|sni| hosts.iter().filter_map(move |h| host_intersection(h, sni)))
                    .collect();
                if names.is_empty() {
                    continue;
                }
                let mut c = chain(TCP_PROXY_FILTER, pack(&proxy));
                let server_names = names.into_iter().filter(|n| *n != "*").map(String::from).collect();
                c.filter_chain_match = Some(FilterChainMatch { server_names, ..Default::default() });
                out.push(c);
            }
        }
    }
    out
}

/// A TCP proxy to the route's destinations (the cluster named as istiod names it), or `None` when none resolves.
fn tcp_proxy_to(model: &Model, namespace: &str, route: &[RouteDestination]) -> Option<TcpProxy> {
    let mut clusters: Vec<(String, u32)> = Vec::new();
    for d in route {
        let Some((_, svc, port)) = super::mesh_route::resolve(model, &d.destination, namespace) else { continue };
        let subset = d.destination.subset.as_deref().unwrap_or("");
        let weight = d.weight.unwrap_or(if route.len() == 1 { 100 } else { 0 });
        clusters.push((naming::outbound_cluster(svc, port.port, subset), weight));
    }
    clusters.retain(|(_, w)| *w > 0 || route.len() == 1);
    let specifier = match clusters.as_slice() {
        [] => return None,
        [(name, _)] => tcp_proxy::ClusterSpecifier::Cluster(name.clone()),
        many => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: (many.iter())
                .map(|(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let stat_prefix = match &specifier {
        tcp_proxy::ClusterSpecifier::Cluster(name) => name.clone(),
        _ => "weighted".to_string(),
    };
    Some(TcpProxy { stat_prefix, cluster_specifier: Some(specifier), ..Default::default() })
}
