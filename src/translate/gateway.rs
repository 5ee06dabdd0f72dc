//! An ingress gateway proxy's config, as istiod writes a `router`'s: listeners only for the servers of the Istio
//! Gateways that select it, and routes only from the VirtualServices bound to those Gateways.
//!
//! ```text
//!  Gateways selecting the proxy (labels ⊇ selector, or the one it names) ─▶ servers, grouped by port number
//!   HTTP  port P ─▶ Listener 0.0.0.0_P ── one chain: HCM ── RDS "http.P"
//!   HTTPS port P ─▶ Listener 0.0.0.0_P ── tls_inspector; a chain per server: SNI = its hosts,
//!                                          DownstreamTlsContext (files), HCM ── RDS "https.P.PORTNAME.GATEWAY.NS"
//!  VirtualService (gateways: [gw | ns/gw]) × server hosts ─▶ virtual host "HOST:P", domains [HOST]
//!     http[] ─▶ mesh_route::gateway_routes (the sidecar's route code: matches, splits, ReleasePolicy inside)
//! ```
//!
//! A request whose Host no virtual host takes gets Envoy's 404. On one port the first server's protocol (by
//! Gateway key, then server order) wins; servers of the other protocol there are left out, as istiod does with
//! conflicting servers. Clusters and assignments are the shared outbound ones.

use super::listener::{HCM_FILTER, Route as Rds, chain, hcm, sidecar_hcm};
use super::mesh_route::{MeshRule, gateway_routes};
use super::route::RouteScope;
use super::{pack, socket_address, tls};
use crate::model::mesh::{Gateway, Server, ServerProtocol, host_admits, host_intersection, split_host};
use crate::model::{GatewayRole, Model, ObjectKey, ProxyInfo};
use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::{BTreeMap, BTreeSet};

/// The Gateways that configure a gateway proxy: the one it names, else those whose selector its labels satisfy.
pub(crate) fn selected(model: &Model, role: &GatewayRole, proxy: &ProxyInfo) -> BTreeSet<ObjectKey> {
    match &role.named {
        Some(key) => model.gateways.contains_key(key).then(|| key.clone()).into_iter().collect(),
        None => model.gateways.iter().filter(|(_, g)| g.spec.selects(&proxy.labels)).map(|(k, _)| k.clone()).collect(),
    }
}

/// One server of a selected Gateway, with what its listener and routes need.
struct ServerRef<'a> {
    key: &'a ObjectKey,
    server: &'a Server,
    port: u16,
    protocol: ServerProtocol,
    /// The route configuration its HCM names.
    routes: String,
}

/// The servers that are served, by port: on each port, the servers of the first server's protocol.
fn servers<'a>(model: &'a Model, gateways: &BTreeSet<ObjectKey>) -> BTreeMap<u16, Vec<ServerRef<'a>>> {
    let mut by_port: BTreeMap<u16, Vec<ServerRef<'a>>> = BTreeMap::new();
    for (key, gw) in model.gateways.iter().filter(|(k, _)| gateways.contains(*k)) {
        for server in &gw.spec.servers {
            let (Some(port), Some(protocol)) = (server.port.port(), server.port.protocol()) else { continue };
            let list = by_port.entry(port).or_default();
            if list.first().is_some_and(|first| first.protocol != protocol) {
                continue;
            }
            let routes = route_config_name(gw, server, port, protocol);
            list.push(ServerRef { key, server, port, protocol, routes });
        }
    }
    by_port
}

/// istiod's gateway route names: `http.P` shared by a port's HTTP servers; `https.P.PORTNAME.GATEWAY.NS` per
/// HTTPS server (each has its own certificate, so its own filter chain).
fn route_config_name(gw: &Gateway, server: &Server, port: u16, protocol: ServerProtocol) -> String {
    match protocol {
        ServerProtocol::Http => format!("http.{port}"),
        ServerProtocol::Https => format!("https.{port}.{}.{}.{}", server.port.name, gw.name, gw.namespace),
    }
}

