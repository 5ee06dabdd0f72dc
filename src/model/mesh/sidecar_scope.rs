//! Which Sidecar applies to a proxy, and what it lets the proxy see: the egress scope that narrows a proxy's
//! [`Visibility`] (clusters, assignments, routes and listeners of the allowed services only).
//!
//! ```text
//!  proxy (namespace, labels) ─ sidecar_for ─▶ 1. its namespace's Sidecars whose workloadSelector it matches (oldest)
//!                                             2. its namespace's Sidecar without selector (oldest)
//!                                             3. the root namespace's Sidecar without selector (oldest)
//!                                             4. none: everything visible, ALLOW_ANY
//!  Sidecar ─ Egress::of ─▶ hosts (`.` = the proxy's namespace), mode ─▶ Visibility::Egress (a cache key: proxies
//!                          with the same effective Sidecar share every encoded set)
//! ```
//! A service is visible when one host entry matches it: its namespace is the entry's (or the entry's is `*`),
//! and its FQDN matches the entry's dnsName (`*`, `*.suffix`, or equal), as istiod's `selectServices`; or when a
//! VirtualService of a visible service routes or mirrors to it (istiod adds a VirtualService's destinations to the
//! scope: [`Model::egress_of`]).
//! Gateways get no Sidecar (istiod gives them the default scope).

use super::older;
use super::sidecar::{OutboundMode, Sidecar};
use crate::model::{CLUSTER_DOMAIN, InterceptionMode, Model, ObjectKey, ProxyInfo, Visibility};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A proxy's effective Sidecar, resolved for its namespace: what it may see, and where unknown hosts go.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Egress {
    /// The namespaces the proxy's identity allows (`None`: all), as [`Visibility::Namespaces`] says.
    pub within: Option<BTreeSet<String>>,
    /// `(namespace or "*", dnsName)`, `.` resolved to the proxy's namespace; sorted, without repeats.
    pub hosts: Vec<(String, String)>,
    /// `(namespace, FQDN)` of services a visible service's VirtualService routes or mirrors to, allowed too (as
    /// istiod infers them); sorted.
    pub destinations: Vec<(String, String)>,
    pub mode: OutboundMode,
}

impl Egress {
    /// The scope of `sidecar` for a proxy of `namespace` whose visibility is `base`; `None` when it narrows
    /// nothing (`*/*` with `ALLOW_ANY`), so such proxies share the sets of proxies without a Sidecar.
    pub fn of(sidecar: &Sidecar, namespace: &str, base: &Visibility) -> Option<Egress> {
        let mut hosts: Vec<(String, String)> = sidecar
            .spec
            .egress
            .iter()
            .flat_map(|e| &e.hosts)
            .filter_map(|h| h.split_once('/'))
            .map(|(ns, name)| (if ns == "." { namespace } else { ns }.to_string(), name.to_ascii_lowercase()))
            .collect();
        if sidecar.spec.egress.is_empty() {
            hosts.push(("*".into(), "*".into()));
        }
        if hosts.iter().any(|(ns, name)| ns == "*" && name == "*") {
            hosts = vec![("*".into(), "*".into())];
        }
        hosts.sort();
        hosts.dedup();
        let mode = sidecar.spec.mode();
        if mode == OutboundMode::AllowAny && hosts == [("*".to_string(), "*".to_string())] {
            return None;
        }
        let within = match base {
            Visibility::All => None,
            Visibility::Namespaces(set) => Some(set.clone()),
            Visibility::Egress(e) => e.within.clone(),
        };
        Some(Egress { within, hosts, destinations: Vec::new(), mode })
    }

    /// Whether a service of `namespace` with this FQDN is imported.
    pub fn allows(&self, namespace: &str, fqdn: &str) -> bool {
        self.hosts.iter().any(|(ns, name)| (ns == "*" || ns == namespace) && host_matches(name, fqdn))
            || self.destinations.iter().any(|(ns, host)| ns == namespace && host.eq_ignore_ascii_case(fqdn))
    }
}

/// Istio's host matching for an imported dnsName: `*` is every host, `*.suffix` a host ending in `.suffix`,
/// anything else that exact host (ASCII case-insensitive).
pub fn host_matches(pattern: &str, fqdn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => fqdn.len() > suffix.len() && fqdn.to_ascii_lowercase().ends_with(suffix),
        None => pattern.eq_ignore_ascii_case(fqdn),
    }
}

impl Visibility {
    /// Whether a service of `namespace` whose FQDN is `fqdn` is visible (the namespace, then a Sidecar's hosts).
    pub fn sees_host(&self, namespace: &str, fqdn: &str) -> bool {
        match self {
            Self::Egress(e) => self.sees(namespace) && e.allows(namespace, fqdn),
            _ => self.sees(namespace),
        }
    }

