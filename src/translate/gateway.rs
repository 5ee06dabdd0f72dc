//! An ingress gateway proxy's config, as istiod writes a `router`'s: listeners only for the servers of the Gateways
//! that configure it (Istio `Gateway`s, and Gateway API `Gateway`s of Sluice's class, whose listeners become
//! servers as istiod converts them), and routes only from what is bound to those servers.
//!
//! ```text
//!  Gateways of the proxy (the one it names, or labels ⊇ selector / gateway-name label) ─▶ servers, by port
//!   HTTP  port P ─▶ Listener 0.0.0.0_P ── one chain: HCM ── RDS "http.P"
//!   HTTPS port P ─▶ Listener 0.0.0.0_P ── tls_inspector; a chain per server: SNI = its hosts,
//!                                          DownstreamTlsContext (files or Secret), HCM ── RDS "https.P.PORTNAME.GATEWAY.NS"
//!   TLS / HTTPS PASSTHROUGH ─▶ on the same TLS listener, a chain per bound `tls` route match (gateway_tls)
//!  Istio:       VirtualService (gateways: [gw | ns/gw]) × server hosts ─▶ virtual host "HOST:P", domains [HOST]
//!  Gateway API: HTTPRoutes attached to the listener (model::mesh::gateway_view) ─▶ virtual hosts per hostname
//!     rules ─▶ mesh_route::gateway_routes (the sidecar's route code: matches, splits, ReleasePolicy inside)
//! ```
//!
//! A request whose Host no virtual host takes gets Envoy's 404. On one port the first server's wire protocol (plain
//! HTTP, or TLS; Istio Gateways by key, then Gateway API Gateways) wins; servers of the other there are left out,
//! as istiod does with conflicting servers. An SNI name goes to the first chain that claims it. An HTTPS server whose certificate Secret is missing is left out (the other
//! servers keep serving). Clusters and assignments are the shared outbound ones.

use super::listener::{HCM_FILTER, Route as Rds, chain, hcm, sidecar_hcm};
use super::mesh_route::{MeshRule, gateway_routes};
use super::route::RouteScope;
use super::{pack, socket_address, tls};
use crate::model::mesh::{
    ApiServer, GATEWAY_NAME_LABEL, GatewayView, Server, ServerProtocol, TlsSecret, gateway_view, host_admits,
    host_intersection, split_host,
};
use crate::model::{GatewayRole, Model, ObjectKey, ProxyInfo};
use envoy_types::pb::envoy::config::listener::v3::{FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::{BTreeMap, BTreeSet};

/// The Gateways that configure a gateway proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selected {
    /// Istio Gateways.
    pub istio: BTreeSet<ObjectKey>,
    /// Gateway API Gateways (of Sluice's class).
    pub api: BTreeSet<ObjectKey>,
}

/// The Gateways that configure a gateway proxy: those of the key it names (of either API), else the Istio
/// Gateways whose selector its labels satisfy and the Gateway API Gateway its `gateway-name` label names.
pub(crate) fn selected(model: &Model, role: &GatewayRole, proxy: &ProxyInfo) -> Selected {
    let api_ok = |k: &ObjectKey| crate::model::mesh::is_sluice_gateway(model, k);
    match &role.named {
        Some(key) => Selected {
            istio: model.gateways.contains_key(key).then(|| key.clone()).into_iter().collect(),
            api: api_ok(key).then(|| key.clone()).into_iter().collect(),
        },
        None => Selected {
            istio: model
                .gateways
                .iter()
                .filter(|(_, g)| g.spec.selects(&proxy.labels))
                .map(|(k, _)| k.clone())
                .collect(),
            api: proxy
                .labels
                .get(GATEWAY_NAME_LABEL)
                .map(|name| ObjectKey::new(proxy.namespace.clone(), name.clone()))
                .filter(api_ok)
                .into_iter()
                .collect(),
        },
    }
}

/// Where a server's routes (or, passing TLS through, its chains) come from.
enum Bind<'a> {
    Istio { key: &'a ObjectKey, server: &'a Server },
    Api { server: &'a ApiServer },
    Passthrough { key: &'a ObjectKey, server: &'a Server },
}

/// One server of a selected Gateway, with what its listener and routes need.
struct ServerRef<'a> {
    port: u16,
    protocol: ServerProtocol,
    /// The route configuration its HCM names.
    routes: String,
    /// HTTPS: the SNI names its chain matches (empty: any) and its TLS context.
    tls: Option<(Vec<String>, DownstreamTlsContext)>,
    bind: Bind<'a>,
}

