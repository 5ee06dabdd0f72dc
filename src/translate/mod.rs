//! Translate: the pure mapping from the [`Model`](crate::model::Model) to Envoy resources.
//!
//! ```text
//!             ┌──────────── naming (cluster, route and listener names; host names) ──────────┐
//!  Model ─────┼─▶ cluster  ─▶ Cluster                  (outbound|P|v|fqdn, EDS from ADS)    │
//!             │   (cluster_tls, tls: upstream TLS: DestinationRule tls; auto mTLS for mTLS proxies) │
//!   + policy  ├─▶ endpoint ─▶ ClusterLoadAssignment    (one per EDS cluster, health mapped) │
//!   + proxy   ├─▶ route    ─▶ RouteConfiguration       (rules → matchers, then weights)     │
//!             └─▶ listener ─▶ Listener                 (listen | intercept | proxyless)     ┘
//!                 gateway  ─▶ Listener + RouteConfiguration of an ingress gateway (Istio Gateway servers)
//! ```
//!
//! Nothing here does IO, awaits, or reads a clock: the same model gives byte-identical resources, because every
//! output list is sorted and every map is a `BTreeMap`. Outbound clusters, assignments and route configurations
//! depend only on the model (and, for routes, on a small [`RouteScope`]), so the xDS layer can share them among
//! all proxies of a namespace; only [`listeners`] and [`proxy_clusters`] look at the proxy itself. Proxies that take
//! part in workload mTLS (`ProxyInfo::mtls`) share a second cluster set, [`mesh_clusters`], which adds the TLS.
//!
//! Invariant (go-control-plane's `consistent`): every cluster a route or listener names is in [`clusters`] or
//! [`proxy_clusters`], and every EDS cluster has exactly one assignment in [`load_assignments`].

mod cluster;
mod cluster_tls;
mod defaults;
mod endpoint;
mod gamma;
mod gateway;
mod gateway_tls;
mod grpc;
mod inbound_tls;
mod intercept;
mod listener;
mod matchers;
mod mesh_filters;
mod mesh_match;
mod mesh_route;
mod naming;
mod registry_only;
mod route;
mod tls;
mod traffic_policy;
pub mod vhds;

pub use cluster::{clusters, mesh_clusters, outbound_clusters, proxy_clusters, service_clusters};
pub use endpoint::{load_assignments, service_load_assignments};
pub use grpc::{GrpcNote, for_grpc, grpc_notes};
pub use listener::listeners;
pub use naming::{
    INBOUND_PASSTHROUGH_SOURCE, LISTEN_ROUTE_CONFIG, PASSTHROUGH_CLUSTER, outbound_namespace, parse_outbound_subset,
    service_fqdn,
};
pub use route::{RouteScope, route_configs, route_scope, service_virtual_hosts};
pub use tls::{SDS_DEFAULT, SDS_ROOT};

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::google::protobuf::{Any, Duration};

/// Packs a typed config into an `Any`, as Envoy expects for `typed_config` and xDS resources.
pub(crate) fn pack<M: prost::Message + prost::Name>(msg: &M) -> Any {
    Any { type_url: format!("type.googleapis.com/{}", M::full_name()), value: msg.encode_to_vec() }
}

/// "Fetch this over the ADS stream": how every dynamic resource Sluice serves is sourced.
pub(crate) fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// A TCP socket address.
pub(crate) fn socket_address(ip: &str, port: u16) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(tcp_address(ip, port))),
    }
}

/// The `SocketAddress` inside [`socket_address`].
pub(crate) fn tcp_address(ip: &str, port: u16) -> SocketAddress {
    SocketAddress {
        address: ip.to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
        ..Default::default()
    }
}

pub(crate) fn seconds(s: i64) -> Duration {
    Duration { seconds: s, nanos: 0 }
}

/// Meshes of fewer Services are translated on the calling thread.
const PARALLEL_SERVICES: usize = 256;

/// `f` over every Service of the model, on every core (see [`crate::parallel`]), the results of each Service in
/// the model's order: what a whole-mesh translation does per Service, which is most of its time at 10,000.
pub(crate) fn per_service<R: Send>(
    model: &crate::model::Model,
    f: impl Fn(&crate::model::ObjectKey) -> Vec<R> + Sync,
) -> Vec<R> {
    let keys: Vec<&crate::model::ObjectKey> = model.services.keys().collect();
    let runs = crate::parallel::runs(&keys, PARALLEL_SERVICES, |run| run.iter().flat_map(|k| f(k)).collect::<Vec<R>>());
    runs.into_iter().flatten().collect()
}

/// `items` sorted by `name`, each moved once: translated messages are large, and sorting tens of thousands of them
/// in place moved each many times over (the public whole-mesh builders, `clusters` and the like, sort this way).
pub(crate) fn sorted_by_name<T>(items: Vec<T>, name: impl Fn(&T) -> &str) -> Vec<T> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| name(&items[a]).cmp(name(&items[b])));
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}