    /// [`Self::sees_host`] for a Service key (`name.namespace.svc.cluster.local`).
    pub fn sees_service(&self, key: &ObjectKey) -> bool {
        match self {
            Self::Egress(_) => {
                let fqdn = format!("{}.{}.svc.{CLUSTER_DOMAIN}", key.name, key.namespace);
                self.sees_host(&key.namespace, &fqdn)
            }
            _ => self.sees(&key.namespace),
        }
    }

    /// A Sidecar says `REGISTRY_ONLY`: calls to hosts outside the mesh are refused.
    pub fn registry_only(&self) -> bool {
        matches!(self, Self::Egress(e) if e.mode == OutboundMode::RegistryOnly)
    }
}

impl Model {
    /// The Sidecar that applies to a workload of `namespace` carrying `labels`, as istiod picks it (see the module
    /// header); with its key.
    pub fn sidecar_for(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<(&ObjectKey, &Sidecar)> {
        if self.sidecars.is_empty() {
            return None;
        }
        let oldest = |ns: &str, keep: &dyn Fn(&Sidecar) -> bool| {
            let from = ObjectKey::new(ns, "");
            let in_ns = self.sidecars.range(from..).take_while(|(k, _)| k.namespace == ns);
            in_ns.filter(|(_, s)| keep(s)).min_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)))
        };
        let unselected = |s: &Sidecar| s.spec.workload_selector.is_none();
        oldest(namespace, &|s| s.spec.selects(labels))
            .or_else(|| oldest(namespace, &unselected))
            .or_else(|| oldest(&self.settings.root_namespace, &unselected))
    }

    /// The Sidecar that applies to `proxy` (none for a gateway).
    pub fn proxy_sidecar(&self, proxy: &ProxyInfo) -> Option<(&ObjectKey, &Sidecar)> {
        if matches!(proxy.mode, InterceptionMode::Gateway(_)) {
            return None;
        }
        self.sidecar_for(&proxy.namespace, &proxy.labels)
    }

    /// The proxy's visibility narrowed by its Sidecar, when one applies and narrows anything.
    pub fn egress_visibility(&self, proxy: &ProxyInfo) -> Option<Visibility> {
        let (_, sidecar) = self.proxy_sidecar(proxy)?;
        self.egress_of(sidecar, &proxy.namespace, &proxy.visibility)
    }

    /// `sidecar`'s scope for a proxy of `namespace` seeing `base` (see [`Egress::of`]), with the destinations of
    /// the VirtualServices of the services it allows. One pass over the by-Service index: callers cache it per
    /// Sidecar, namespace and visibility (`xds::snapshot`).
    pub fn egress_of(&self, sidecar: &Sidecar, namespace: &str, base: &Visibility) -> Option<Visibility> {
        let mut egress = Egress::of(sidecar, namespace, base)?;
        let index = self.by_service();
        let fqdn = |k: &ObjectKey| format!("{}.{}.svc.{CLUSTER_DOMAIN}", k.name, k.namespace);
        let allowed = |k: &ObjectKey| egress.allows(&k.namespace, &fqdn(k));
        let visible: BTreeSet<&ObjectKey> =
            index.virtual_services_of.iter().filter(|(svc, _)| allowed(svc)).flat_map(|(_, vs)| vs).collect();
        let mut destinations: Vec<(String, String)> = index
            .routed_by
            .iter()
            .filter(|(dest, vs)| !allowed(dest) && vs.iter().any(|v| visible.contains(v)))
            .map(|(dest, _)| (dest.namespace.clone(), fqdn(dest)))
            .collect();
        destinations.sort();
        egress.destinations = destinations;
        Some(Visibility::Egress(Box::new(egress)))
    }

    /// The proxy as its Sidecar scopes it (its `visibility` narrowed), if one does.
    pub fn scoped_proxy(&self, proxy: &ProxyInfo) -> Option<ProxyInfo> {
        self.egress_visibility(proxy).map(|visibility| ProxyInfo { visibility, ..proxy.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Provenance;
    use super::*;
    use serde_json::json;

    fn sidecar(ns: &str, name: &str, seq: u64, spec: serde_json::Value) -> (ObjectKey, Sidecar) {
        let spec = serde_json::from_value(spec).expect("spec");
        let provenance = Provenance { seq, ..Default::default() };
        (ObjectKey::new(ns, name), Sidecar { name: name.into(), namespace: ns.into(), spec, provenance })
    }

    fn model(objects: Vec<(ObjectKey, Sidecar)>) -> Model {
        Model { sidecars: objects.into_iter().collect(), ..Default::default() }
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        [("app".to_string(), app.to_string())].into()
    }

    fn chosen<'a>(m: &'a Model, ns: &str, app: &str) -> Option<&'a str> {
        m.sidecar_for(ns, &labels(app)).map(|(k, _)| k.name.as_str())
    }

    #[test]
    fn selection_follows_istiod_order() {
        let m = model(vec![
            sidecar("istio-system", "mesh", 0, json!({"egress": [{"hosts": ["./*"]}]})),
            sidecar("default", "ns-default", 1, json!({"egress": [{"hosts": ["./*"]}]})),
            sidecar("default", "pp-new", 3, json!({"workloadSelector": {"labels": {"app": "productpage"}}})),
            sidecar("default", "pp-old", 2, json!({"workloadSelector": {"labels": {"app": "productpage"}}})),
            sidecar("other", "reviews-only", 4, json!({"workloadSelector": {"labels": {"app": "reviews"}}})),
        ]);
        assert_eq!(chosen(&m, "default", "productpage"), Some("pp-old"), "a selector match, the oldest");
        assert_eq!(chosen(&m, "default", "details"), Some("ns-default"), "else the namespace's default");
        assert_eq!(chosen(&m, "other", "details"), Some("mesh"), "else the root namespace's default");
        assert_eq!(chosen(&m, "other", "reviews"), Some("reviews-only"));
        let without_root = model(vec![sidecar("default", "ns-default", 1, json!({}))]);
        assert_eq!(chosen(&without_root, "other", "details"), None, "else none");
        assert_eq!(chosen(&Model::default(), "default", "productpage"), None);
    }

    #[test]
    fn hosts_match_the_fqdn_in_their_namespace() {
        let (_, s) = sidecar(
            "default",
            "s",
            0,
            json!({"egress": [{"hosts": ["./reviews.default.svc.cluster.local", "prod/*", "*/*.example.com",
            "~/*"]}]}),
        );
        let e = Egress::of(&s, "default", &Visibility::All).expect("narrows");
        assert!(e.allows("default", "reviews.default.svc.cluster.local"));
        assert!(!e.allows("default", "ratings.default.svc.cluster.local"));
        assert!(e.allows("prod", "anything.prod.svc.cluster.local"));
        assert!(e.allows("x", "api.example.com") && !e.allows("x", "example.com"));
        let (_, none) = sidecar("default", "n", 0, json!({"egress": [{"hosts": ["~/*"]}]}));
        let none = Egress::of(&none, "default", &Visibility::All).expect("narrows");
        assert!(!none.allows("default", "reviews.default.svc.cluster.local"), "`~` imports nothing");
        assert!(host_matches("*", "a.b") && host_matches("A.b", "a.B") && !host_matches("*.b", ".b"));
    }

    #[test]
    fn a_root_sidecar_resolves_dot_per_proxy_namespace_and_everything_allowed_narrows_nothing() {
        let (_, root) = sidecar("istio-system", "mesh", 0, json!({"egress": [{"hosts": ["./*"]}]}));
        let a = Egress::of(&root, "a", &Visibility::All).expect("narrows");
        assert_eq!(a.hosts, [("a".to_string(), "*".to_string())]);
        assert_ne!(Some(a), Egress::of(&root, "b", &Visibility::All));
        let (_, all) = sidecar("a", "all", 0, json!({"egress": [{"hosts": ["*/*", "./*"]}]}));
        assert_eq!(Egress::of(&all, "a", &Visibility::All), None, "*/* with ALLOW_ANY: the proxy's sets are shared");
        let (_, closed) = sidecar("a", "c", 0, json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}));
        let c = Egress::of(&closed, "a", &Visibility::Namespaces(["a".into()].into())).expect("REGISTRY_ONLY");
        let v = Visibility::Egress(Box::new(c));
        assert!(v.registry_only() && v.sees_host("a", "x.a.svc.cluster.local") && !v.sees_host("b", "x.b"));
        assert!(v.sees_service(&ObjectKey::new("a", "x")), "no egress: */*");
    }

    #[test]
    fn a_visible_virtual_service_brings_its_destinations_into_the_scope() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-next, namespace: default}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 90
    - destination: {host: reviews-next}
      weight: 10
"#;
        let m = crate::source::parse_str(yaml, "mesh.yaml").expect("loads");
        let hosts = json!({"egress": [{"hosts": ["./reviews.default.svc.cluster.local"]}]});
        let (_, s) = sidecar("default", "s", 0, hosts);
        let v = m.egress_of(&s, "default", &Visibility::All).expect("narrows");
        assert!(v.sees_service(&ObjectKey::new("default", "reviews")));
        assert!(v.sees_service(&ObjectKey::new("default", "reviews-next")), "the VirtualService's destination");
        assert!(!v.sees_service(&ObjectKey::new("default", "ratings")), "nothing routes there");
    }

    #[test]
    fn gateways_get_no_sidecar() {
        let m = model(vec![sidecar("default", "s", 0, json!({"egress": [{"hosts": ["./*"]}]}))]);
        let mut p = ProxyInfo::listening("p", "default", "127.0.0.1:1".parse().unwrap());
        assert!(m.egress_visibility(&p).is_some());
        let bind = "0.0.0.0".parse().unwrap();
        p.mode = InterceptionMode::Gateway(crate::model::GatewayRole { named: None, bind });
        assert_eq!(m.egress_visibility(&p), None);
    }
}
