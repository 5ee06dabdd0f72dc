//! The mesh objects from the cluster: Istio `VirtualService`, `DestinationRule`, `Gateway` and `Sidecar`
//! (`networking.istio.io/v1`), `PeerAuthentication` (`security.istio.io/v1`) and Gateway API `HTTPRoute`,
//! `GatewayClass`, `Gateway` (`gateway.networking.k8s.io/v1`) and `ReferenceGrant` (`v1beta1`), watched as dynamic
//! objects so one malformed spec fails that object only.
//!
//! Each `spec` goes through the same types and checks as the file source: deserialized into
//! [`crate::model::mesh`], its untranslated fields logged and counted (`sluice_unsupported_fields_total{kind}`,
//! per object version seen), then [`validate`](crate::model::mesh::VirtualServiceSpec::validate)d; the first
//! problem makes the object [`Invalid`] (logged once and counted by the index task).

use super::convert::{Invalid, Item, Tracked};
use crate::model::FieldError;
use crate::model::mesh::{
    ApiGateway, ApiGatewaySpec, DestinationRule, DestinationRuleSpec, Gateway, GatewayClass, GatewayClassSpec,
    GatewaySpec, HttpRouteObject, HttpRouteSpec, PeerAuthentication, PeerAuthenticationSpec, Provenance,
    ReferenceGrant, ReferenceGrantSpec, Sidecar, SidecarSpec, VirtualService, VirtualServiceSpec, untranslated,
};
use crate::telemetry::names;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The API resource of each mesh kind Sluice watches: (group, version, kind, plural).
pub const VIRTUAL_SERVICE: (&str, &str, &str, &str) =
    ("networking.istio.io", "v1", "VirtualService", "virtualservices");
pub const DESTINATION_RULE: (&str, &str, &str, &str) =
    ("networking.istio.io", "v1", "DestinationRule", "destinationrules");
pub const HTTP_ROUTE: (&str, &str, &str, &str) = ("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
pub const PEER_AUTHENTICATION: (&str, &str, &str, &str) =
    ("security.istio.io", "v1", "PeerAuthentication", "peerauthentications");
pub const SIDECAR: (&str, &str, &str, &str) = ("networking.istio.io", "v1", "Sidecar", "sidecars");
/// Istio's `Gateway`.
pub const ISTIO_GATEWAY: (&str, &str, &str, &str) = ("networking.istio.io", "v1", "Gateway", "gateways");
/// Gateway API's `Gateway`.
pub const API_GATEWAY: (&str, &str, &str, &str) = ("gateway.networking.k8s.io", "v1", "Gateway", "gateways");
/// Cluster-scoped.
pub const GATEWAY_CLASS: (&str, &str, &str, &str) =
    ("gateway.networking.k8s.io", "v1", "GatewayClass", "gatewayclasses");
pub const REFERENCE_GRANT: (&str, &str, &str, &str) =
    ("gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants");

/// The [`ApiResource`] for a `(group, version, kind, plural)` entry above.
pub fn resource((group, version, kind, plural): (&str, &str, &str, &str)) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// `spec` deserialized into `S` (errors name the field), its untranslated fields reported, then validated.
fn spec<S>(obj: &DynamicObject, kind: &'static str, validate: fn(&S) -> Vec<FieldError>) -> Result<S, Invalid>
where
    S: DeserializeOwned + Serialize,
{
    let raw = obj.data.get("spec").ok_or_else(|| Invalid { field: "spec".into(), message: "missing".into() })?;
    let typed: S = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".to_string() } else { format!("spec.{path}") };
        Invalid { field, message: e.into_inner().to_string() }
    })?;
    let object = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let mut refusal = None;
    for u in untranslated(kind, "spec", raw, &typed) {
        if u.refused {
            refusal.get_or_insert(Invalid { field: u.path, message: u.message });
        } else {
            tracing::warn!(kind, %object, field = %u.path, "{}", u.message);
            metrics::counter!(names::UNSUPPORTED_FIELDS, "kind" => kind).increment(1);
        }
    }
    if let Some(refused) = refusal {
        return Err(refused);
    }
    if let Some(e) = validate(&typed).into_iter().next() {
        return Err(Invalid { field: e.path, message: e.message });
    }
    Ok(typed)
}

/// A cluster object's age: its `creationTimestamp` (the oldest of two objects for one Service wins).
fn provenance(obj: &DynamicObject) -> Provenance {
    let created = obj.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    Provenance { created, seq: 0, at: "cluster".into() }
}

pub fn virtual_service(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<VirtualServiceSpec>(obj, "VirtualService", VirtualServiceSpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::VirtualService(Box::new(VirtualService { name, namespace, spec, provenance })))
}

