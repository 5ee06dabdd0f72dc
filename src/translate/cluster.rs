//! Clusters: one EDS cluster per service port for all endpoints, one per subset something routes to (a release
//! policy's versions, a VirtualService's subsets, a DestinationRule's subsets), plus the per-proxy extras of
//! intercept mode.
//!
//! ```text
//!  Service reviews:9080 ─┬─▶ outbound|9080||reviews...    (catch-all)
//!   endpoints v1, v2, v3 ├─▶ outbound|9080|v1|reviews...  (subset: version label = v1)
//!   policy stable v1 ... └─▶ outbound|9080|v3|reviews...  (subset; kept for a governed service even if empty)
//!                            (no v2 cluster: nothing routes to v2)
//! ```
//!
//! Subset membership lives in the load assignments (see `endpoint.rs`); a cluster only names its assignment.

use super::{ads_config_source, naming, pack, seconds};
use crate::model::mesh::{TrafficPolicy, host_is};
use crate::model::{
    DEFAULT_VERSION_LABEL, InterceptionMode, Model, ObjectKey, ProxyInfo, Routing, Service, ServicePort,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::v3::Percent;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(crate) const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
use super::defaults::CONNECT_TIMEOUT_SECS;

/// One EDS cluster Sluice serves: a service port and, for a subset, the labels its endpoints carry.
pub(crate) struct EdsCluster<'a> {
    pub name: String,
    /// The subset's name (`""`: the catch-all cluster), for the mesh SNI.
    pub subset_name: String,
    pub port: &'a ServicePort,
    /// The subset's labels (a version subset: `{version label: version}`); `None` for the catch-all cluster.
    pub subset: Option<BTreeMap<String, String>>,
    /// The DestinationRule's traffic policy for this cluster (the subset's sections laid over the rule's).
    pub policy: Option<TrafficPolicy>,
}

/// The label that names versions of this service: the governing policy's, else `version`.
pub(crate) fn version_label<'a>(model: &'a Model, key: &ObjectKey) -> &'a str {
    model.policy_for(key).map(|p| p.spec.version_label()).unwrap_or(DEFAULT_VERSION_LABEL)
}

/// The versions that get subset clusters: those something routes to. A governing policy's stable and canary
/// (minus the loser of a finished release, `Routing::Only`), and each version a mesh VirtualService names as a
/// destination or mirror `subset` (when no DestinationRule subset has that name, it is a version: see
/// [`subset_exists`]). A version nothing routes to gets no cluster: every sidecar would hold and warm one per
/// version of every service, about half of its clusters and assignments, for nothing. A policy or route that
/// names a version later adds its cluster, and sessions send a route only once its clusters have warmed (see
/// `xds::session`), so the switch fails no request.
pub(crate) fn subset_versions(model: &Model, key: &ObjectKey) -> BTreeSet<String> {
    let (kept, loser) = policy_versions(model, key);
    let mut versions: BTreeSet<String> = kept.into_iter().map(String::from).collect();
    let mut named = named_subsets(model, key).peekable();
    if named.peek().is_some() {
        let present = endpoint_versions(model, key);
        versions.extend(named.filter(|s| present.contains(s) && Some(*s) != loser).map(String::from));
    }
    versions
}

/// A governing policy's versions that keep clusters (stable and canary; the winner only once the release ended)
/// and the loser of an ended release, whose config is gone.
fn policy_versions<'a>(model: &'a Model, key: &ObjectKey) -> (Vec<&'a str>, Option<&'a str>) {
    let Some(policy) = model.policy_for(key) else { return (Vec::new(), None) };
    let spec = &policy.spec;
    match policy.routing() {
        Routing::Only(winner) => {
            let loser = if winner == spec.stable { &spec.canary } else { &spec.stable };
            (vec![winner], Some(loser.as_str()))
        }
        _ => (vec![spec.stable.as_str(), spec.canary.as_str()], None),
    }
}

/// Every value of the version label among a service's endpoints.
fn endpoint_versions<'a>(model: &'a Model, key: &ObjectKey) -> BTreeSet<&'a str> {
    let label = version_label(model, key);
    model.endpoints_of(key).iter().filter_map(|e| e.label(label)).filter(|v| !v.is_empty()).collect()
}

