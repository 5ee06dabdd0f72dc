//! Names, as Istio spells them so dashboards and habits carry over.
//!
//! ```text
//!  reviews/default ─▶ reviews.default.svc.cluster.local          (FQDN)
//!                  ─▶ outbound|9080||reviews.default.svc.cluster.local    (all endpoints)
//!                  ─▶ outbound|9080|v1|reviews.default.svc.cluster.local  (version subset)
//!                  ─▶ route configuration "9080", virtual host "reviews.default.svc.cluster.local:9080"
//! ```

use crate::model::{CLUSTER_DOMAIN, Service};
use std::net::SocketAddr;

/// The single route configuration a listen-mode proxy asks for.
pub const LISTEN_ROUTE_CONFIG: &str = "sluice-listen";

/// Intercept mode's cluster for traffic to destinations Sluice does not know: the original destination.
/// A cluster without endpoints (istiod's): where refused connections go, so nothing reaches the app.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Intercept mode: inbound connections to a port the proxy serves no listener chain for go to their original
/// destination, from 127.0.0.6 (which the interception rules never redirect).
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughClusterIpv4";
/// The source address of the inbound passthrough's connections.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// `name.ns.svc.cluster.local`.
pub(crate) fn fqdn(svc: &Service) -> String {
    service_fqdn(&svc.namespace, &svc.name)
}

/// `name.namespace.svc.cluster.local`: what cluster and virtual host names end with.
pub fn service_fqdn(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// `outbound|PORT|SUBSET|FQDN`; an empty subset means all endpoints.
pub(crate) fn outbound_cluster(svc: &Service, port: u16, subset: &str) -> String {
    format!("outbound|{port}|{subset}|{}", fqdn(svc))
}

/// The inverse of `outbound_cluster` for a version subset: `outbound|9080|v3|reviews.default.svc.cluster.local`
/// → `(namespace, service, version)`. `None` for the all-endpoints cluster (empty subset) and for any other name.
pub fn parse_outbound_subset(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.strip_prefix("outbound|")?.splitn(3, '|');
    let (_port, subset, fqdn) = (parts.next()?.parse::<u16>().ok()?, parts.next()?, parts.next()?);
    let host = fqdn.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix(".svc.")?;
    let (service, namespace) = host.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && !s.contains(['.', '|']);
    (ok(subset) && ok(service) && ok(namespace)).then_some((namespace, service, subset))
}

/// The namespace an outbound cluster (or its load assignment, which has the same name) belongs to:
/// `outbound|P|S|name.NS.svc.cluster.local` → `NS`. Service names and namespaces are DNS labels (no dots), so the
/// second label of the FQDN is the namespace. `None` for any other name.
pub fn outbound_namespace(cluster: &str) -> Option<&str> {
    let fqdn = cluster.strip_prefix("outbound|")?.splitn(3, '|').nth(2)?;
    fqdn.split('.').nth(1).filter(|ns| !ns.is_empty())
}

/// `inbound|PORT||`: intercept mode's cluster to the proxy's own workload.
pub(crate) fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// The route configuration for an HTTP port in intercept and proxyless modes.
pub(crate) fn port_route_config(port: u16) -> String {
    port.to_string()
}

/// `FQDN:PORT`: a virtual host's name, and a proxyless client's listener name.
pub(crate) fn virtual_host(svc: &Service, port: u16) -> String {
    format!("{}:{port}", fqdn(svc))
}

/// The names a client may use for a service, longest first: the FQDN, `name.ns.svc`, `name.ns`, and the short
/// `name` only from the service's own namespace (elsewhere it would mean a different service).
pub(crate) fn host_names(svc: &Service, proxy_namespace: &str) -> Vec<String> {
    let mut names =
        vec![fqdn(svc), format!("{}.{}.svc", svc.name, svc.namespace), format!("{}.{}", svc.name, svc.namespace)];
    if svc.namespace == proxy_namespace {
        names.push(svc.name.clone());
    }
    names
}

/// `sluice_listen_<ip>_<port>`.
pub(crate) fn listen_listener(addr: &SocketAddr) -> String {
    format!("sluice_listen_{}_{}", addr.ip(), addr.port())
}

/// `0.0.0.0_PORT`: intercept mode's per-port outbound listener.
pub(crate) fn outbound_port_listener(port: u16) -> String {
    format!("0.0.0.0_{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ns: &str) -> Service {
        Service { name: name.into(), namespace: ns.into(), ..Default::default() }
    }

    #[test]
    fn names_follow_istio() {
        let s = svc("reviews", "default");
        assert_eq!(outbound_cluster(&s, 9080, "v1"), "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(outbound_cluster(&s, 9080, ""), "outbound|9080||reviews.default.svc.cluster.local");
        assert_eq!(inbound_cluster(9080), "inbound|9080||");
        assert_eq!(virtual_host(&s, 9080), "reviews.default.svc.cluster.local:9080");
    }

    #[test]
    fn outbound_subsets_parse_back() {
        let s = svc("reviews", "default");
        let name = outbound_cluster(&s, 9080, "v3");
        assert_eq!(parse_outbound_subset(&name), Some(("default", "reviews", "v3")));
        assert_eq!(parse_outbound_subset(&outbound_cluster(&s, 9080, "")), None, "all endpoints is no version");
        assert_eq!(parse_outbound_subset("inbound|9080||"), None);
        assert_eq!(parse_outbound_subset("outbound|x|v1|reviews.default.svc.cluster.local"), None);
        assert_eq!(parse_outbound_subset("outbound|80|v1|example.com"), None);
        assert_eq!(parse_outbound_subset("sluice-xds"), None);
    }

    #[test]
    fn short_name_only_in_own_namespace() {
        let s = svc("reviews", "default");
        assert_eq!(host_names(&s, "default").last().map(String::as_str), Some("reviews"));
        assert_eq!(host_names(&s, "other").len(), 3);
    }

    #[test]
    fn the_namespace_reads_back_from_a_cluster_name() {
        let s = svc("reviews", "shop");
        assert_eq!(outbound_namespace(&outbound_cluster(&s, 9080, "v1")), Some("shop"));
        assert_eq!(outbound_namespace(&outbound_cluster(&s, 9080, "")), Some("shop"));
        assert_eq!(outbound_namespace(&inbound_cluster(9080)), None);
        assert_eq!(outbound_namespace(PASSTHROUGH_CLUSTER), None);
    }
}
