//! Test-only: a golden case's `model.yaml` → `Model` through the real config-file loader, and `proxy.yaml` →
//! `ProxyInfo`.
//!
//! Config files carry no release state (`status` is ignored when loading), so for the promoted and finalized cases
//! the `status` of each ReleasePolicy document (`phase`, `weights`) is laid over the loaded policy here, as the
//! release controller would set it.

use serde::Deserialize;
use sluice::model::{InterceptionMode, Model, ObjectKey, Phase, ProxyInfo};
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default = "default_namespace")]
    namespace: String,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Deserialize, Default)]
struct StatusDoc {
    phase: Option<Phase>,
    #[serde(default)]
    weights: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
struct PolicyDoc {
    kind: String,
    metadata: Option<Meta>,
    status: Option<StatusDoc>,
}

pub fn load_model(text: &str) -> Model {
    let mut model = sluice::source::parse_str(text, "model.yaml").unwrap_or_else(|e| panic!("model.yaml:\n{e}"));
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(doc) = PolicyDoc::deserialize(doc) else { continue };
        let (Some(meta), Some(status)) = (doc.metadata, doc.status) else { continue };
        if doc.kind != "ReleasePolicy" {
            continue;
        }
        let policy = model.policies.get_mut(&ObjectKey::new(meta.namespace, meta.name)).expect("policy loaded");
        policy.state.phase = status.phase.unwrap_or_default();
        policy.state.canary_weight = status.weights.get(&policy.spec.canary).copied();
    }
    model
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
    /// The node metadata `SLUICE_MTLS: "true"`: the proxy's agent serves SDS.
    #[serde(default)]
    mtls: bool,
    /// Gateway mode: the Gateway it names (`ns/name`; none: selected by labels) and its bind address.
    gateway: Option<String>,
    bind: Option<String>,
}

pub fn load_proxy(text: &str) -> ProxyInfo {
    let doc: ProxyDoc = serde_yaml::from_str(text).expect("proxy.yaml");
    let mode = match doc.mode.as_str() {
        "listen" => InterceptionMode::Listen(doc.listen.expect("listen address").parse().expect("ip:port")),
        "intercept" => InterceptionMode::Intercept,
        "proxyless" => InterceptionMode::Proxyless,
        "gateway" => InterceptionMode::Gateway(sluice::model::GatewayRole {
            named: doc.gateway.as_deref().map(|g| {
                let (ns, name) = g.split_once('/').expect("gateway: ns/name");
                ObjectKey::new(ns, name)
            }),
            bind: doc.bind.as_deref().unwrap_or("0.0.0.0").parse().expect("bind: an IP"),
        }),
        other => panic!("unknown mode {other}"),
    };
    ProxyInfo {
        id: doc.id,
        namespace: doc.namespace,
        mode,
        labels: doc.labels,
        inbound_ports: doc.inbound_ports,
        visibility: Default::default(),
        mtls: doc.mtls,
        vhds: false,
    }
}