/// The subsets the VirtualServices (mesh and gateway ones) name for the service, as a destination or a mirror.
fn named_subsets<'a>(model: &'a Model, key: &'a ObjectKey) -> impl Iterator<Item = &'a str> + 'a {
    let routing = model.by_service().routed_by.get(key).cloned().unwrap_or_default();
    let routing = routing.into_iter().filter_map(|k| model.virtual_services.get_key_value(&k));
    routing.flat_map(move |(k, vs)| {
        let http = vs.spec.http.iter();
        let dests = http.flat_map(|h| h.route.iter().map(|d| &d.destination).chain(h.mirror.as_ref()));
        dests.filter_map(move |d| d.subset.as_deref().filter(|_| host_is(&d.host, &k.namespace, key)))
    })
}

/// Whether a route may name `subset` of the service: a DestinationRule subset, a governing policy's stable or
/// canary (whose cluster exists even before its endpoints do), or a version among its endpoints; not the loser of
/// an ended release.
pub(crate) fn subset_exists(model: &Model, key: &ObjectKey, subset: &str) -> bool {
    let in_rule = model.destination_rule_for(key).is_some_and(|r| r.subset(subset).is_some());
    let (kept, loser) = policy_versions(model, key);
    in_rule || (loser != Some(subset) && (kept.contains(&subset) || endpoint_versions(model, key).contains(subset)))
}

/// Every subset of a service by name → its labels and traffic policy: one per version (see
/// [`subset_versions`]), and a DestinationRule's `subsets` (which win over a version of the same name).
pub(crate) fn subsets_of(
    model: &Model,
    key: &ObjectKey,
) -> BTreeMap<String, (BTreeMap<String, String>, Option<TrafficPolicy>)> {
    let label = version_label(model, key);
    let rule = model.destination_rule_for(key);
    let base = rule.as_ref().and_then(|r| r.traffic_policy());
    let mut out: BTreeMap<_, _> = subset_versions(model, key)
        .into_iter()
        .map(|v| {
            let labels = BTreeMap::from([(label.to_string(), v.clone())]);
            (v, (labels, base.cloned()))
        })
        .collect();
    for s in rule.map(|r| r.subsets()).unwrap_or_default() {
        let policy = TrafficPolicy::merged(base, s.traffic_policy.as_ref());
        out.insert(s.name.clone(), (s.labels.clone(), policy));
    }
    out
}

/// Every EDS cluster of one service, catch-all first per port.
pub(crate) fn eds_clusters_of<'a>(model: &'a Model, key: &ObjectKey, svc: &'a Service) -> Vec<EdsCluster<'a>> {
    let subsets = subsets_of(model, key);
    let base = model.destination_rule_for(key).and_then(|r| r.traffic_policy().cloned());
    let mut out = Vec::new();
    for port in &svc.ports {
        let name = naming::outbound_cluster(svc, port.port, "");
        out.push(EdsCluster { name, subset_name: String::new(), port, subset: None, policy: base.clone() });
        for (v, (labels, policy)) in &subsets {
            let name = naming::outbound_cluster(svc, port.port, v);
            let subset = Some(labels.clone());
            out.push(EdsCluster { name, subset_name: v.clone(), port, subset, policy: policy.clone() });
        }
    }
    out
}

/// Outbound EDS clusters of every service port (TCP ports too), sorted by name: what every proxy without workload
/// mTLS gets (a DestinationRule's `SIMPLE`/`MUTUAL` TLS from files included; no mesh TLS).
pub fn clusters(model: &Model) -> Vec<Cluster> {
    outbound(model, false)
}

/// [`clusters`] for a proxy that takes part in workload mTLS (`ProxyInfo::mtls`): auto mTLS to endpoints with a
/// sidecar, and a DestinationRule's `ISTIO_MUTUAL` (see `tls`).
pub fn mesh_clusters(model: &Model) -> Vec<Cluster> {
    outbound(model, true)
}

