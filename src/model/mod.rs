//! The model: plain data that every source fills and `translate` reads.
//!
//! ```text
//!  file source (YAML) ─┐
//!  kube watchers ──────┼─▶ Model { services, endpoints, policies } ─▶ translate ─▶ Envoy resources
//!  release API ────────┘
//! ```
//!
//! Sources resolve selection themselves: a [`Model`] holds, per service, the endpoints that back it, with the
//! target port already resolved per service port and the workload's labels (the version label among them). So
//! `translate` never matches selectors, and an endpoint change touches one service's entry only.

mod analysis;
mod build;
mod by_service;
mod deploy;
mod grpc_status;
pub mod mesh;
pub mod pattern;
mod policy;
mod policy_validate;
mod proxy;
mod service;
mod settings;

pub use analysis::{Analysis, AtLeast, AtMost};
pub use deploy::{Deploy, Finalize, Loser, MAX_REPLICAS, canary_name};
pub use grpc_status::grpc_code;
pub use policy::*;
pub use policy_validate::*;
pub use proxy::{GatewayRole, InterceptionMode, ProxyInfo, Visibility};
pub use service::{
    Endpoint, REGION_LABEL, SUBZONE_LABEL, Service, ServicePort, TLS_MODE_ISTIO, TLS_MODE_LABEL, TargetPort, ZONE_LABEL,
};
pub use settings::{DEFAULT_ROOT_NAMESPACE, MeshSettings};

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// The maps of a [`Model`]: persistent (structure-sharing) ordered maps. Cloning a model is O(1), an edit copies
/// only the path to the changed entry, and [`imbl::OrdMap::diff`] between two versions skips the subtrees they
/// share, so finding what changed costs O(change), not O(model). Built like a `BTreeMap`
/// (`insert`, `entry`, `get_mut`, `collect`, `From<BTreeMap>`).
pub type Objects<V> = imbl::OrdMap<ObjectKey, V>;

/// Names an object: `namespace/name`. Ordered, so models iterate deterministically.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything Sluice knows about the mesh at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub services: Objects<Service>,
    /// Endpoints per service (the key is the service's key). A service without an entry has no endpoints.
    pub endpoints: Objects<Vec<Endpoint>>,
    pub policies: Objects<ReleasePolicy>,
    /// Istio VirtualServices (mesh routes), by their own key.
    #[serde(default)]
    pub virtual_services: Objects<mesh::VirtualService>,
    /// Istio DestinationRules (subsets, traffic policy), by their own key.
    #[serde(default)]
    pub destination_rules: Objects<mesh::DestinationRule>,
    /// Gateway API HTTPRoutes (GAMMA: parents of kind Service), by their own key.
    #[serde(default)]
    pub http_routes: Objects<mesh::HttpRouteObject>,
    /// Istio PeerAuthentications (what each sidecar accepts inbound: mTLS STRICT, PERMISSIVE, DISABLE).
    #[serde(default)]
    pub peer_authentications: Objects<mesh::PeerAuthentication>,
    /// Istio Gateways (the ports, hosts and certificates of ingress gateway proxies), by their own key.
    #[serde(default)]
    pub gateways: Objects<mesh::Gateway>,
    /// Gateway API GatewayClasses (cluster-scoped: the key's namespace is empty).
    #[serde(default)]
    pub gateway_classes: Objects<mesh::GatewayClass>,
    /// Gateway API Gateways, by their own key (Sluice serves those of a class with its controller name).
    #[serde(default)]
    pub api_gateways: Objects<mesh::ApiGateway>,
    /// Gateway API ReferenceGrants (cross-namespace certificate and backend references).
    #[serde(default)]
    pub reference_grants: Objects<mesh::ReferenceGrant>,
    /// TLS Secrets (certificate chain and key) that gateway listeners and `credentialName`s name.
    #[serde(default)]
    pub secrets: Objects<mesh::TlsSecret>,
    /// Istio Sidecars (which services each sidecar is given, and `outboundTrafficPolicy`), by their own key.
    #[serde(default)]
    pub sidecars: Objects<mesh::Sidecar>,
    /// The server's mesh-wide settings (trust domain, root namespace); not from any source part.
    #[serde(default)]
    pub settings: MeshSettings,
    /// Which objects name each Service, built when first asked (see `by_service`).
    #[serde(skip)]
    pub by_service: by_service::ServiceIndex,
}

