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

mod conflict;
mod destination_rule;
mod gateway;
mod gateway_api;
mod gateway_bind;
mod http_route;
mod peer_authentication;
mod sidecar;
mod sidecar_scope;
mod status;
mod tls_validate;
mod validate;
mod virtual_service;

pub use conflict::*;
pub use destination_rule::*;
pub use gateway::*;
pub use gateway_api::*;
pub use gateway_bind::*;
pub use http_route::*;
pub use peer_authentication::*;
pub use sidecar::*;
pub use sidecar_scope::*;
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

/// A field Sluice does not translate, and what becomes of the object that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Untranslated {
    /// As a user writes it: `spec.trafficPolicy.tls`.
    pub path: String,
    /// What a user is told.
    pub message: String,
    /// The field's loss would weaken security: the whole object is refused (fail closed), never applied without it.
    pub refused: bool,
}

/// The message of an untranslated field that is only reported.
pub const IGNORED: &str = "not supported by Sluice; ignored";

/// [`unsupported_fields`] with a verdict each: a security field of `kind` ([`fails_closed`]) refuses the object;
/// a deprecated field Istio itself ignores says so; anything else is ignored with a warning.
pub fn untranslated<T: Serialize>(kind: &str, prefix: &str, raw: &Value, typed: &T) -> Vec<Untranslated> {
    let mut out = Vec::new();
    // `tls` routes are translated at gateways only: on a VirtualService for sidecars they are reported.
    let mesh_bound = raw["gateways"].as_array().is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"));
    if kind == "VirtualService" && mesh_bound && raw["tls"].as_array().is_some_and(|t| !t.is_empty()) {
        let message = "TLS routes are served at gateways (servers with tls.mode PASSTHROUGH) only; sidecars ignore \
                       them";
        out.push(Untranslated { path: format!("{prefix}.tls"), message: message.into(), refused: false });
    }
    for path in unsupported_fields(prefix, raw, typed) {
        let value = at_path(raw, path.strip_prefix(prefix).unwrap_or(&path));
        let mut inner = Vec::new();
        leaf_keys(&path, value, &mut inner);
        let refusals: Vec<Untranslated> = inner
            .into_iter()
            .filter_map(|p| {
                fails_closed(kind, &p).map(|why| Untranslated { path: p, message: why.into(), refused: true })
            })
            .collect();
        if refusals.is_empty() {
            let sidecar = (kind == "Sidecar").then(|| sidecar::untranslated_message(&path)).flatten();
            let message = deprecated(kind, &path).or(sidecar).unwrap_or(IGNORED).to_string();
            out.push(Untranslated { path, message, refused: false });
        } else {
            out.extend(refusals);
        }
    }
    out
}

/// Why dropping the field at `path` of a `kind` object would weaken security, if it would. Today: a DestinationRule
/// TLS setting Sluice does not translate (`credentialName`, `caCrl`, `insecureSkipVerify`, …, at any level):
/// applied without it, the traffic would be verified against the wrong authority, or not at all.
pub fn fails_closed(kind: &str, path: &str) -> Option<&'static str> {
    if kind == "Gateway" && path.contains(".tls.") {
        return Some(
            "this TLS setting is not supported by Sluice: the Gateway is refused rather than served without it; the \
             last good config keeps serving",
        );
    }
    (kind == "DestinationRule" && path.contains("trafficPolicy") && path.contains(".tls.")).then_some(
        "this TLS setting is not supported by Sluice: the object is refused rather than applied without it (its \
         traffic would not be secured as asked); the last good config keeps serving",
    )
}

/// The message for a deprecated field that istiod itself ignores.
fn deprecated(kind: &str, path: &str) -> Option<&'static str> {
    (kind == "DestinationRule" && path.ends_with("outlierDetection.consecutiveErrors")).then_some(
        "deprecated and ignored, as istiod has since 1.7: use consecutive5xxErrors or consecutiveGatewayErrors \
         (Envoy's default of 5 consecutive 5xx still ejects)",
    )
}