/// The outbound clusters a proxy gets: [`mesh_clusters`] or [`clusters`].
pub fn outbound_clusters(model: &Model, proxy: &ProxyInfo) -> Vec<Cluster> {
    outbound(model, proxy.mtls)
}

fn outbound(model: &Model, mesh: bool) -> Vec<Cluster> {
    let out = super::per_service(model, |key| service_clusters(model, key, mesh));
    super::sorted_by_name(out, |c| &c.name)
}

/// One Service's outbound clusters ([`clusters`], or with `mesh` [`mesh_clusters`]): what a change to that
/// Service's release policy alone re-derives.
pub fn service_clusters(model: &Model, key: &ObjectKey, mesh: bool) -> Vec<Cluster> {
    let Some(svc) = model.services.get(key) else { return Vec::new() };
    let accounts = super::cluster_tls::Accounts::of(model, key);
    let clusters = eds_clusters_of(model, key, svc).into_iter().map(|c| {
        let http2 = c.port.is_http2();
        let mut cluster = eds_cluster(c.name.clone(), http2);
        if let Some(policy) = &c.policy {
            super::traffic_policy::apply(policy, &mut cluster, http2);
        }
        super::cluster_tls::apply(model, key, svc, &c, &accounts, mesh, &mut cluster);
        cluster
    });
    clusters.collect()
}

/// Per-proxy clusters: in intercept mode `PassthroughCluster` and one `inbound|P||` per inbound port (with workload
/// mTLS also `BlackHoleCluster`, behind the chains that refuse plaintext, as under a Sidecar's `REGISTRY_ONLY`);
/// none in the other modes. Sorted by name.
pub fn proxy_clusters(_model: &Model, proxy: &ProxyInfo) -> Vec<Cluster> {
    if proxy.mode != InterceptionMode::Intercept {
        return Vec::new();
    }
    let mut out = vec![passthrough_cluster(), inbound_passthrough_cluster()];
    if proxy.mtls || proxy.visibility.registry_only() {
        out.push(blackhole_cluster());
    }
    let ports: BTreeSet<u16> = proxy.inbound_ports.iter().copied().collect();
    out.extend(ports.into_iter().map(inbound_cluster));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn eds_cluster(name: String, http2: bool) -> Cluster {
    // No `service_name`: Envoy and gRPC then ask EDS for the cluster's own name, and every proxy is sent ~50 bytes
    // less per cluster (150 KB of each sidecar's first config with 1,000 services).
    let eds = cluster::EdsClusterConfig { eds_config: Some(ads_config_source()), service_name: String::new() };
    let mut options = HashMap::new();
    if http2 {
        options.insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&http2_options()));
    }
    Cluster {
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(eds),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        // istiod's default balancer (since 1.14); a DestinationRule's `loadBalancer` replaces it.
        lb_policy: cluster::LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(super::defaults::circuit_breakers()),
        // 0%: Envoy never spreads traffic over unhealthy (not ready) endpoints in panic mode.
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            ..Default::default()
        }),
        typed_extension_protocol_options: options,
        ..Default::default()
    }
}

pub(crate) fn http2_options() -> HttpProtocolOptions {
    use http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig};
    HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())),
        })),
        ..Default::default()
    }
}

/// Connections to where they were going (`ORIGINAL_DST`): destinations outside the mesh.
fn passthrough_cluster() -> Cluster {
    original_dst_cluster(naming::PASSTHROUGH_CLUSTER)
}

/// Inbound connections for a port no chain serves, to their original destination (the app on the pod's address),
/// from 127.0.0.6: the interception rules let that source through, so Envoy does not catch its own connection.
fn inbound_passthrough_cluster() -> Cluster {
    use envoy_types::pb::envoy::config::core::v3::BindConfig;
    Cluster {
        upstream_bind_config: Some(BindConfig {
            source_address: Some(super::tcp_address(naming::INBOUND_PASSTHROUGH_SOURCE, 0)),
            ..Default::default()
        }),
        ..original_dst_cluster(naming::INBOUND_PASSTHROUGH_CLUSTER)
    }
}

/// No endpoints: a connection sent here is closed.
fn blackhole_cluster() -> Cluster {
    Cluster {
        name: naming::BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        ..Default::default()
    }
}

