//! ClusterLoadAssignments: which addresses serve each EDS cluster, and in what health.
//!
//! ```text
//!  Endpoint { ready }              ─▶ HEALTHY   (gets traffic)
//!  Endpoint { !ready, terminating } ─▶ DRAINING  (no new requests; open ones finish)
//!  Endpoint { !ready, !terminating } ─▶ omitted
//! ```
//!
//! An endpoint with a sidecar (label `security.istio.io/tlsMode: istio`) carries istiod's metadata
//! `envoy.transport_socket_match: {tlsMode: istio}`, which mTLS proxies' clusters match to pick mTLS (see `tls`);
//! other proxies' clusters have no socket matches and ignore it.
//!
//! Endpoints are grouped by locality, read from the workload's labels as istiod reads them
//! (`topology.kubernetes.io/region`, `topology.kubernetes.io/zone`, `topology.istio.io/subzone`; unlabelled
//! endpoints share the empty locality). Each locality's weight is its number of endpoints, so a proxyless gRPC
//! client (which picks a locality by weight, then an endpoint in it) spreads calls over endpoints evenly, as an
//! Envoy does (it ignores locality weights unless told otherwise). Every locality has a weight: gRPC ignores
//! localities without one. Assignments with no endpoints are still emitted, with one empty locality, so every EDS
//! cluster warms. Locality-aware failover (priorities by distance from the proxy) is not written.

use super::cluster::{EdsCluster, eds_clusters_of};
use super::socket_address;
use crate::model::{Endpoint, Model, ObjectKey, REGION_LABEL, SUBZONE_LABEL, ZONE_LABEL};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality, Metadata};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One assignment per EDS cluster of [`super::clusters`], sorted by cluster name.
pub fn load_assignments(model: &Model) -> Vec<ClusterLoadAssignment> {
    let out = super::per_service(model, |key| service_load_assignments(model, key));
    super::sorted_by_name(out, |a| &a.cluster_name)
}

/// The fast path for endpoint churn: the assignments of one service only (empty if the service is unknown),
/// sorted by cluster name.
pub fn service_load_assignments(model: &Model, svc: &ObjectKey) -> Vec<ClusterLoadAssignment> {
    let Some(service) = model.services.get(svc) else {
        return Vec::new();
    };
    let endpoints = model.endpoints_of(svc);
    let mut out: Vec<ClusterLoadAssignment> =
        eds_clusters_of(model, svc, service).iter().map(|c| assignment(c, endpoints)).collect();
    out.sort_by(|a, b| a.cluster_name.cmp(&b.cluster_name));
    out
}

/// The endpoints that serve `port` (a service port) and carry every label of `subset` (none: all), with the
/// port each listens on.
pub(crate) fn serving<'a>(
    endpoints: &'a [Endpoint],
    port: u16,
    subset: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = (&'a Endpoint, u16)> + 'a {
    endpoints.iter().filter_map(move |e| {
        let target = *e.ports.get(&port)?;
        subset.iter().all(|(k, v)| e.label(k) == Some(*v)).then_some((e, target))
    })
}

/// Whether at least one ready endpoint of `version` serves `port`: a version without one gets no traffic.
pub(crate) fn has_ready(endpoints: &[Endpoint], port: u16, label: &str, version: &str) -> bool {
    serving(endpoints, port, &[(label, version)]).any(|(e, _)| e.ready)
}

fn health(e: &Endpoint) -> Option<HealthStatus> {
    match (e.ready, e.terminating) {
        (true, _) => Some(HealthStatus::Healthy),
        (false, true) => Some(HealthStatus::Draining),
        (false, false) => None,
    }
}

fn assignment(cluster: &EdsCluster<'_>, endpoints: &[Endpoint]) -> ClusterLoadAssignment {
    let subset: Vec<(&str, &str)> = cluster.subset.iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut listed: Vec<(&str, u16, HealthStatus, bool, &Endpoint)> = serving(endpoints, cluster.port.port, &subset)
        .filter_map(|(e, port)| Some((e.address.as_str(), port, health(e)?, e.has_sidecar(), e)))
        .collect();
    // By IP when the address parses (10.0.0.9 before 10.0.0.10), then as text; ties broken by port and health.
    listed.sort_by_key(|(addr, port, h, s, _)| (addr.parse::<IpAddr>().ok(), *addr, *port, *h as i32, *s));
    listed.dedup_by_key(|(addr, port, _, _, _)| (*addr, *port));
    let mut by_locality: BTreeMap<(&str, &str, &str), Vec<LbEndpoint>> = BTreeMap::new();
    for (addr, port, h, sidecar, e) in listed {
        let mut lb = lb_endpoint(addr, port, h);
        if sidecar {
            lb.metadata = Some(tls_mode_metadata());
        }
        by_locality.entry(locality_of(e)).or_default().push(lb);
    }
    if by_locality.is_empty() {
        return with_one_locality(&cluster.name, Vec::new());
    }
    let endpoints = by_locality
        .into_iter()
        .map(|((region, zone, sub_zone), lb_endpoints)| LocalityLbEndpoints {
            locality: Some(Locality { region: region.into(), zone: zone.into(), sub_zone: sub_zone.into() }),
            load_balancing_weight: Some(UInt32Value { value: lb_endpoints.len() as u32 }),
            lb_endpoints,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment { cluster_name: cluster.name.clone(), endpoints, ..Default::default() }
}

/// `(region, zone, subzone)`, empty where the label is missing.
fn locality_of(e: &Endpoint) -> (&str, &str, &str) {
    let get = |k| e.label(k).unwrap_or("");
    (get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL))
}

/// `envoy.transport_socket_match: {tlsMode: istio}`.
fn tls_mode_metadata() -> Metadata {
    let fields = super::tls::tls_mode_istio();
    Metadata {
        filter_metadata: [(super::tls::TRANSPORT_SOCKET_MATCH.to_string(), fields)].into(),
        ..Default::default()
    }
}

/// `inbound|P||`'s inline assignment: the proxy's own workload on loopback.
pub(crate) fn local_assignment(cluster_name: &str, port: u16) -> ClusterLoadAssignment {
    with_one_locality(cluster_name, vec![lb_endpoint("127.0.0.1", port, HealthStatus::Unknown)])
}

fn lb_endpoint(addr: &str, port: u16, health: HealthStatus) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(socket_address(addr, port)),
            ..Default::default()
        })),
        health_status: health as i32,
        ..Default::default()
    }
}

