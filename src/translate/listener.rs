//! Listeners, by how the proxy captures traffic.
//!
//! ```text
//!  Listen(addr)  ─▶ sluice_listen_<ip>_<port> ── HCM ── RDS "sluice-listen"   (HCM filters: fault, cors, router)
//!  Intercept     ─▶ virtualOutbound :15001 (original dst) ─┬─▶ 0.0.0.0_P  HCM ── RDS "P"    (HTTP ports)
//!                                                          ├─▶ 0.0.0.0_P  tcp_proxy       (TCP-only ports)
//!                                                          └─▶ default: tcp_proxy PassthroughCluster
//!                   virtualInbound  :15006 (original dst) ──▶ per inbound port: HCM ── inbound|P||
//!  Proxyless     ─▶ API listeners fqdn:P, name.ns.svc:P, name.ns:P, name:P ── HCM ── RDS "P"
//! ```

use super::{ads_config_source, naming, pack, socket_address};
use crate::model::{InterceptionMode, Model, ProxyInfo};
use envoy_types::pb::envoy::config::listener::v3::{
    ApiListener, Filter, FilterChain, FilterChainMatch, Listener, filter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::{BTreeMap, BTreeSet};

const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const ANY_IP: &str = "0.0.0.0";

/// The listeners of one proxy, sorted by name.
pub fn listeners(model: &Model, proxy: &ProxyInfo) -> Vec<Listener> {
    let mut out = match &proxy.mode {
        InterceptionMode::Listen(addr) => {
            let filters = super::mesh_filters::http_filters();
            let hcm = sidecar_hcm(hcm("sluice_listen", Route::Rds(naming::LISTEN_ROUTE_CONFIG.to_string()), &filters));
            vec![Listener {
                name: naming::listen_listener(addr),
                address: Some(socket_address(&addr.ip().to_string(), addr.port())),
                filter_chains: vec![chain(HCM_FILTER, pack(&hcm))],
                // Envoy's default SO_REUSEPORT lets a second process bind the same address and silently take a
                // share of the connections; a listen-mode port is the proxy's own, so a clash must fail loudly
                // (Envoy NACKs the listener) instead.
                enable_reuse_port: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
                ..Default::default()
            }]
        }
        InterceptionMode::Intercept => intercept_listeners(model, proxy),
        InterceptionMode::Proxyless => proxyless_listeners(model, proxy),
    };
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Where an HCM gets its routes.
enum Route {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

fn hcm(stat_prefix: &str, routes: Route, extra: &[HttpFilter]) -> HttpConnectionManager {
    use http_connection_manager::RouteSpecifier;
    let route_specifier = match routes {
        Route::Rds(name) => {
            RouteSpecifier::Rds(Rds { config_source: Some(ads_config_source()), route_config_name: name })
        }
        Route::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    let router = HttpFilter {
        name: ROUTER_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(&Router::default()))),
        ..Default::default()
    };
    HttpConnectionManager {
        codec_type: http_connection_manager::CodecType::Auto as i32,
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(route_specifier),
        http_filters: extra.iter().cloned().chain([router]).collect(),
        ..Default::default()
    }
}

/// An Envoy sidecar's connection manager as istiod writes it where the user wrote nothing: no idle timeout on a
/// stream (Envoy's 5 minutes would cut a quiet long poll or gRPC stream), WebSocket upgrades allowed, paths
/// normalized (RFC 3986) before matching and escaped slashes kept as sent. Not for proxyless gRPC clients, which
/// read none of it.
fn sidecar_hcm(mut hcm: HttpConnectionManager) -> HttpConnectionManager {
    use http_connection_manager::{PathWithEscapedSlashesAction, UpgradeConfig};
    hcm.stream_idle_timeout = Some(super::seconds(0));
    hcm.upgrade_configs = vec![UpgradeConfig { upgrade_type: "websocket".into(), ..Default::default() }];
    hcm.normalize_path = Some(BoolValue { value: true });
    hcm.path_with_escaped_slashes_action = PathWithEscapedSlashesAction::KeepUnchanged as i32;
    hcm
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    }
}

fn chain(filter_name: &str, config: envoy_types::pb::google::protobuf::Any) -> FilterChain {
    FilterChain {
        filters: vec![Filter {
            name: filter_name.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(config)),
        }],
        ..Default::default()
    }
}

