//! The status Sluice owes each Gateway API object of the cluster, computed from the merged model alone (pure):
//! GatewayClass `status.conditions` (Sluice's classes only), Gateway `status.conditions`, `status.listeners` and
//! `status.addresses`, HTTPRoute `status.parents` (GAMMA Service parents and Sluice Gateway parents).
//!
//! ```text
//!  index ─ StatusObjects: HTTPRoutes, Gateways, GatewayClasses (+ generation, current status), Service fronts ─┐
//!  Store (merged model) ─ gateway_view ─ http_route_status ─────────────────────────────────────────────────────┴▶
//!     per object whose indexed spec is the model's: Desired { status, observedGeneration on each condition }
//!  Gateway addresses: the Service a `Hostname` spec address names (NAME or NAME.NS.svc.cluster.local), else the
//!     Services of its namespace labelled gateway.networking.k8s.io/gateway-name: NAME ─▶ load balancer
//!     ingress (IPAddress / Hostname), else the cluster IP; none ─▶ Programmed False, AddressNotAssigned
//! ```
//! A status is computed only while the model holds the very object the index holds (same spec), so the
//! `observedGeneration` written is the generation of the spec the status describes.

use super::conditions::observe;
use super::convert::{Item, ServiceFront, Tracked};
use crate::model::mesh::{
    ApiGateway, Condition, GatewayClass, GatewayState, HttpRouteObject, gateway_view, http_route_status,
};
use crate::model::{Model, ObjectKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the index holds of the objects whose status Sluice writes, and of the Services that front Gateways.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusObjects {
    pub routes: BTreeMap<ObjectKey, (HttpRouteObject, Tracked)>,
    pub gateways: BTreeMap<ObjectKey, (ApiGateway, Tracked)>,
    /// Cluster-scoped: keys with an empty namespace.
    pub classes: BTreeMap<ObjectKey, (GatewayClass, Tracked)>,
    /// Services with a gateway-name label or load balancer addresses.
    pub fronts: BTreeMap<ObjectKey, ServiceFront>,
}

impl StatusObjects {
    pub fn of<'a>(items: impl Iterator<Item = (&'a ObjectKey, &'a Item)>) -> StatusObjects {
        let mut out = StatusObjects::default();
        for (key, item) in items {
            let key = key.clone();
            match item {
                Item::HttpRoute(r, t) => _ = out.routes.insert(key, ((**r).clone(), t.clone())),
                Item::ApiGateway(g, t) => _ = out.gateways.insert(key, ((**g).clone(), t.clone())),
                Item::GatewayClass(c, t) => _ = out.classes.insert(key, ((**c).clone(), t.clone())),
                Item::Service(_, front) if *front != ServiceFront::default() => {
                    out.fronts.insert(key, front.clone());
                }
                _ => {}
            }
        }
        out
    }
}

/// The kinds whose status Sluice writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    GatewayClass,
    Gateway,
    HttpRoute,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::GatewayClass => "GatewayClass",
            Target::Gateway => "Gateway",
            Target::HttpRoute => "HTTPRoute",
        }
    }
}

/// One object's status as Sluice would write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub target: Target,
    pub key: ObjectKey,
    /// The `status` fields Sluice owns (each condition with `observedGeneration`, without `lastTransitionTime`).
    pub status: Value,
    /// The object's status as the watch last saw it.
    pub current: Option<Value>,
}