/// The servers that are served, by port: on each port, the servers that speak what the first server speaks on the
/// wire (plain HTTP, or TLS: terminated or passed through). An HTTPS server without its certificate is left out.
fn servers<'a>(
    model: &'a Model,
    view: &'a GatewayView,
    selected: &Selected,
    proxy_namespace: &str,
) -> BTreeMap<u16, Vec<ServerRef<'a>>> {
    let mut by_port: BTreeMap<u16, Vec<ServerRef<'a>>> = BTreeMap::new();
    let mut push = |s: ServerRef<'a>| {
        let list = by_port.entry(s.port).or_default();
        if list.first().is_none_or(|first| first.protocol.is_tls() == s.protocol.is_tls()) {
            list.push(s);
        }
    };
    for (key, gw) in model.gateways.iter().filter(|(k, _)| selected.istio.contains(*k)) {
        for server in &gw.spec.servers {
            let (Some(port), Some(protocol)) = (server.port.port(), server.protocol()) else { continue };
            let (routes, tls, bind) = match protocol {
                ServerProtocol::Http => (format!("http.{port}"), None, Bind::Istio { key, server }),
                ServerProtocol::Https => match istio_tls(model, key, server, proxy_namespace) {
                    Some(ctx) => (
                        format!("https.{port}.{}.{}.{}", server.port.name, gw.name, gw.namespace),
                        Some((sni_names(&server.hosts), ctx)),
                        Bind::Istio { key, server },
                    ),
                    None => continue,
                },
                ServerProtocol::Tls => (String::new(), None, Bind::Passthrough { key, server }),
            };
            push(ServerRef { port, protocol, routes, tls, bind });
        }
    }
    for (key, state) in view.gateways.iter().filter(|(k, _)| selected.api.contains(*k)) {
        for server in &state.servers {
            let port = server.port;
            let (routes, tls) = match (&server.protocol, &server.cert) {
                (ServerProtocol::Http, _) => (format!("http.{port}"), None),
                (ServerProtocol::Https, Some(cert)) => {
                    let sni = server.hostname.iter().filter(|h| *h != "*").cloned().collect();
                    let routes = format!("https.{port}.default.{}.{}", server.internal, key.namespace);
                    (routes, Some((sni, inline(cert))))
                }
                (ServerProtocol::Https, None) | (ServerProtocol::Tls, _) => continue,
            };
            push(ServerRef { port, protocol: server.protocol, routes, tls, bind: Bind::Api { server } });
        }
    }
    by_port
}

fn inline(cert: &TlsSecret) -> DownstreamTlsContext {
    tls::gateway_server_inline(&cert.cert_chain, &cert.private_key)
}

/// An Istio HTTPS server's TLS context: its files, or the Secret its `credentialName` names (in the gateway
/// proxy's namespace, as istiod looks it up, else the Gateway's); `None` when the Secret is missing.
fn istio_tls(model: &Model, key: &ObjectKey, server: &Server, proxy_namespace: &str) -> Option<DownstreamTlsContext> {
    let tls = server.tls.as_ref()?;
    if let Some(name) = tls.credential_name.as_deref().filter(|n| !n.is_empty()) {
        let secret = [proxy_namespace, key.namespace.as_str()]
            .iter()
            .find_map(|ns| model.secrets.get(&ObjectKey::new(*ns, name)))?;
        return Some(inline(secret));
    }
    let (Some(cert), Some(pk)) = (&tls.server_certificate, &tls.private_key) else { return None };
    Some(tls::gateway_server(cert, pk))
}