fn intercept_listeners(model: &Model, proxy: &ProxyInfo) -> Vec<Listener> {
    let passthrough = tcp_proxy("PassthroughCluster", naming::PASSTHROUGH_CLUSTER);
    let mut out = vec![Listener {
        name: "virtualOutbound".to_string(),
        address: Some(socket_address(ANY_IP, OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        default_filter_chain: Some(chain(TCP_PROXY_FILTER, pack(&passthrough))),
        ..Default::default()
    }];
    out.extend(outbound_port_listeners(model));
    // Without inbound ports there is nothing to accept, and Envoy refuses a listener without filter chains.
    if !proxy.inbound_ports.is_empty() {
        out.push(virtual_inbound(&proxy.inbound_ports));
    }
    out
}

/// `0.0.0.0_P` per service port, not bound: virtualOutbound hands connections over by original destination.
fn outbound_port_listeners(model: &Model) -> Vec<Listener> {
    let mut http_ports = BTreeSet::new();
    let mut tcp_owners: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for svc in model.services.values() {
        for port in &svc.ports {
            if port.is_http() {
                http_ports.insert(port.port);
            } else {
                tcp_owners.entry(port.port).or_default().push(naming::outbound_cluster(svc, port.port, ""));
            }
        }
    }
    let filters = super::mesh_filters::http_filters();
    let mut out = Vec::new();
    for port in &http_ports {
        let name = naming::outbound_port_listener(*port);
        let hcm = sidecar_hcm(hcm(&format!("outbound_{name}"), Route::Rds(naming::port_route_config(*port)), &filters));
        out.push(unbound_listener(name, *port, chain(HCM_FILTER, pack(&hcm))));
    }
    for (port, owners) in tcp_owners.iter().filter(|(p, _)| !http_ports.contains(*p)) {
        let name = naming::outbound_port_listener(*port);
        // A port shared by several TCP services cannot be told apart without the IP: pass it through.
        let cluster = match owners.as_slice() {
            [only] => only.as_str(),
            _ => naming::PASSTHROUGH_CLUSTER,
        };
        let tcp = tcp_proxy(&format!("outbound_{name}"), cluster);
        out.push(unbound_listener(name, *port, chain(TCP_PROXY_FILTER, pack(&tcp))));
    }
    out
}

fn unbound_listener(name: String, port: u16, filter_chain: FilterChain) -> Listener {
    Listener {
        name,
        address: Some(socket_address(ANY_IP, port)),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![filter_chain],
        ..Default::default()
    }
}

fn virtual_inbound(ports: &[u16]) -> Listener {
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    let filter_chains = ports
        .into_iter()
        .map(|port| {
            let cluster = naming::inbound_cluster(port);
            let vhost = VirtualHost {
                name: format!("inbound|http|{port}"),
                domains: vec!["*".to_string()],
                routes: vec![super::route::inbound_to_cluster("default", &cluster)],
                ..Default::default()
            };
            let config = RouteConfiguration { name: cluster, virtual_hosts: vec![vhost], ..Default::default() };
            let hcm = sidecar_hcm(hcm(&format!("inbound_0.0.0.0_{port}"), Route::Inline(Box::new(config)), &[]));
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: u32::from(port) }),
                    ..Default::default()
                }),
                ..chain(HCM_FILTER, pack(&hcm))
            }
        })
        .collect();
    Listener {
        name: "virtualInbound".to_string(),
        address: Some(socket_address(ANY_IP, INBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        filter_chains,
        ..Default::default()
    }
}

/// API listeners, one per name a gRPC client may dial (`xds:///reviews.default:9080`), all with RDS by port.
fn proxyless_listeners(model: &Model, proxy: &ProxyInfo) -> Vec<Listener> {
    let filters = super::mesh_filters::proxyless_filters(model);
    let mut out = Vec::new();
    for svc in model.services.values() {
        for port in svc.ports.iter().filter(|p| p.is_http()) {
            let rds = Route::Rds(naming::port_route_config(port.port));
            let hcm = hcm(&naming::virtual_host(svc, port.port), rds, &filters);
            let api = pack(&hcm);
            for host in naming::host_names(svc, &proxy.namespace) {
                out.push(Listener {
                    name: format!("{host}:{}", port.port),
                    api_listener: Some(ApiListener { api_listener: Some(api.clone()) }),
                    ..Default::default()
                });
            }
        }
    }
    out
}
