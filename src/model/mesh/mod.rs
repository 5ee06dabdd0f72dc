//! The routing objects meshes already have: Istio `VirtualService` and `DestinationRule`, Gateway API
//! `HTTPRoute` bound to a Service (GAMMA).
//!
//! ```text
//!  file source (YAML) ─┐  plain serde types (this module)      translate::mesh (pure)
//!  kube watcher (JSON) ┴─▶ VirtualService, DestinationRule, ──▶ subset clusters, VS routes, GAMMA routes
//!                          HttpRouteObject  + unsupported_fields (what a user wrote that these types do not hold)
//! ```
//!
//! Both sources deserialize a `spec` into these types and call [`unsupported_fields`] with the raw value, so a
//! field Sluice does not translate is reported (log, metric, `sluice validate`) with the same path everywhere.

mod destination_rule;
mod http_route;
mod status;
mod validate;
mod virtual_service;

pub use destination_rule::*;
pub use http_route::*;
pub use status::*;
pub use validate::*;
pub use virtual_service::*;

use super::{CLUSTER_DOMAIN, ObjectKey};
use serde::Serialize;
use serde_json::Value;

/// The API versions of `networking.istio.io` Sluice reads (one schema).
pub const ISTIO_VERSIONS: [&str; 3] =
    ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"];
/// Gateway API's HTTPRoute version.
pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";

/// The fields under `raw` (a spec as written) that `typed` (the same spec after deserializing) does not hold:
/// what Sluice does not translate. Paths as a user writes them, prefixed with `prefix` (`spec.http[0].tcp`).
/// Empty values (`{}`, `[]`, `null`) are not reported.
pub fn unsupported_fields<T: Serialize>(prefix: &str, raw: &Value, typed: &T) -> Vec<String> {
    let typed = serde_json::to_value(typed).unwrap_or(Value::Null);
    let mut out = Vec::new();
    diff(prefix, raw, &typed, &mut out);
    out
}

fn diff(path: &str, raw: &Value, typed: &Value, out: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (k, v) in r {
                let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match t.get(k) {
                    Some(tv) => diff(&sub, v, tv, out),
                    None if !is_empty(v) && !is_default(v) => out.push(sub),
                    None => {}
                }
            }
        }
        (Value::Array(r), Value::Array(t)) => {
            for (i, v) in r.iter().enumerate() {
                if let Some(tv) = t.get(i) {
                    diff(&format!("{path}[{i}]"), v, tv, out);
                }
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Values the types leave out because they equal the default (`ignoreUriCase: false`, `name: ""`).
fn is_default(v: &Value) -> bool {
    matches!(v, Value::Bool(false)) || v.as_str() == Some("")
}

/// The Service a host names, seen from `namespace`: `reviews` (that namespace), `reviews.ns`, `reviews.ns.svc`,
/// `reviews.ns.svc.cluster.local`. `None` for other forms (wildcards, external hosts).
pub fn service_of_host(host: &str, namespace: &str) -> Option<ObjectKey> {
    let parts: Vec<&str> = host.split('.').collect();
    let suffix = format!("svc.{CLUSTER_DOMAIN}");
    match parts.as_slice() {
        [name] => Some(ObjectKey::new(namespace, *name)),
        [name, ns] => Some(ObjectKey::new(*ns, *name)),
        [name, ns, "svc"] => Some(ObjectKey::new(*ns, *name)),
        [name, ns, rest @ ..] if rest.join(".") == suffix => Some(ObjectKey::new(*ns, *name)),
        _ => None,
    }
    .filter(|k| super::is_dns_label(&k.name) && super::is_dns_label(&k.namespace))
}

/// Whether `host` (seen from `namespace`) names the Service `svc`: [`service_of_host`] without allocating, for
/// the per-service scans over every VirtualService and DestinationRule.
pub fn host_is(host: &str, namespace: &str, svc: &ObjectKey) -> bool {
    let mut parts = host.splitn(3, '.');
    let (name, ns, rest) = (parts.next(), parts.next(), parts.next());
    if name != Some(svc.name.as_str()) {
        return false;
    }
    match (ns, rest) {
        (None, _) => namespace == svc.namespace,
        (Some(ns), None) => ns == svc.namespace,
        (Some(ns), Some(rest)) => {
            ns == svc.namespace && (rest == "svc" || rest.strip_prefix("svc.") == Some(CLUSTER_DOMAIN))
        }
    }
}

impl super::Model {
    /// The VirtualService that routes a service for sidecars: the first by key among those that apply to the
    /// mesh and name the service in `hosts` (istiod, too, applies one per host; the others are reported).
    pub fn virtual_service_for<'a>(&'a self, svc: &'a ObjectKey) -> Option<(&'a ObjectKey, &'a VirtualService)> {
        self.virtual_services_for(svc).next()
    }

    /// Every mesh VirtualService naming the service, in key order.
    pub fn virtual_services_for<'a>(
        &'a self,
        svc: &'a ObjectKey,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a VirtualService)> + 'a {
        self.virtual_services.iter().filter(move |(k, vs)| {
            vs.spec.applies_to_mesh() && vs.spec.hosts.iter().any(|h| host_is(h, &k.namespace, svc))
        })
    }

    /// The DestinationRule of a service's host: the first by key (the others are reported).
    pub fn destination_rule_for(&self, svc: &ObjectKey) -> Option<&DestinationRule> {
        self.destination_rules.iter().find(|(k, dr)| host_is(&dr.spec.host, &k.namespace, svc)).map(|(_, dr)| dr)
    }

    /// The HTTPRoutes with a Service parent naming `svc`, in key order.
    pub fn http_routes_for<'a>(
        &'a self,
        svc: &'a ObjectKey,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a HttpRouteObject)> + 'a {
        self.http_routes.iter().filter(move |(k, r)| {
            r.spec.parent_refs.iter().any(|p| {
                p.is_service() && p.name == svc.name && p.namespace.as_deref().unwrap_or(&k.namespace) == svc.namespace
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_the_types_do_not_hold_are_reported() {
        let raw = json!({"hosts": ["reviews"], "exportTo": ["."], "http": [{"route": [{"destination": {"host": "r"}}],
            "match": [{"uri": {"prefix": "/"}, "statPrefix": "x"}], "directResponse": {"status": 200}}],
            "tcp": []});
        let typed: VirtualServiceSpec = serde_json::from_value(raw.clone()).expect("spec");
        assert_eq!(
            unsupported_fields("spec", &raw, &typed),
            ["spec.exportTo", "spec.http[0].directResponse", "spec.http[0].match[0].statPrefix"]
        );
    }

    #[test]
    fn hosts_resolve_to_services() {
        assert_eq!(service_of_host("reviews", "default"), Some(ObjectKey::new("default", "reviews")));
        assert_eq!(service_of_host("reviews.prod", "default"), Some(ObjectKey::new("prod", "reviews")));
        let fqdn = "reviews.prod.svc.cluster.local";
        assert_eq!(service_of_host(fqdn, "default"), Some(ObjectKey::new("prod", "reviews")));
        assert_eq!(service_of_host("*.example.com", "default"), None);
        assert_eq!(service_of_host("www.example.com", "default"), None);
        let key = ObjectKey::new("prod", "reviews");
        for host in ["reviews.prod", "reviews.prod.svc", fqdn] {
            assert!(host_is(host, "default", &key), "{host}");
        }
        assert!(host_is("reviews", "prod", &key));
        for host in ["reviews", "reviews.other", "ratings.prod", "reviews.prod.svc.example.com", "reviews.prod.x"] {
            assert!(!host_is(host, "default", &key), "{host}");
        }
    }
}