pub fn destination_rule(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<DestinationRuleSpec>(obj, "DestinationRule", DestinationRuleSpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::DestinationRule(Box::new(DestinationRule { name, namespace, spec, provenance })))
}

pub fn peer_authentication(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<PeerAuthenticationSpec>(obj, "PeerAuthentication", PeerAuthenticationSpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::PeerAuthentication(Box::new(PeerAuthentication { name, namespace, spec, provenance })))
}

/// An Istio `Sidecar`, with its age (of two that apply to one proxy, the older wins).
pub fn sidecar(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<SidecarSpec>(obj, "Sidecar", SidecarSpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::Sidecar(Box::new(Sidecar { name, namespace, spec, provenance })))
}

pub fn http_route(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<HttpRouteSpec>(obj, "HTTPRoute", HttpRouteSpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::HttpRoute(Box::new(HttpRouteObject { name, namespace, spec, provenance }), tracked(obj)))
}

fn tracked(obj: &DynamicObject) -> Tracked {
    Tracked::of(&obj.metadata, obj.data.get("status"))
}

/// An Istio `Gateway`: an unsupported `tls` field refuses it (fails closed), as in a config file.
pub fn istio_gateway(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<GatewaySpec>(obj, "Gateway", GatewaySpec::validate)?;
    let (name, namespace) = (obj.name_any(), obj.namespace().unwrap_or_default());
    Ok(Item::Gateway(Box::new(Gateway { name, namespace, spec })))
}

/// A cluster-scoped `GatewayClass` (its key's namespace is empty).
pub fn gateway_class(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<GatewayClassSpec>(obj, "GatewayClass", GatewayClassSpec::validate)?;
    Ok(Item::GatewayClass(Box::new(GatewayClass { name: obj.name_any(), spec }), tracked(obj)))
}

/// A Gateway API `Gateway`, with its age (of two listeners that clash, the older Gateway's wins).
pub fn api_gateway(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<ApiGatewaySpec>(obj, "Gateway", ApiGatewaySpec::validate)?;
    let (name, namespace, provenance) = (obj.name_any(), obj.namespace().unwrap_or_default(), provenance(obj));
    Ok(Item::ApiGateway(Box::new(ApiGateway { name, namespace, spec, provenance }), tracked(obj)))
}

