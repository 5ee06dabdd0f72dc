//! From typed objects to a [`Model`]: per-object checks, duplicates, selection of workloads by services, port
//! resolution, and the rules that tie a ReleasePolicy to its Service.
//!
//! ```text
//!  Services ──selector──▶ Workloads (same namespace, labels ⊇ selector; empty selector selects nothing)
//!      │                      └─▶ Endpoint { name, address, ports: service port → workload port, labels, ready }
//!      └──◀── ReleasePolicy.spec.service (same namespace; at most one policy per service)
//! ```

use super::documents::{Doc, Located, Object, Parsed};
use super::error::LoadError;
use super::objects::{
    ApiGatewayObject, DestinationRuleObject, GatewayClassObject, GatewayObject, HttpRouteObject, Kind,
    PeerAuthenticationObject, PolicyObject, Problem, ReferenceGrantObject, SecretObject, ServiceObject, SidecarObject,
    VirtualServiceObject, WorkloadObject, check_mesh, check_policy, check_service, check_workload,
};
use crate::model::mesh::{
    self, ApiGatewaySpec, DestinationRuleSpec, GatewayClassSpec, GatewaySpec, HttpRouteSpec, PeerAuthenticationSpec,
    ReferenceGrantSpec, SidecarSpec, VirtualServiceSpec,
};
use crate::model::{Endpoint, Model, ObjectKey, ReleasePolicy, Service, ServicePort, TargetPort};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A model and how many objects of each kind built it (for `sluice validate`).
#[derive(Debug, Default)]
pub(crate) struct Assembled {
    pub model: Model,
    pub services: usize,
    pub workloads: usize,
    pub policies: usize,
    /// VirtualServices, DestinationRules, HTTPRoutes, PeerAuthentications, Gateways and Sidecars.
    pub routing: usize,
    /// Fields written but not translated, as `file:line` problems; the model holds the rest of each object.
    pub warnings: Vec<LoadError>,
    /// Routing objects that lose (part of) what they ask for to an older one ([`mesh::conflicts`]), at the
    /// loser's field. `sluice validate` prints them; the server reports conflicts of the merged model itself.
    pub conflicts: Vec<LoadError>,
}

/// Objects of one kind by key, each with the document it came from.
type ByKey<T> = BTreeMap<ObjectKey, (Arc<Doc>, T)>;

/// Builds the model from everything parsed; `Err` holds every error, the parse errors first.
/// A workload a Service's selector may pick.
type Selectable<'a> = (&'a ObjectKey, &'a WorkloadObject);