/// RFC 1123 label, as Kubernetes requires of names: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// RFC 1123 subdomain, as Kubernetes requires of Deployment names: dot-separated DNS labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The domain Kubernetes services live under; part of every FQDN and cluster name.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

impl Model {
    /// The release policy that governs a service, if any. With several, the first by name wins (sources reject
    /// a second policy for the same service, so this is only a tie-break).
    pub fn policy_for(&self, service: &ObjectKey) -> Option<&ReleasePolicy> {
        let index = self.by_service();
        index.policies_of.get(service)?.first().and_then(|k| self.policies.get(k))
    }

    /// Endpoints of one service (empty when it has none).
    pub fn endpoints_of(&self, service: &ObjectKey) -> &[Endpoint] {
        self.endpoints.get(service).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The part of the model a proxy with `visibility` may see: the objects of those namespaces only (services,
    /// endpoints, release policies, VirtualServices, DestinationRules, HTTPRoutes), and of those services only
    /// the ones a Sidecar's egress hosts allow, so routes and listeners translated from it name no other service
    /// (a route to an unseen host resolves to nothing).
    pub fn visible_to(&self, visibility: &Visibility) -> Model {
        fn keep<V: Clone>(map: &Objects<V>, visibility: &Visibility) -> Objects<V> {
            map.iter().filter(|(k, _)| visibility.sees(&k.namespace)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        fn keep_services<V: Clone>(map: &Objects<V>, visibility: &Visibility) -> Objects<V> {
            map.iter().filter(|(k, _)| visibility.sees_service(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        Model {
            services: keep_services(&self.services, visibility),
            endpoints: keep_services(&self.endpoints, visibility),
            policies: keep(&self.policies, visibility),
            virtual_services: keep(&self.virtual_services, visibility),
            destination_rules: keep(&self.destination_rules, visibility),
            http_routes: keep(&self.http_routes, visibility),
            // All of them: the root namespace's apply mesh-wide, and a proxy reads only its own namespace's and
            // those (nothing of another namespace reaches its config).
            peer_authentications: self.peer_authentications.clone(),
            gateways: keep(&self.gateways, visibility),
            gateway_classes: self.gateway_classes.clone(),
            api_gateways: keep(&self.api_gateways, visibility),
            reference_grants: keep(&self.reference_grants, visibility),
            secrets: keep(&self.secrets, visibility),
            sidecars: keep(&self.sidecars, visibility),
            settings: self.settings.clone(),
            by_service: Default::default(),
        }
    }

    /// The keys of services whose endpoints differ between `self` and `other`, in order: the fast path re-derives
    /// only their load assignments. A structural diff: O(change) when `other` was derived from `self` by edits.
    pub fn services_with_changed_endpoints(&self, other: &Model) -> Vec<ObjectKey> {
        self.endpoints.diff(&other.endpoints).map(|d| diff_key(&d).clone()).collect()
    }

    /// Whether nothing but endpoints differs (services, policies, mesh objects, settings). O(change), like
    /// [`Model::services_with_changed_endpoints`].
    pub fn only_endpoints_differ(&self, other: &Model) -> bool {
        self.policies == other.policies
            && self.virtual_services == other.virtual_services
            && self.same_but_endpoints_and_routing(other)
    }

    /// Everything but endpoints, release policies and VirtualServices is the same.
    fn same_but_endpoints_and_routing(&self, other: &Model) -> bool {
        self.services == other.services
            && self.destination_rules == other.destination_rules
            && self.http_routes == other.http_routes
            && self.peer_authentications == other.peer_authentications
            && self.gateways == other.gateways
            && self.gateway_classes == other.gateway_classes
            && self.api_gateways == other.api_gateways
            && self.reference_grants == other.reference_grants
            && self.secrets == other.secrets
            && self.sidecars == other.sidecars
            && self.settings == other.settings
    }

    /// A change of release policies and VirtualServices only (a release step, a VirtualService edit): the
    /// Services whose clusters, assignments or routes it can touch (see [`RoutingChange`]). `None` for any other
    /// change, or when HTTPRoutes exist (their rules are not followed here). O(change) but for one pass over the
    /// by-Service index when VirtualServices changed.
    pub fn routing_change(&self, other: &Model) -> Option<RoutingChange> {
        let routing_only = self.endpoints == other.endpoints && self.same_but_endpoints_and_routing(other);
        if !routing_only || !self.http_routes.is_empty() || !other.http_routes.is_empty() {
            return None;
        }
        let changed_vs: BTreeSet<&ObjectKey> =
            self.virtual_services.diff(&other.virtual_services).map(|d| diff_key(&d)).collect();
        let mut touched = BTreeSet::new();
        // A VirtualService's hosts (their routes) and destinations (their subset clusters), before and after.
        for m in [self, other].into_iter().filter(|_| !changed_vs.is_empty()) {
            let index = m.by_service();
            for map in [&index.virtual_services_of, &index.routed_by] {
                let hit = map.iter().filter(|(_, vs)| vs.iter().any(|k| changed_vs.contains(k)));
                touched.extend(hit.map(|(svc, _)| svc.clone()));
            }
        }
        for d in self.policies.diff(&other.policies) {
            let (old, new) = match d {
                imbl::ordmap::DiffItem::Add(_, p) => (None, Some(p)),
                imbl::ordmap::DiffItem::Remove(_, p) => (Some(p), None),
                imbl::ordmap::DiffItem::Update { old: (_, o), new: (_, n) } => (Some(o), Some(n)),
            };
            touched.extend(old.into_iter().chain(new).map(|p| ObjectKey::new(&p.namespace, &p.spec.service)));
        }
        for m in [self, other] {
            let index = m.by_service();
            let routing: BTreeSet<&ObjectKey> =
                touched.iter().filter_map(|s| index.routed_by.get(s)).flatten().collect();
            if routing.is_empty() {
                continue;
            }
            let via: Vec<ObjectKey> = index
                .virtual_services_of
                .iter()
                .filter(|(_, vs)| vs.iter().any(|k| routing.contains(k)))
                .map(|(svc, _)| svc.clone())
                .collect();
            touched.extend(via);
        }
        Some(RoutingChange { touched, listeners_same: changed_vs.is_empty() })
    }
}

/// What a change of release policies and VirtualServices only touches ([`Model::routing_change`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingChange {
    /// Each changed policy's Service; each changed VirtualService's hosts and destinations; and every Service with
    /// a VirtualService routing or mirroring to one of those (a policy applies inside those routes).
    pub touched: BTreeSet<ObjectKey>,
    /// No VirtualService changed: listeners (which read VirtualServices for gateways' TLS routes and proxyless
    /// filters, never policies) are the same.
    pub listeners_same: bool,
}

/// The key a diff item is about.
pub fn diff_key<'a, K, V>(d: &imbl::ordmap::DiffItem<'a, 'a, K, V>) -> &'a K {
    use imbl::ordmap::DiffItem;
    match d {
        DiffItem::Add(k, _) | DiffItem::Remove(k, _) | DiffItem::Update { new: (k, _), .. } => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("reviews-v3"));
        assert!(is_dns_label("a"));
        for bad in ["", "-a", "a-", "Reviews", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