pub fn reference_grant(obj: &DynamicObject) -> Result<Item, Invalid> {
    let spec = spec::<ReferenceGrantSpec>(obj, "ReferenceGrant", ReferenceGrantSpec::validate)?;
    let (name, namespace) = (obj.name_any(), obj.namespace().unwrap_or_default());
    Ok(Item::ReferenceGrant(Box::new(ReferenceGrant { name, namespace, spec })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(kind: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": kind,
            "metadata": {"name": "reviews", "namespace": "default"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_virtual_service_becomes_the_model_type() {
        let obj = dynamic(
            "VirtualService",
            json!({"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]}]}),
        );
        let Item::VirtualService(vs) = virtual_service(&obj).unwrap() else { panic!() };
        assert_eq!((vs.name.as_str(), vs.namespace.as_str(), vs.spec.http[0].route.len()), ("reviews", "default", 2));
    }

    #[test]
    fn a_peer_authentication_becomes_the_model_type_or_names_its_field() {
        let obj = dynamic(
            "PeerAuthentication",
            json!({"selector": {"matchLabels": {"app": "reviews"}},
            "mtls": {"mode": "STRICT"}, "portLevelMtls": {"9080": {"mode": "DISABLE"}}}),
        );
        let Item::PeerAuthentication(pa) = peer_authentication(&obj).unwrap() else { panic!() };
        assert_eq!(pa.spec.port_level_mtls[&9080].mode, crate::model::mesh::MtlsMode::Disable);
        let bad = dynamic("PeerAuthentication", json!({"portLevelMtls": {"9080": {"mode": "STRICT"}}}));
        assert_eq!(peer_authentication(&bad).unwrap_err().field, "spec.portLevelMtls");
        let mode = dynamic("PeerAuthentication", json!({"mtls": {"mode": "STRICTER"}}));
        assert_eq!(peer_authentication(&mode).unwrap_err().field, "spec.mtls.mode");
    }

    #[test]
    fn a_sidecar_becomes_the_model_type_or_names_its_field() {
        let obj = dynamic(
            "Sidecar",
            json!({"workloadSelector": {"labels": {"app": "productpage"}}, "egress": [{"hosts": ["./*"]}],
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
        );
        let Item::Sidecar(s) = sidecar(&obj).unwrap() else { panic!() };
        assert_eq!(
            (s.spec.egress[0].hosts[0].as_str(), s.spec.mode()),
            ("./*", crate::model::mesh::OutboundMode::RegistryOnly)
        );
        let bad = dynamic("Sidecar", json!({"egress": [{"hosts": ["./*", "reviews"]}]}));
        assert_eq!(sidecar(&bad).unwrap_err().field, "spec.egress[0].hosts[1]");
    }

    #[test]
    fn errors_name_the_field() {
        let wrong_type = dynamic("VirtualService", json!({"hosts": "reviews"}));
        assert_eq!(virtual_service(&wrong_type).unwrap_err().field, "spec.hosts");
        let no_hosts = dynamic("VirtualService", json!({"http": []}));
        assert_eq!(virtual_service(&no_hosts).unwrap_err().to_string(), "spec.hosts: must name at least one host");
        let no_host = dynamic("DestinationRule", json!({"host": ""}));
        assert_eq!(destination_rule(&no_host).unwrap_err().field, "spec.host");
        let no_parent = dynamic("HTTPRoute", json!({"parentRefs": [{"name": "gw", "kind": "ServiceImport"}]}));
        assert_eq!(http_route(&no_parent).unwrap_err().field, "spec.parentRefs");
    }

    #[test]
    fn an_untranslated_tls_setting_refuses_the_rule_and_the_age_decides_conflicts() {
        let mtls =
            dynamic("DestinationRule", json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}));
        assert!(destination_rule(&mtls).is_ok(), "ISTIO_MUTUAL is translated");
        let secret = json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "c"}}});
        let refused = destination_rule(&dynamic("DestinationRule", secret)).unwrap_err();
        assert_eq!(refused.field, "spec.trafficPolicy.tls.credentialName", "fails closed: {refused}");
        let mut plain = dynamic("DestinationRule", json!({"host": "reviews"}));
        plain.metadata.creation_timestamp = serde_json::from_value(json!("2026-01-02T00:00:00Z")).ok();
        let Item::DestinationRule(dr) = destination_rule(&plain).unwrap() else { panic!() };
        assert_eq!((dr.provenance.created, dr.provenance.at.as_str()), (Some(1_767_312_000), "cluster"));
    }

    fn gateway_api(kind: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
            "metadata": {"name": "gw", "namespace": "default", "generation": 3,
                          "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": spec, "status": {"conditions": []},
        }))
        .unwrap()
    }

    #[test]
    fn gateway_kinds_become_the_model_types_with_generation_status_and_age() {
        let listeners = json!([{"name": "http", "port": 80, "protocol": "HTTP"}]);
        let obj = gateway_api("Gateway", json!({"gatewayClassName": "sluice", "listeners": listeners}));
        let Item::ApiGateway(gw, tracked) = api_gateway(&obj).unwrap() else { panic!() };
        assert_eq!((gw.spec.listeners.len(), gw.provenance.created), (1, Some(1_767_312_000)));
        assert_eq!((tracked.generation, tracked.status), (Some(3), Some(json!({"conditions": []}))));
        let bad = gateway_api("Gateway", json!({"gatewayClassName": "sluice", "listeners": [{"name": "x"}]}));
        assert!(api_gateway(&bad).unwrap_err().field.starts_with("spec.listeners[0]"));
        let mut class = gateway_api("GatewayClass", json!({"controllerName": "sluice.dev/gateway-controller"}));
        class.metadata.namespace = None;
        let Item::GatewayClass(c, tracked) = gateway_class(&class).unwrap() else { panic!() };
        assert_eq!((c.name.as_str(), tracked.generation), ("gw", Some(3)));
        assert_eq!(gateway_class(&gateway_api("GatewayClass", json!({}))).unwrap_err().field, "spec");
        let grant = gateway_api("ReferenceGrant", json!({"from": [], "to": []}));
        assert_eq!(reference_grant(&grant).unwrap_err().field, "spec.from");
    }

    #[test]
    fn an_istio_gateway_with_an_unsupported_tls_field_is_refused() {
        let server = |tls: serde_json::Value| {
            json!({"servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                                "hosts": ["*"], "tls": tls}]})
        };
        let ok = dynamic("Gateway", server(json!({"mode": "SIMPLE", "credentialName": "cert"})));
        let Item::Gateway(gw) = istio_gateway(&ok).unwrap() else { panic!() };
        assert_eq!(gw.spec.servers[0].tls.as_ref().unwrap().credential_name.as_deref(), Some("cert"));
        let refused = dynamic(
            "Gateway",
            server(json!({"mode": "SIMPLE", "credentialName": "c", "minProtocolVersion": "TLSV1_3"})),
        );
        assert_eq!(istio_gateway(&refused).unwrap_err().field, "spec.servers[0].tls.minProtocolVersion");
    }
}
