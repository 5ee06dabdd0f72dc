//! What an HTTPRoute's `status.parents` should say (GAMMA), computed from the model alone so that a cluster
//! source only has to write it: per Service parent, `Accepted` and `ResolvedRefs`, with Gateway API's reasons.

use super::{HttpRouteObject, ParentRef};
use crate::model::{Model, ObjectKey};
use serde::Serialize;

/// Sluice's `controllerName` in `status.parents[].controllerName`.
pub const CONTROLLER_NAME: &str = "sluice.dev/mesh";

/// One `status.parents[]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    pub parent_ref: ParentRef,
    pub controller_name: &'static str,
    pub conditions: Vec<Condition>,
}

/// A condition as Kubernetes writes it (without the timestamp, which the writer adds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `"True"` or `"False"`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn condition(kind: &'static str, ok: bool, reason: &'static str, message: impl Into<String>) -> Condition {
    Condition { kind, status: if ok { "True" } else { "False" }, reason, message: message.into() }
}

/// The `status.parents` Sluice writes on `route`: its Service parents (GAMMA), then its Gateway parents of Sluice's
/// class ([`super::gateway_view`], passed in so one view serves every route). Parents Sluice does not serve (a
/// Gateway of another class) are another controller's to report.
pub fn http_route_status(
    model: &Model,
    key: &ObjectKey,
    route: &HttpRouteObject,
    view: &super::GatewayView,
) -> Vec<ParentStatus> {
    let mut out = mesh_parents(model, key, route);
    out.extend(view.routes.get(key).into_iter().flatten().cloned());
    out
}

fn mesh_parents(model: &Model, key: &ObjectKey, route: &HttpRouteObject) -> Vec<ParentStatus> {
    let resolved = resolved_refs(model, key, route, false);
    route
        .spec
        .parent_refs
        .iter()
        .filter(|p| !p.is_gateway())
        .map(|p| {
            let svc = ObjectKey::new(p.namespace.as_deref().unwrap_or(&key.namespace), p.name.clone());
            let accepted = if !p.is_service() {
                condition("Accepted", false, "UnsupportedValue", "Sluice serves mesh routes: parents of kind Service")
            } else if !model.services.contains_key(&svc) {
                condition("Accepted", false, "NoMatchingParent", format!("no Service {svc}"))
            } else if let Some((vs, _)) = model.virtual_service_for(&svc) {
                let msg = format!("VirtualService {vs} routes Service {svc} and takes precedence");
                condition("Accepted", false, "Conflicted", msg)
            } else {
                condition("Accepted", true, "Accepted", format!("routes Service {svc}"))
            };
            ParentStatus {
                parent_ref: p.clone(),
                controller_name: CONTROLLER_NAME,
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect()
}

/// `ResolvedRefs` of a route's backends: each a Service with the port it names; at a Gateway parent (`grants`),
/// one in another namespace also needs a ReferenceGrant (Gateway API's rule; GAMMA routes are not held to it).
pub(super) fn resolved_refs(model: &Model, key: &ObjectKey, route: &HttpRouteObject, grants: bool) -> Condition {
    for rule in &route.spec.rules {
        for b in &rule.backend_refs {
            if !b.backend().is_service() {
                return condition("ResolvedRefs", false, "InvalidKind", format!("backend {} is not a Service", b.name));
            }
            let svc = ObjectKey::new(b.namespace.as_deref().unwrap_or(&key.namespace), b.name.clone());
            if grants && !super::backend_permitted(model, &key.namespace, &svc) {
                let msg = format!(
                    "no ReferenceGrant in {} lets HTTPRoutes of {} use Service {svc}",
                    svc.namespace, key.namespace
                );
                return condition("ResolvedRefs", false, "RefNotPermitted", msg);
            }
            let found =
                model.services.get(&svc).is_some_and(|s| b.port.is_none_or(|p| s.ports.iter().any(|sp| sp.port == p)));
            if !found {
                return condition("ResolvedRefs", false, "BackendNotFound", format!("no Service {svc} with that port"));
            }
        }
    }
    condition("ResolvedRefs", true, "ResolvedRefs", "every backend resolves")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use crate::model::mesh::{HttpBackendRef, HttpRouteRule, HttpRouteSpec};

    #[test]
    fn accepted_and_resolved_per_mesh_parent() {
        let mut m = Model::default();
        m.insert_service(Service::http("default", "reviews", 9080));
        let parent =
            |kind: &str, name: &str| ParentRef { kind: Some(kind.into()), name: name.into(), ..Default::default() };
        let backend = |name: &str| HttpBackendRef { name: name.into(), port: Some(9080), ..Default::default() };
        let spec = HttpRouteSpec {
            parent_refs: vec![parent("Service", "reviews"), parent("Service", "gone"), parent("Gateway", "gw")],
            hostnames: vec![],
            rules: vec![HttpRouteRule {
                backend_refs: vec![backend("reviews"), backend("nope")],
                ..Default::default()
            }],
        };
        let key = ObjectKey::new("default", "r");
        let route =
            HttpRouteObject { name: "r".into(), namespace: "default".into(), spec, provenance: Default::default() };
        let status = http_route_status(&m, &key, &route, &crate::model::mesh::gateway_view(&m));
        let reasons: Vec<(&str, &str)> =
            status.iter().map(|s| (s.conditions[0].reason, s.conditions[1].reason)).collect();
        // The Gateway parent is of no Sluice GatewayClass: not Sluice's to report.
        assert_eq!(reasons, [("Accepted", "BackendNotFound"), ("NoMatchingParent", "BackendNotFound")]);
    }
}
