//! Test-only: config-file YAML (Kubernetes-shaped `v1 Service`, `sluice.dev/v1alpha1 Workload` and
//! `ReleasePolicy` documents) → `Model`, and `proxy.yaml` → `ProxyInfo`.
//!
//! A stand-in for `sluice::source::file::parse_str` until that loader lands on this branch; swap it in by
//! replacing `load_model`. Selection: a Service selects the Workloads of its namespace whose labels contain its
//! selector; a workload's port for a service port is `spec.ports[port name]`, else the numeric `targetPort`
//! (else the port itself). `spec.terminating: true` marks a draining workload.

use serde::Deserialize;
use sluice::model::{
    Endpoint, InterceptionMode, Model, ObjectKey, Phase, ProxyInfo, ReleasePolicy, ReleasePolicySpec, ReleaseState,
    Service, ServicePort, TargetPort,
};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortDoc {
    #[serde(default)]
    name: String,
    port: u16,
    target_port: Option<TargetPort>,
    app_protocol: Option<String>,
}

#[derive(Deserialize)]
struct ServiceSpec {
    #[serde(default)]
    ports: Vec<PortDoc>,
    #[serde(default)]
    selector: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WorkloadSpec {
    address: String,
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default = "yes")]
    ready: bool,
    #[serde(default)]
    terminating: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct StatusDoc {
    phase: Option<Phase>,
    #[serde(default)]
    weights: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(tag = "kind")]
enum Doc {
    Service { metadata: Meta, spec: ServiceSpec },
    Workload { metadata: Meta, spec: WorkloadSpec },
    ReleasePolicy { metadata: Meta, spec: Box<ReleasePolicySpec>, status: Option<StatusDoc> },
}

pub fn load_model(text: &str) -> Model {
    let mut model = Model::default();
    let mut workloads = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).expect("YAML document");
        let mut value = value;
        if let serde_yaml::Value::Mapping(m) = &mut value {
            m.remove("apiVersion");
        }
        match serde_yaml::from_value::<Doc>(value).expect("a Service, Workload or ReleasePolicy") {
            Doc::Service { metadata, spec } => add_service(&mut model, metadata, spec),
            Doc::Workload { metadata, spec } => workloads.push((metadata, spec)),
            Doc::ReleasePolicy { metadata, spec, status } => add_policy(&mut model, metadata, *spec, status),
        }
    }
    let keys: Vec<ObjectKey> = model.services.keys().cloned().collect();
    for key in keys {
        let svc = &model.services[&key];
        let eps: Vec<Endpoint> = workloads
            .iter()
            .filter(|(m, _)| {
                m.namespace == key.namespace && svc.selector.iter().all(|(k, v)| m.labels.get(k) == Some(v))
            })
            .map(|(m, s)| endpoint(svc, m, s))
            .collect();
        model.endpoints.insert(key, eps);
    }
    model
}

fn add_service(model: &mut Model, meta: Meta, spec: ServiceSpec) {
    let ports = spec
        .ports
        .into_iter()
        .map(|p| ServicePort {
            target_port: p.target_port.unwrap_or(TargetPort::Number(p.port)),
            name: p.name,
            port: p.port,
            app_protocol: p.app_protocol,
        })
        .collect();
    let svc = Service { name: meta.name.clone(), namespace: meta.namespace.clone(), ports, selector: spec.selector };
    model.services.insert(ObjectKey::new(meta.namespace, meta.name), svc);
}

fn add_policy(model: &mut Model, meta: Meta, spec: ReleasePolicySpec, status: Option<StatusDoc>) {
    spec.validate().expect("valid policy");
    let status = status.unwrap_or_default();
    let state = ReleaseState {
        phase: status.phase.unwrap_or_default(),
        canary_weight: status.weights.get(&spec.canary).copied(),
        step: 0,
    };
    let policy = ReleasePolicy { name: meta.name.clone(), namespace: meta.namespace.clone(), spec, state };
    model.policies.insert(ObjectKey::new(meta.namespace, meta.name), policy);
}

fn endpoint(svc: &Service, meta: &Meta, spec: &WorkloadSpec) -> Endpoint {
    let ports = svc
        .ports
        .iter()
        .filter_map(|p| {
            let target = match (spec.ports.get(&p.name), &p.target_port) {
                (Some(n), _) => *n,
                (None, TargetPort::Number(n)) => *n,
                (None, TargetPort::Name(name)) => *spec.ports.get(name)?,
            };
            Some((p.port, target))
        })
        .collect();
    Endpoint {
        name: meta.name.clone(),
        address: spec.address.clone(),
        ports,
        labels: meta.labels.clone(),
        ready: spec.ready,
        terminating: spec.terminating,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProxyDoc {
    id: String,
    namespace: String,
    mode: String,
    listen: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    inbound_ports: Vec<u16>,
}

pub fn load_proxy(text: &str) -> ProxyInfo {
    let doc: ProxyDoc = serde_yaml::from_str(text).expect("proxy.yaml");
    let mode = match doc.mode.as_str() {
        "listen" => InterceptionMode::Listen(doc.listen.expect("listen address").parse().expect("ip:port")),
        "intercept" => InterceptionMode::Intercept,
        "proxyless" => InterceptionMode::Proxyless,
        other => panic!("unknown mode {other}"),
    };
    ProxyInfo { id: doc.id, namespace: doc.namespace, mode, labels: doc.labels, inbound_ports: doc.inbound_ports }
}
