//! Listeners, by how the proxy captures traffic.
//!
//! ```text
//!  Listen(addr)  ─▶ sluice_listen_<ip>_<port> ── HCM ── RDS "sluice-listen"   (HCM filters: fault, cors, router)
//!  Intercept     ─▶ see `intercept` (virtualOutbound 15001, virtualInbound 15006)
//!  Gateway       ─▶ see `gateway` (0.0.0.0_P per Istio Gateway server port, RDS http.P / https.P.…)
//!  Proxyless     ─▶ API listeners fqdn:P, name.ns.svc:P, name.ns:P, name:P ── HCM ── RDS "P"
//! ```

use super::{ads_config_source, naming, pack, socket_address};
use crate::model::{InterceptionMode, Model, ProxyInfo};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::BoolValue;

pub(super) const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub(super) const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

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
        InterceptionMode::Intercept => super::intercept::listeners(model, proxy),
        InterceptionMode::Proxyless => proxyless_listeners(model, proxy),
        InterceptionMode::Gateway(role) => super::gateway::listeners(model, proxy, role),
    };
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Where an HCM gets its routes.
pub(super) enum Route {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

pub(super) fn hcm(stat_prefix: &str, routes: Route, extra: &[HttpFilter]) -> HttpConnectionManager {
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
pub(super) fn sidecar_hcm(mut hcm: HttpConnectionManager) -> HttpConnectionManager {
    use http_connection_manager::{PathWithEscapedSlashesAction, UpgradeConfig};
    hcm.stream_idle_timeout = Some(super::seconds(0));
    hcm.upgrade_configs = vec![UpgradeConfig { upgrade_type: "websocket".into(), ..Default::default() }];
    hcm.normalize_path = Some(BoolValue { value: true });
    hcm.path_with_escaped_slashes_action = PathWithEscapedSlashesAction::KeepUnchanged as i32;
    hcm
}

pub(super) fn tcp_proxy(stat_prefix: &str, cluster: &str) -> TcpProxy {
    TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    }
}

pub(super) fn chain(filter_name: &str, config: envoy_types::pb::google::protobuf::Any) -> FilterChain {
    FilterChain {
        filters: vec![Filter {
            name: filter_name.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(config)),
        }],
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