/// The listeners of a gateway proxy, one per server port, named as istiod's (`0.0.0.0_8080`).
pub(crate) fn listeners(model: &Model, proxy: &ProxyInfo, role: &GatewayRole) -> Vec<Listener> {
    let bind = role.bind.to_string();
    let mut out = Vec::new();
    for (port, list) in servers(model, &selected(model, role, proxy)) {
        let name = format!("{bind}_{port}");
        let mut listener = Listener {
            name: name.clone(),
            address: Some(socket_address(&bind, port)),
            // The port is the gateway's own: a second process binding it must fail loudly, not share it.
            enable_reuse_port: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let mut seen_sni: BTreeSet<Vec<String>> = BTreeSet::new();
        for s in &list {
            let mut c = chain(HCM_FILTER, pack(&gateway_hcm(&format!("outbound_{name}"), &s.routes)));
            if s.protocol == ServerProtocol::Https {
                let Some(tls) = &s.server.tls else { continue };
                let (Some(cert), Some(key)) = (&tls.server_certificate, &tls.private_key) else { continue };
                let names = sni_names(&s.server.hosts);
                // Two chains with the same SNI match are refused by Envoy: the first server keeps it.
                if !seen_sni.insert(names.clone()) {
                    continue;
                }
                c.filter_chain_match = Some(FilterChainMatch { server_names: names, ..Default::default() });
                c.transport_socket = Some(tls::downstream_socket(&tls::gateway_server(cert, key)));
            } else if !listener.filter_chains.is_empty() {
                continue; // HTTP servers on one port share one chain and `http.P`
            }
            listener.filter_chains.push(c);
        }
        if list.iter().any(|s| s.protocol == ServerProtocol::Https) {
            listener.listener_filters.push(super::inbound_tls::tls_inspector());
        }
        if !listener.filter_chains.is_empty() {
            out.push(listener);
        }
    }
    out
}

/// The SNI names a server's chain matches: its hosts without the namespace part; none (any name) when one is `*`.
fn sni_names(hosts: &[String]) -> Vec<String> {
    let names: BTreeSet<String> = hosts.iter().map(|h| split_host(h).1.to_string()).collect();
    if names.contains("*") { Vec::new() } else { names.into_iter().collect() }
}

/// A gateway's connection manager: the sidecar's defaults, the mesh filters, and the client's address taken from
/// the connection (the gateway is the edge, as istiod sets `use_remote_address` on gateways).
fn gateway_hcm(
    stat_prefix: &str,
    routes: &str,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager {
    let filters = super::mesh_filters::http_filters();
    let mut out = sidecar_hcm(hcm(stat_prefix, Rds::Rds(routes.to_string()), &filters));
    out.use_remote_address = Some(BoolValue { value: true });
    out
}

/// The route configurations of a gateway proxy: one per name its listeners use (even empty: the listener names
/// it), each with a virtual host per host the bound VirtualServices and the server both accept.
pub(crate) fn route_configs(
    model: &Model,
    scope: &RouteScope,
    gateways: &BTreeSet<ObjectKey>,
) -> Vec<RouteConfiguration> {
    let mut configs: BTreeMap<String, BTreeMap<String, VirtualHost>> = BTreeMap::new();
    for s in servers(model, gateways).into_values().flatten() {
        let hosts = configs.entry(s.routes.clone()).or_default();
        bind_virtual_services(model, scope, &s, hosts);
    }
    configs
        .into_iter()
        .map(|(name, hosts)| RouteConfiguration {
            name,
            virtual_hosts: hosts.into_values().collect(),
            ignore_port_in_host_matching: true,
            ..Default::default()
        })
        .collect()
}

/// Adds the virtual hosts of every VirtualService bound to the server's Gateway, host by host; a second
/// VirtualService for a host adds its routes after the first's.
fn bind_virtual_services(
    model: &Model,
    scope: &RouteScope,
    s: &ServerRef<'_>,
    hosts: &mut BTreeMap<String, VirtualHost>,
) {
    let mut done: BTreeSet<(&ObjectKey, String)> = BTreeSet::new();
    for (vs_key, vs) in model.virtual_services.iter().filter(|(k, vs)| vs.spec.binds(&k.namespace, s.key)) {
        let mut routes = None;
        for server_host in s.server.hosts.iter().filter(|h| host_admits(h, &s.key.namespace, &vs_key.namespace)) {
            for vs_host in &vs.spec.hosts {
                let Some(host) = host_intersection(split_host(server_host).1, vs_host) else { continue };
                if !done.insert((vs_key, host.to_string())) {
                    continue;
                }
                let routes = routes.get_or_insert_with(|| {
                    let rules: Vec<MeshRule> = (vs.spec.http.iter().enumerate())
                        .map(|(index, http)| MeshRule {
                            origin: vs_key.clone(),
                            index,
                            http: http.clone(),
                            gateway_api: false,
                        })
                        .collect();
                    gateway_routes(model, scope, &rules, s.port)
                });
                let vh = hosts.entry(host.to_string()).or_insert_with(|| VirtualHost {
                    name: format!("{host}:{}", s.port),
                    domains: vec![host.to_string()],
                    ..Default::default()
                });
                vh.routes.extend(routes.iter().cloned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_is_the_hosts_or_anything() {
        assert!(sni_names(&["*".into(), "a.com".into()]).is_empty());
        assert_eq!(sni_names(&["ns/b.com".into(), "a.com".into()]), ["a.com", "b.com"]);
    }
}