fn with_one_locality(cluster_name: &str, lb_endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality::default()),
            lb_endpoints,
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str, version: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            name: addr.into(),
            address: addr.into(),
            ports: [(9080, 8080)].into(),
            labels: [("version".to_string(), version.to_string())].into(),
            ready,
            terminating,
            service_account: None,
        }
    }

    #[test]
    fn health_maps_ready_draining_and_omits_the_rest() {
        assert_eq!(health(&ep("a", "v1", true, true)), Some(HealthStatus::Healthy));
        assert_eq!(health(&ep("a", "v1", false, true)), Some(HealthStatus::Draining));
        assert_eq!(health(&ep("a", "v1", false, false)), None);
    }

    #[test]
    fn endpoints_are_grouped_by_locality_weighted_by_their_number() {
        let mut eps = vec![ep("10.0.0.1", "v1", true, false), ep("10.0.0.2", "v1", true, false)];
        eps.push(ep("10.0.0.3", "v1", true, false));
        for (e, zone) in eps.iter_mut().zip(["b", "a", "b"]) {
            e.labels.insert(REGION_LABEL.into(), "r1".into());
            e.labels.insert(ZONE_LABEL.into(), zone.into());
        }
        eps.push(ep("10.0.0.4", "v1", true, false));
        let svc = crate::model::Service::http("default", "reviews", 9080);
        let cluster = EdsCluster {
            name: "c".into(),
            subset_name: String::new(),
            port: &svc.ports[0],
            subset: None,
            policy: None,
        };
        let a = assignment(&cluster, &eps);
        let got: Vec<(String, String, u32, usize)> = a
            .endpoints
            .iter()
            .map(|l| {
                let loc = l.locality.clone().unwrap_or_default();
                (loc.region, loc.zone, l.load_balancing_weight.map_or(0, |w| w.value), l.lb_endpoints.len())
            })
            .collect();
        let want = [("", "", 1, 1), ("r1", "a", 1, 1), ("r1", "b", 2, 2)];
        let want: Vec<(String, String, u32, usize)> =
            want.iter().map(|(r, z, w, n)| (r.to_string(), z.to_string(), *w, *n)).collect();
        assert_eq!(got, want, "unlabelled endpoints share the empty locality; weight = endpoints");
        let none = assignment(&cluster, &[]);
        assert_eq!(none.endpoints.len(), 1, "an empty assignment keeps one locality, so the cluster warms");
        assert_eq!(none.endpoints[0].load_balancing_weight, Some(UInt32Value { value: 1 }));
    }

    #[test]
    fn serving_filters_by_port_and_version() {
        let eps = [ep("10.0.0.1", "v1", true, false), ep("10.0.0.2", "v3", true, false)];
        let got: Vec<_> = serving(&eps, 9080, &[("version", "v3")]).map(|(e, p)| (e.address.as_str(), p)).collect();
        assert_eq!(got, [("10.0.0.2", 8080)]);
        assert_eq!(serving(&eps, 9090, &[]).count(), 0);
        assert!(has_ready(&eps, 9080, "version", "v1"));
        assert!(!has_ready(&eps, 9080, "version", "v2"));
    }
}