pub(crate) fn assemble(parsed: Parsed) -> Result<Assembled, Vec<LoadError>> {
    let Parsed { objects, mut errors, mut warnings, broken_services, documents: _ } = parsed;
    let mut services: ByKey<ServiceObject> = BTreeMap::new();
    let mut workloads: ByKey<WorkloadObject> = BTreeMap::new();
    let mut policies: ByKey<PolicyObject> = BTreeMap::new();
    let mut routing = Routing::default();
    for Located { doc, object } in objects {
        match object {
            Object::Service(s) => add(&mut services, Kind::Service, doc, s, check_service, &mut errors),
            Object::Workload(w) => add(&mut workloads, Kind::Workload, doc, w, check_workload, &mut errors),
            Object::Policy(p) => add(&mut policies, Kind::ReleasePolicy, doc, *p, check_policy, &mut errors),
            Object::VirtualService(v) => add(&mut routing.vs, Kind::VirtualService, doc, v, check_vs, &mut errors),
            Object::DestinationRule(d) => add(&mut routing.dr, Kind::DestinationRule, doc, *d, check_dr, &mut errors),
            Object::HttpRoute(r) => add(&mut routing.routes, Kind::HttpRoute, doc, r, check_route, &mut errors),
            Object::PeerAuthentication(p) => {
                add(&mut routing.peers, Kind::PeerAuthentication, doc, p, check_peer, &mut errors)
            }
            Object::Gateway(g) => add(&mut routing.gateways, Kind::Gateway, doc, *g, check_gateway, &mut errors),
            Object::GatewayClass(c) => add(&mut routing.classes, Kind::GatewayClass, doc, c, check_class, &mut errors),
            Object::ApiGateway(g) => add(&mut routing.api, Kind::ApiGateway, doc, g, check_api_gateway, &mut errors),
            Object::ReferenceGrant(g) => {
                add(&mut routing.grants, Kind::ReferenceGrant, doc, g, check_grant, &mut errors)
            }
            Object::Secret(s) => add(&mut routing.secrets, Kind::Secret, doc, s, check_secret, &mut errors),
            Object::Sidecar(s) => add(&mut routing.sidecars, Kind::Sidecar, doc, s, check_sidecar, &mut errors),
        }
    }
    let mut model = Model::default();
    // Workloads by namespace and label: a Service looks only at those carrying its selector's first label (a scan
    // of every workload per Service grew with the square of the mesh).
    let mut labelled: HashMap<(&str, &str, &str), Vec<Selectable>> = HashMap::new();
    for (k, (_, w)) in &workloads {
        for (label, value) in &w.metadata.labels {
            labelled.entry((k.namespace.as_str(), label.as_str(), value.as_str())).or_default().push((k, w));
        }
    }
    for (key, (_, svc)) in &services {
        model.services.insert(key.clone(), to_service(svc));
        let candidates = svc
            .spec
            .selector
            .iter()
            .next()
            .and_then(|(label, value)| labelled.get(&(svc.metadata.namespace(), label.as_str(), value.as_str())));
        let endpoints = select_endpoints(svc, candidates.into_iter().flatten().copied());
        if !endpoints.is_empty() {
            model.endpoints.insert(key.clone(), endpoints);
        }
    }
    check_policy_targets(&policies, &services, &broken_services, &mut errors);
    for (key, (_, p)) in &policies {
        let policy = ReleasePolicy {
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            spec: p.spec.clone(),
            state: Default::default(),
        };
        model.policies.insert(key.clone(), policy);
    }
    let routing_count = routing.vs.len()
        + routing.dr.len()
        + routing.routes.len()
        + routing.peers.len()
        + routing.gateways.len()
        + routing.classes.len()
        + routing.api.len()
        + routing.grants.len()
        + routing.sidecars.len();
    let conflicts = routing.into_model(&mut model, &mut errors);
    for (key, (doc, p)) in &policies {
        let target = ObjectKey::new(key.namespace.clone(), p.spec.service.clone());
        let routed = model.virtual_service_for(&target).is_some() || model.http_routes_for(&target).next().is_some();
        if routed && p.spec.traffic.stickiness.is_some() {
            let msg = "not applied: the service is routed by a VirtualService or HTTPRoute, inside whose routes the \
                       policy splits without stickiness";
            warnings.push(doc.error(&format!("ReleasePolicy {key}"), "spec.traffic.stickiness", msg));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Assembled {
        model,
        services: services.len(),
        workloads: workloads.len(),
        policies: policies.len(),
        routing: routing_count,
        warnings,
        conflicts,
    })
}

fn check_vs(o: &VirtualServiceObject) -> Vec<Problem> {
    check_mesh(o, VirtualServiceSpec::validate)
}

fn check_dr(o: &DestinationRuleObject) -> Vec<Problem> {
    check_mesh(o, DestinationRuleSpec::validate)
}

fn check_route(o: &HttpRouteObject) -> Vec<Problem> {
    check_mesh(o, HttpRouteSpec::validate)
}

fn check_peer(o: &PeerAuthenticationObject) -> Vec<Problem> {
    check_mesh(o, PeerAuthenticationSpec::validate)
}

fn check_gateway(o: &GatewayObject) -> Vec<Problem> {
    check_mesh(o, GatewaySpec::validate)
}

fn check_class(o: &GatewayClassObject) -> Vec<Problem> {
    check_mesh(o, GatewayClassSpec::validate)
}

fn check_api_gateway(o: &ApiGatewayObject) -> Vec<Problem> {
    check_mesh(o, ApiGatewaySpec::validate)
}

fn check_grant(o: &ReferenceGrantObject) -> Vec<Problem> {
    check_mesh(o, ReferenceGrantSpec::validate)
}

fn check_sidecar(o: &SidecarObject) -> Vec<Problem> {
    check_mesh(o, SidecarSpec::validate)
}

fn check_secret(o: &SecretObject) -> Vec<Problem> {
    let mut problems = super::objects::check_metadata(&o.metadata);
    problems.extend(o.tls().err());
    problems
}

/// The mesh routing objects of a load, with the documents they came from.
#[derive(Default)]
struct Routing {
    vs: ByKey<VirtualServiceObject>,
    dr: ByKey<DestinationRuleObject>,
    routes: ByKey<HttpRouteObject>,
    peers: ByKey<PeerAuthenticationObject>,
    gateways: ByKey<GatewayObject>,
    classes: ByKey<GatewayClassObject>,
    api: ByKey<ApiGatewayObject>,
    grants: ByKey<ReferenceGrantObject>,
    secrets: ByKey<SecretObject>,
    sidecars: ByKey<SidecarObject>,
}

impl Routing {
    /// Puts the objects into the model, then checks what they name against it ([`mesh::check_references`]);
    /// returns the conflicts between them.
    fn into_model(self, model: &mut Model, errors: &mut Vec<LoadError>) -> Vec<LoadError> {
        let mut docs: BTreeMap<(&'static str, ObjectKey), Arc<Doc>> = BTreeMap::new();
        for (key, (doc, o)) in self.vs {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            docs.insert(("VirtualService", key.clone()), doc);
            let vs = mesh::VirtualService { name, namespace, spec: o.spec, provenance };
            model.virtual_services.insert(key, vs);
        }
        for (key, (doc, o)) in self.dr {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            docs.insert(("DestinationRule", key.clone()), doc);
            let dr = mesh::DestinationRule { name, namespace, spec: o.spec, provenance };
            model.destination_rules.insert(key, dr);
        }
        for (key, (doc, o)) in self.routes {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            docs.insert(("HTTPRoute", key.clone()), doc);
            let r = mesh::HttpRouteObject { name, namespace, spec: o.spec, provenance };
            model.http_routes.insert(key, r);
        }
        for (key, (doc, o)) in self.peers {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            let p = mesh::PeerAuthentication { name, namespace, spec: o.spec, provenance };
            model.peer_authentications.insert(key, p);
        }
        for (key, (_, o)) in self.gateways {
            let g = mesh::Gateway { name: key.name.clone(), namespace: key.namespace.clone(), spec: o.spec };
            model.gateways.insert(key, g);
        }
        for (key, (_, o)) in self.classes {
            let c = mesh::GatewayClass { name: key.name.clone(), spec: o.spec };
            model.gateway_classes.insert(ObjectKey::new("", key.name), c);
        }
        for (key, (doc, o)) in self.api {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            model.api_gateways.insert(key, mesh::ApiGateway { name, namespace, spec: o.spec, provenance });
        }
        for (key, (_, o)) in self.grants {
            let (name, namespace) = (key.name.clone(), key.namespace.clone());
            model.reference_grants.insert(key, mesh::ReferenceGrant { name, namespace, spec: o.spec });
        }
        for (key, (doc, o)) in self.sidecars {
            let (name, namespace, provenance) = (key.name.clone(), key.namespace.clone(), doc.provenance());
            docs.insert(("Sidecar", key.clone()), doc);
            model.sidecars.insert(key, mesh::Sidecar { name, namespace, spec: o.spec, provenance });
        }
        for (key, (_, o)) in self.secrets {
            if let Ok(secret) = o.tls() {
                model.secrets.insert(key, secret);
            }
        }
        for p in mesh::check_references(model) {
            if let Some(doc) = docs.get(&(p.kind, p.key.clone())) {
                errors.push(doc.error(&format!("{} {}", p.kind, p.key), &p.error.path, p.error.message));
            }
        }
        let conflicts = mesh::conflicts(model).into_iter();
        conflicts
            .filter_map(|c| {
                let doc = docs.get(&(c.kind, c.loser.0.clone()))?;
                Some(doc.error(&format!("{} {}", c.kind, c.loser.0), &c.field, c.message()))
            })
            .collect()
    }
}

/// Checks one object and files it under its key; a second object with the same key is an error.
fn add<T>(
    into: &mut ByKey<T>,
    kind: Kind,
    doc: Arc<Doc>,
    object: T,
    check: fn(&T) -> Vec<Problem>,
    errors: &mut Vec<LoadError>,
) where
    T: HasMetadata,
{
    let key = object.key();
    let kind = kind.name();
    let label = format!("{kind} {key}");
    for (field, message) in check(&object) {
        errors.push(doc.error(&label, &field, message));
    }
    match into.get(&key) {
        Some((first, _)) => {
            let msg = format!("duplicate {kind} {key}; first defined at {}", first.name_at());
            errors.push(doc.error(&label, "metadata.name", msg));
        }
        None => {
            into.insert(key, (doc, object));
        }
    }
}

/// The objects whose metadata names them.
pub(crate) trait HasMetadata {
    fn key(&self) -> ObjectKey;
}

impl<S> HasMetadata for super::objects::Envelope<S> {
    fn key(&self) -> ObjectKey {
        self.metadata.key()
    }
}

impl HasMetadata for SecretObject {
    fn key(&self) -> ObjectKey {
        self.metadata.key()
    }
}

fn to_service(svc: &ServiceObject) -> Service {
    let ports = svc
        .spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port: p.target_port.clone().unwrap_or(TargetPort::Number(p.port)),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    Service {
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace().to_string(),
        ports,
        selector: svc.spec.selector.clone(),
        cluster_ip: svc.spec.cluster_ip(),
    }
}

/// The endpoints of a service: its namespace's workloads whose labels hold its whole (non-empty) selector, in
/// name order. A workload that resolves none of the service's ports is left out.
fn select_endpoints<'a>(
    svc: &ServiceObject,
    workloads: impl Iterator<Item = (&'a ObjectKey, &'a WorkloadObject)>,
) -> Vec<Endpoint> {
    let selector = &svc.spec.selector;
    if selector.is_empty() {
        return Vec::new();
    }
    workloads
        .filter(|(key, _)| key.namespace == svc.metadata.namespace())
        .filter(|(_, w)| selector.iter().all(|(k, v)| w.metadata.labels.get(k) == Some(v)))
        .filter_map(|(_, w)| {
            let ports: BTreeMap<u16, u16> =
                svc.spec.ports.iter().filter_map(|p| resolve_port(p, w).map(|to| (p.port, to))).collect();
            (!ports.is_empty()).then(|| Endpoint {
                name: w.metadata.name.clone(),
                address: w.spec.address.clone(),
                ports,
                labels: w.metadata.labels.clone(),
                ready: w.spec.ready,
                terminating: w.spec.terminating,
                service_account: w.spec.service_account.clone(),
            })
        })
        .collect()
}

/// The port a workload serves a service port on: its own `spec.ports[port name]`, else a numeric `targetPort`
/// (default: the service port), else its `spec.ports[targetPort name]`; `None` when nothing resolves.
fn resolve_port(port: &super::objects::ServicePortSpec, w: &WorkloadObject) -> Option<u16> {
    if let Some(p) = (!port.name.is_empty()).then(|| w.spec.ports.get(&port.name)).flatten() {
        return Some(*p);
    }
    match &port.target_port {
        None => Some(port.port),
        Some(TargetPort::Number(n)) => Some(*n),
        Some(TargetPort::Name(name)) => w.spec.ports.get(name).copied(),
    }
}

/// Each policy must name a Service of its namespace, and no Service may have two policies.
fn check_policy_targets(
    policies: &ByKey<PolicyObject>,
    services: &ByKey<ServiceObject>,
    broken_services: &std::collections::BTreeSet<ObjectKey>,
    errors: &mut Vec<LoadError>,
) {
    let mut owner: BTreeMap<ObjectKey, &ObjectKey> = BTreeMap::new();
    for (key, (doc, p)) in policies {
        let label = format!("ReleasePolicy {key}");
        let target = ObjectKey::new(key.namespace.clone(), p.spec.service.clone());
        if !services.contains_key(&target) && !broken_services.contains(&target) {
            let msg = format!("no Service `{}` in namespace `{}`", target.name, target.namespace);
            errors.push(doc.error(&label, "spec.service", msg));
        }
        if let Some(first) = owner.get(&target) {
            let msg = format!("Service {target} already has ReleasePolicy {first}; one policy per service");
            errors.push(doc.error(&label, "spec.service", msg));
        } else {
            owner.insert(target, key);
        }
    }
}