/// The value at a dotted path with `[i]` indexes (`.a.b[0].c`), or `Null`.
fn at_path<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut v = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        v = v.get(key).unwrap_or(&Value::Null);
        for i in indexes.split('[').filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok()) {
            v = v.get(i).unwrap_or(&Value::Null);
        }
    }
    v
}

/// `path` and the path of every key below it.
fn leaf_keys(path: &str, value: &Value, out: &mut Vec<String>) {
    out.push(path.to_string());
    match value {
        Value::Object(m) => m.iter().for_each(|(k, v)| leaf_keys(&format!("{path}.{k}"), v, out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| leaf_keys(&format!("{path}[{i}]"), v, out)),
        _ => {}
    }
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

/// Whether a value is its type's default (for `skip_serializing_if`).
pub(crate) fn is_unset<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
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
    /// Every mesh VirtualService naming the service, in key order.
    pub fn virtual_services_for<'a>(
        &'a self,
        svc: &'a ObjectKey,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a VirtualService)> + 'a {
        let keys = self.by_service().virtual_services_of.get(svc).cloned().unwrap_or_default();
        keys.into_iter()
            .filter_map(move |k| self.virtual_services.get_key_value(&k))
            .filter(|(_, vs)| vs.spec.applies_to_mesh())
    }

    /// The HTTPRoutes with a Service parent naming `svc`, in key order.
    pub fn http_routes_for<'a>(
        &'a self,
        svc: &'a ObjectKey,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a HttpRouteObject)> + 'a {
        let keys = self.by_service().http_routes_of.get(svc).cloned().unwrap_or_default();
        keys.into_iter().filter_map(move |k| self.http_routes.get_key_value(&k))
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
    fn untranslated_tls_fields_fail_closed_and_others_are_ignored() {
        let raw = json!({"host": "reviews", "exportTo": ["."], "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
            "portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "SIMPLE", "caCrl": "/crl.pem"}}],
            "outlierDetection": {"consecutiveErrors": 7}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"tls": {"mode": "SIMPLE",
                "credentialName": "reviews-ca"}}}]});
        let typed: DestinationRuleSpec = serde_json::from_value(raw.clone()).expect("spec");
        let found = untranslated("DestinationRule", "spec", &raw, &typed);
        let mut refused: Vec<&str> = found.iter().filter(|u| u.refused).map(|u| u.path.as_str()).collect();
        refused.sort();
        assert_eq!(
            refused,
            ["spec.subsets[0].trafficPolicy.tls.credentialName", "spec.trafficPolicy.portLevelSettings[0].tls.caCrl"],
            "the modes are translated; what is not fails closed"
        );
        let ignored: Vec<(&str, bool)> =
            found.iter().filter(|u| !u.refused).map(|u| (u.path.as_str(), u.message == IGNORED)).collect();
        assert_eq!(
            ignored,
            [("spec.exportTo", true), ("spec.trafficPolicy.outlierDetection.consecutiveErrors", false)],
            "a deprecated field says so"
        );
        let vs = json!({"hosts": ["r"], "tls": [{"match": [{"sniHosts": ["r"]}]}]});
        let typed: VirtualServiceSpec = serde_json::from_value(vs.clone()).expect("spec");
        let found = untranslated("VirtualService", "spec", &vs, &typed);
        assert!(found.iter().all(|u| !u.refused), "TLS routing is not");
        assert!(found.iter().any(|u| u.path == "spec.tls"), "a sidecar VirtualService's tls routes are reported");
        let at_gateway = json!({"hosts": ["r"], "gateways": ["gw"], "tls": [{"match": [{"sniHosts": ["r"]}]}]});
        let typed: VirtualServiceSpec = serde_json::from_value(at_gateway.clone()).expect("spec");
        assert!(untranslated("VirtualService", "spec", &at_gateway, &typed).is_empty(), "served at the gateway");
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