/// Every status Sluice owes, for the objects the model holds as indexed.
pub fn desired(model: &Model, objects: &StatusObjects) -> Vec<Desired> {
    let view = gateway_view(model);
    let mut out = Vec::new();
    let mut push = |target, key: &ObjectKey, mut status: Value, tracked: &Tracked| {
        observe(&mut status, tracked.generation);
        out.push(Desired { target, key: key.clone(), status, current: tracked.status.clone() });
    };
    for (key, (class, tracked)) in &objects.classes {
        let Some(conditions) = view.classes.get(key).filter(|_| model.gateway_classes.get(key) == Some(class)) else {
            continue;
        };
        push(Target::GatewayClass, key, json!({ "conditions": conditions }), tracked);
    }
    for (key, (gw, tracked)) in &objects.gateways {
        let Some(state) = view.gateways.get(key).filter(|_| model.api_gateways.get(key) == Some(gw)) else {
            continue;
        };
        push(Target::Gateway, key, gateway_status(model, objects, key, gw, state), tracked);
    }
    for (key, (route, tracked)) in &objects.routes {
        if model.http_routes.get(key) != Some(route) {
            continue;
        }
        let parents = http_route_status(model, key, route, &view);
        push(Target::HttpRoute, key, json!({ "parents": parents }), tracked);
    }
    out
}

/// A Gateway's status: the view's conditions and listeners, and the addresses of its Service; without an
/// address, `Programmed` is False with `AddressNotAssigned` (the proxies still get the listeners).
fn gateway_status(
    model: &Model,
    objects: &StatusObjects,
    key: &ObjectKey,
    gw: &ApiGateway,
    state: &GatewayState,
) -> Value {
    let mut conditions = state.status.conditions.clone();
    let addresses = match addresses(model, &objects.fronts, key, gw) {
        Ok(list) => {
            let list: Vec<Value> =
                list.into_iter().map(|(kind, value)| json!({"type": kind, "value": value})).collect();
            Value::Array(list)
        }
        Err(why) => {
            for c in conditions.iter_mut().filter(|c| c.kind == "Programmed" && c.status == "True") {
                let message = format!("{}; no address is assigned: {why}", c.message);
                *c = Condition { kind: "Programmed", status: "False", reason: "AddressNotAssigned", message };
            }
            Value::Null
        }
    };
    json!({ "conditions": conditions, "listeners": state.status.listeners, "addresses": addresses })
}

/// The Services that carry a Gateway's traffic: those its `Hostname` addresses name, else those of its namespace
/// labelled with its name (by name order). Their addresses, or why there are none.
pub fn addresses(
    model: &Model,
    fronts: &BTreeMap<ObjectKey, ServiceFront>,
    key: &ObjectKey,
    gw: &ApiGateway,
) -> Result<Vec<(&'static str, String)>, String> {
    let named: Vec<&str> =
        gw.spec.addresses.iter().filter(|a| a.kind.as_deref() == Some("Hostname")).map(|a| a.value.as_str()).collect();
    let services: Vec<ObjectKey> = if named.is_empty() {
        let label = |f: &ServiceFront| f.gateway.as_deref() == Some(gw.name.as_str());
        let found: Vec<ObjectKey> =
            fronts.iter().filter(|(k, f)| k.namespace == key.namespace && label(f)).map(|(k, _)| k.clone()).collect();
        if found.is_empty() {
            return Err(format!(
                "no Service in namespace {} is labelled gateway.networking.k8s.io/gateway-name: {} (and no \
                 spec.addresses entry of type Hostname names one)",
                key.namespace, gw.name
            ));
        }
        found
    } else {
        let mut found = Vec::new();
        for host in named {
            let svc = crate::model::mesh::service_of_host(host, &key.namespace)
                .ok_or_else(|| format!("address {host} is not a Service name (NAME or NAME.NS.svc.cluster.local)"))?;
            if !model.services.contains_key(&svc) {
                return Err(format!("Service {svc} (address {host}) does not exist"));
            }
            found.push(svc);
        }
        found
    };
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for svc in &services {
        let ingress = fronts.get(svc).map(|f| f.ingress.clone()).unwrap_or_default();
        let cluster_ip = || model.services.get(svc).and_then(|s| s.cluster_ip).map(|ip| ("IPAddress", ip.to_string()));
        let found = if ingress.is_empty() { cluster_ip().into_iter().collect() } else { ingress };
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        let names: Vec<String> = services.iter().map(ToString::to_string).collect();
        return Err(format!("Service {} has neither a load balancer address nor a cluster IP", names.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "gateway_status_tests.rs"]
mod tests;