/// The listeners of a gateway proxy, one per server port, named as istiod's (`0.0.0.0_8080`).
pub(crate) fn listeners(model: &Model, proxy: &ProxyInfo, role: &GatewayRole) -> Vec<Listener> {
    let bind = role.bind.to_string();
    let view = gateway_view(model);
    let mut out = Vec::new();
    for (port, list) in servers(model, &view, &selected(model, role, proxy), &proxy.namespace) {
        let name = format!("{bind}_{port}");
        let mut listener = Listener {
            name: name.clone(),
            address: Some(socket_address(&bind, port)),
            // The port is the gateway's own: a second process binding it must fail loudly, not share it.
            enable_reuse_port: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let mut sni = Sni::default();
        for s in &list {
            if let Bind::Passthrough { key, server } = s.bind {
                for mut c in super::gateway_tls::passthrough_chains(model, key, server, port) {
                    let names = c.filter_chain_match.as_ref().map(|m| m.server_names.clone()).unwrap_or_default();
                    let Some(names) = sni.claim(&names) else { continue };
                    c.filter_chain_match = Some(FilterChainMatch { server_names: names, ..Default::default() });
                    listener.filter_chains.push(c);
                }
                continue;
            }
            let mut c = chain(HCM_FILTER, pack(&gateway_hcm(&format!("outbound_{name}"), &s.routes)));
            if let Some((names, ctx)) = &s.tls {
                let Some(names) = sni.claim(names) else { continue };
                c.filter_chain_match = Some(FilterChainMatch { server_names: names, ..Default::default() });
                c.transport_socket = Some(tls::downstream_socket(ctx));
            } else if !listener.filter_chains.is_empty() {
                continue; // HTTP servers on one port share one chain and `http.P`
            }
            listener.filter_chains.push(c);
        }
        if list.iter().any(|s| s.protocol.is_tls()) {
            listener.listener_filters.push(super::inbound_tls::tls_inspector());
        }
        if !listener.filter_chains.is_empty() {
            out.push(listener);
        }
    }
    out
}

/// The SNI names the chains of one listener have taken: Envoy refuses two chains that match one name (or two that
/// match any name), so a later chain keeps only the names no earlier chain took.
#[derive(Default)]
struct Sni {
    names: BTreeSet<String>,
    any: bool,
}

impl Sni {
    /// The names left for a chain matching `names` (empty: any name), or `None` when nothing is left.
    fn claim(&mut self, names: &[String]) -> Option<Vec<String>> {
        if names.is_empty() {
            return (!std::mem::replace(&mut self.any, true)).then(Vec::new);
        }
        let kept: Vec<String> = names.iter().filter(|n| self.names.insert((*n).clone())).cloned().collect();
        (!kept.is_empty()).then_some(kept)
    }
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
/// it), each with a virtual host per host that what is bound to the server and the server both accept.
pub(crate) fn route_configs(model: &Model, scope: &RouteScope, selected: &Selected) -> Vec<RouteConfiguration> {
    let view = gateway_view(model);
    let mut configs: BTreeMap<String, BTreeMap<String, VirtualHost>> = BTreeMap::new();
    for s in servers(model, &view, selected, &scope.namespace).into_values().flatten() {
        if matches!(s.bind, Bind::Passthrough { .. }) {
            continue; // TCP proxying: no routes
        }
        let hosts = configs.entry(s.routes.clone()).or_default();
        match s.bind {
            Bind::Istio { key, server } => bind_virtual_services(model, scope, key, server, s.port, hosts),
            Bind::Api { server } => bind_http_routes(model, scope, server, hosts),
            Bind::Passthrough { .. } => {}
        }
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

/// The virtual host for `host` on `port`, created empty.
fn virtual_host<'h>(hosts: &'h mut BTreeMap<String, VirtualHost>, host: &str, port: u16) -> &'h mut VirtualHost {
    hosts.entry(host.to_string()).or_insert_with(|| VirtualHost {
        name: format!("{host}:{port}"),
        domains: vec![host.to_string()],
        ..Default::default()
    })
}

/// Adds the virtual hosts of every VirtualService bound to the server's Gateway, host by host; a second
/// VirtualService for a host adds its routes after the first's.
fn bind_virtual_services(
    model: &Model,
    scope: &RouteScope,
    key: &ObjectKey,
    server: &Server,
    port: u16,
    hosts: &mut BTreeMap<String, VirtualHost>,
) {
    let mut done: BTreeSet<(&ObjectKey, String)> = BTreeSet::new();
    for (vs_key, vs) in model.virtual_services.iter().filter(|(k, vs)| vs.spec.binds(&k.namespace, key)) {
        let mut routes = None;
        for server_host in server.hosts.iter().filter(|h| host_admits(h, &key.namespace, &vs_key.namespace)) {
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
                    gateway_routes(model, scope, &rules, port)
                });
                virtual_host(hosts, host, port).routes.extend(routes.iter().cloned());
            }
        }
    }
}

/// Adds the virtual hosts of the HTTPRoutes attached to a Gateway API listener: per host, the rules of every
/// route that serves it, in Gateway API's precedence.
fn bind_http_routes(model: &Model, scope: &RouteScope, server: &ApiServer, hosts: &mut BTreeMap<String, VirtualHost>) {
    let mut by_host: BTreeMap<&str, Vec<&ObjectKey>> = BTreeMap::new();
    for a in &server.routes {
        for h in &a.hosts {
            by_host.entry(h).or_default().push(&a.route);
        }
    }
    for (host, keys) in by_host {
        let routes: Vec<_> = keys.into_iter().filter_map(|k| model.http_routes.get(k).map(|r| (k, r))).collect();
        let rules = super::gamma::gateway_rules(model, &routes);
        let vh = virtual_host(hosts, host, server.port);
        vh.routes.extend(gateway_routes(model, scope, &rules, server.port));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_goes_to_the_first_chain_that_claims_it() {
        let mut sni = Sni::default();
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(sni.claim(&v(&["a", "b"])), Some(v(&["a", "b"])));
        assert_eq!(sni.claim(&v(&["b", "c"])), Some(v(&["c"])));
        assert_eq!(sni.claim(&v(&["a"])), None);
        assert_eq!(sni.claim(&[]), Some(vec![]));
        assert_eq!(sni.claim(&[]), None, "one chain for any name");
    }

    #[test]
    fn sni_is_the_hosts_or_anything() {
        assert!(sni_names(&["*".into(), "a.com".into()]).is_empty());
        assert_eq!(sni_names(&["ns/b.com".into(), "a.com".into()]), ["a.com", "b.com"]);
    }
}