fn original_dst_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::OriginalDst as i32)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        circuit_breakers: Some(super::defaults::circuit_breakers()),
        ..Default::default()
    }
}

fn inbound_cluster(port: u16) -> Cluster {
    let name = naming::inbound_cluster(port);
    Cluster {
        load_assignment: Some(super::endpoint::local_assignment(&name, port)),
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32)),
        connect_timeout: Some(seconds(CONNECT_TIMEOUT_SECS)),
        circuit_breakers: Some(super::defaults::circuit_breakers()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ReleasePolicy, ReleasePolicySpec, TargetPort};

    fn model(phase: crate::model::Phase) -> Model {
        let key = ObjectKey::new("default", "reviews");
        let port =
            ServicePort { name: "grpc".into(), port: 9080, target_port: TargetPort::Number(9080), app_protocol: None };
        let svc =
            Service { name: "reviews".into(), namespace: "default".into(), ports: vec![port], ..Default::default() };
        let ep = Endpoint {
            name: "r2".into(),
            address: "10.0.0.2".into(),
            ports: [(9080, 9080)].into(),
            labels: [("version".to_string(), "v2".to_string())].into(),
            ready: true,
            terminating: false,
            service_account: None,
        };
        let spec = ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            ..Default::default()
        };
        let mut policy =
            ReleasePolicy { name: "p".into(), namespace: "default".into(), spec, state: Default::default() };
        policy.state.phase = phase;
        let mut m = Model::default();
        m.services.insert(key.clone(), svc);
        m.endpoints.insert(key.clone(), vec![ep]);
        m.policies.insert(ObjectKey::new("default", "p"), policy);
        m
    }

    fn names(m: &Model) -> Vec<String> {
        clusters(m).into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn governed_service_has_stable_and_canary_subsets_even_without_endpoints() {
        let n = names(&model(crate::model::Phase::Progressing));
        let subsets: Vec<&str> = n.iter().map(|s| s.split('|').nth(2).unwrap_or("?")).collect();
        assert_eq!(subsets, ["v1", "v3", ""], "v2 has endpoints but nothing routes to it"); // `|` sorts last
    }

    #[test]
    fn a_version_gets_a_cluster_only_when_something_routes_to_it() {
        let mut m = model(crate::model::Phase::Progressing);
        m.policies.clear();
        assert_eq!(names(&m), ["outbound|9080||reviews.default.svc.cluster.local"]);
        let route = |subset: &str| serde_json::json!({"destination": {"host": "reviews", "subset": subset}});
        let spec = serde_json::json!({"hosts": ["ratings"], "http": [{"route": [route("v2")], "mirror":
            {"host": "reviews.default.svc.cluster.local", "subset": "v9"}}]});
        let vs = crate::model::mesh::VirtualService {
            name: "vs".into(),
            namespace: "default".into(),
            spec: serde_json::from_value(spec).expect("spec"),
            provenance: Default::default(),
        };
        m.virtual_services.insert(ObjectKey::new("default", "vs"), vs);
        let n = names(&m);
        assert_eq!(n[0], "outbound|9080|v2|reviews.default.svc.cluster.local", "{n:?}");
        assert_eq!(n.len(), 2, "v9 has no endpoints, so the mirror names nothing: {n:?}");
        assert!(subset_exists(&m, &ObjectKey::new("default", "reviews"), "v2"));
        assert!(!subset_exists(&m, &ObjectKey::new("default", "reviews"), "v9"));
    }

    #[test]
    fn finalized_release_drops_the_losers_subset() {
        let n = names(&model(crate::model::Phase::Finalized));
        assert!(!n.iter().any(|s| s.contains("|v1|")), "{n:?}");
        assert!(n.iter().any(|s| s.contains("|v3|")));
    }

    #[test]
    fn grpc_ports_get_http2_upstreams() {
        let c = clusters(&model(crate::model::Phase::Progressing));
        assert!(c.iter().all(|c| { c.typed_extension_protocol_options.contains_key(HTTP_PROTOCOL_OPTIONS) }));
    }
}
