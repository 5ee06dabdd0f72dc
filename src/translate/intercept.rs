//! Intercept-mode listeners: what a sidecar whose pod's traffic iptables redirects (`sluice iptables`) listens on.
//!
//! ```text
//!  virtualOutbound :15001 (use_original_dst) ─ hands each connection to the listener of its original destination:
//!     CLUSTERIP_P   tcp_proxy ─▶ the Service's cluster      (a TCP port of a Service with a cluster IP)
//!     0.0.0.0_P     HCM ── RDS "P"                           (HTTP ports: by Host; unknown hosts: allow_any)
//!     0.0.0.0_P     tcp_proxy ─▶ the one Service on P, else PassthroughCluster   (TCP ports without an IP)
//!     default       tcp_proxy ─▶ PassthroughCluster          (outside the mesh: where it was going; a Sidecar's
//!                                                             REGISTRY_ONLY: BlackHoleCluster, see registry_only)
//!  virtualInbound :15006 (original_dst listener filter: chains match the original port; never handed over)
//!     per inbound port: HCM ─▶ inbound|P|| (127.0.0.1:P), or tcp_proxy for a TCP Service port targeting it
//!     default: tcp_proxy ─▶ InboundPassthroughClusterIpv4 (the original destination, from 127.0.0.6)
//!     with workload mTLS (`ProxyInfo::mtls`): + tls_inspector, and per port the chains of its PeerAuthentication
//!     mode (mTLS, plaintext, or plaintext refused; see `inbound_tls`)
//! ```
//! The listeners `virtualOutbound` hands over to are not bound (`bind_to_port: false`). `virtualInbound` must not
//! hand over (`use_original_dst`): a connection for the pod's port 9080 would reach the outbound `0.0.0.0_9080`,
//! which routes it back to the pod's own address, and round it goes. The inbound passthrough
//! connects from 127.0.0.6, which the interception rules let through (Envoy reaching its own pod's address would
//! otherwise be redirected back to 15006).

use super::listener::{HCM_FILTER, Route, TCP_PROXY_FILTER, chain, hcm, sidecar_hcm, tcp_proxy};
use super::{inbound_tls, naming, pack, socket_address};
use crate::model::{Model, ProxyInfo};
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::{BTreeMap, BTreeSet};

const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const ANY_IP: &str = "0.0.0.0";

pub(super) fn listeners(model: &Model, proxy: &ProxyInfo) -> Vec<Listener> {
    // Hosts outside the mesh: where they were going, or (REGISTRY_ONLY) nowhere.
    let fallback = super::registry_only::fallback(proxy);
    let unknown = tcp_proxy(fallback, fallback);
    let mut out = vec![Listener {
        name: "virtualOutbound".to_string(),
        address: Some(socket_address(ANY_IP, OUTBOUND_PORT)),
        use_original_dst: Some(BoolValue { value: true }),
        default_filter_chain: Some(chain(TCP_PROXY_FILTER, pack(&unknown))),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }];
    out.extend(outbound_port_listeners(model, fallback));
    out.push(virtual_inbound(model, proxy));
    out
}

/// Per service port, not bound: virtualOutbound hands connections over by original destination. `fallback`: the
/// cluster of a TCP port several services share (no IP to tell them apart).
fn outbound_port_listeners(model: &Model, fallback: &str) -> Vec<Listener> {
    let mut http_ports = BTreeSet::new();
    let mut tcp_owners: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for svc in model.services.values() {
        for port in &svc.ports {
            let cluster = naming::outbound_cluster(svc, port.port, "");
            if port.is_http() {
                http_ports.insert(port.port);
            } else if let Some(ip) = svc.cluster_ip {
                let name = format!("{ip}_{}", port.port);
                let tcp = tcp_proxy(&format!("outbound_{name}"), &cluster);
                let mut l = unbound_listener(name, port.port, chain(TCP_PROXY_FILTER, pack(&tcp)));
                l.address = Some(socket_address(&ip.to_string(), port.port));
                out.push(l);
            } else {
                tcp_owners.entry(port.port).or_default().push(cluster);
            }
        }
    }
    let filters = super::mesh_filters::http_filters();
    for port in &http_ports {
        let name = naming::outbound_port_listener(*port);
        let hcm = sidecar_hcm(hcm(&format!("outbound_{name}"), Route::Rds(naming::port_route_config(*port)), &filters));
        out.push(unbound_listener(name, *port, chain(HCM_FILTER, pack(&hcm))));
    }
    for (port, owners) in tcp_owners.iter().filter(|(p, _)| !http_ports.contains(*p)) {
        let name = naming::outbound_port_listener(*port);
        // A port shared by several TCP services cannot be told apart without their IPs: pass it through.
        let cluster = match owners.as_slice() {
            [only] => only.as_str(),
            _ => fallback,
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

/// Whether each inbound port of the proxy speaks HTTP: a port that a Service of its namespace selecting the
/// proxy's labels targets with a TCP port is TCP; every other port is HTTP.
pub(super) fn inbound_http(model: &Model, proxy: &ProxyInfo) -> BTreeMap<u16, bool> {
    let mut out: BTreeMap<u16, bool> = proxy.inbound_ports.iter().map(|p| (*p, true)).collect();
    let selects =
        |sel: &BTreeMap<String, String>| !sel.is_empty() && sel.iter().all(|(k, v)| proxy.labels.get(k) == Some(v));
    let mine = model.services.values().filter(|s| s.namespace == proxy.namespace && selects(&s.selector));
    for port in mine.flat_map(|s| &s.ports).filter(|p| !p.is_http()) {
        if let crate::model::TargetPort::Number(n) = port.target_port
            && let Some(http) = out.get_mut(&n)
        {
            *http = false;
        }
    }
    out
}

fn virtual_inbound(model: &Model, proxy: &ProxyInfo) -> Listener {
    let mut filter_chains = Vec::new();
    for (port, http) in inbound_http(model, proxy) {
        let cluster = naming::inbound_cluster(port);
        let stat = format!("inbound_0.0.0.0_{port}");
        let plain = if http {
            let vhost = VirtualHost {
                name: format!("inbound|http|{port}"),
                domains: vec!["*".to_string()],
                routes: vec![super::route::inbound_to_cluster("default", &cluster)],
                ..Default::default()
            };
            let config = RouteConfiguration { name: cluster, virtual_hosts: vec![vhost], ..Default::default() };
            let mut hcm = sidecar_hcm(hcm(&stat, Route::Inline(Box::new(config)), &[]));
            if proxy.mtls {
                inbound_tls::forward_client_cert(&mut hcm);
            }
            chain(HCM_FILTER, pack(&hcm))
        } else {
            chain(TCP_PROXY_FILTER, pack(&tcp_proxy(&stat, &cluster)))
        };
        if proxy.mtls {
            filter_chains.extend(inbound_tls::port_chains(model, proxy, port, http, plain));
        } else {
            let port_match = FilterChainMatch {
                destination_port: Some(UInt32Value { value: u32::from(port) }),
                ..Default::default()
            };
            filter_chains.push(FilterChain { filter_chain_match: Some(port_match), ..plain });
        }
    }
    let passthrough = tcp_proxy("InboundPassthroughClusterIpv4", naming::INBOUND_PASSTHROUGH_CLUSTER);
    let mut default_chain = chain(TCP_PROXY_FILTER, pack(&passthrough));
    let mut listener_filters = vec![original_dst_filter()];
    if proxy.mtls {
        let (chains, default) = inbound_tls::passthrough(model, proxy, default_chain);
        filter_chains.extend(chains);
        default_chain = default;
        listener_filters.push(inbound_tls::tls_inspector());
    }
    // A client that never speaks first (a server-first protocol) is served as plaintext after the inspector's
    // timeout instead of being cut, as istiod sets it.
    let continue_on_listener_filters_timeout = proxy.mtls;
    Listener {
        name: "virtualInbound".to_string(),
        address: Some(socket_address(ANY_IP, INBOUND_PORT)),
        listener_filters,
        filter_chains,
        // The agent drains inbound listeners only (`/drain_listeners?inboundonly`): the app may still call out.
        traffic_direction: TrafficDirection::Inbound as i32,
        // A port the proxy was not told about still reaches the app, as it would without a sidecar (with mTLS
        // STRICT for the workload: only over mTLS; see `inbound_tls`).
        default_filter_chain: Some(default_chain),
        continue_on_listener_filters_timeout,
        ..Default::default()
    }
}

/// Restores the address a connection was sent to before iptables redirected it: filter chains then match on it
/// and `ORIGINAL_DST` clusters connect to it.
fn original_dst_filter() -> ListenerFilter {
    use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(&OriginalDst::default()))),
        ..Default::default()
    }
}
