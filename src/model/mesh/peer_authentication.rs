//! `security.istio.io` PeerAuthentication: which connections a workload's sidecar accepts, per port.
//!
//! ```text
//!  root namespace, no selector   (mesh-wide)   ─┐  each level that says something other than UNSET replaces the
//!  workload's namespace, no selector           ─┼─▶ one above; nothing at all: PERMISSIVE (istiod's default)
//!  workload's namespace, selector ⊆ its labels ─┘     └─ portLevelMtls[port] (UNSET: the workload's mode)
//! ```
//! Several objects at one level: the oldest applies ([`super::older`]), as istiod picks them.

use super::{Provenance, older};
use crate::model::{FieldError, Model, ObjectKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API versions of `security.istio.io` Sluice reads (one schema).
pub const SECURITY_VERSIONS: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerAuthentication {
    pub name: String,
    pub namespace: String,
    pub spec: PeerAuthenticationSpec,
    #[serde(default, skip_serializing_if = "super::is_unset")]
    pub provenance: Provenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// The workloads (of the object's namespace) it applies to; absent: the whole namespace (mesh-wide in the root
    /// namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per workload port (the port the workload listens on, not the Service's); only with a selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u32, PeerMtls>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

/// What a sidecar accepts on a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the level above (PERMISSIVE when nothing is above).
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// mTLS and plaintext on one port, told apart by the first bytes (`tls_inspector`).
    Permissive,
    /// mTLS only, with a client certificate from the mesh CA.
    Strict,
}

impl MtlsMode {
    fn set(self) -> Option<Self> {
        (self != Self::Unset).then_some(self)
    }
}

impl PeerAuthenticationSpec {
    /// Istio's own checks, each naming its field: a present selector must name labels, `portLevelMtls` needs a
    /// selector, ports are 1..65535. (An unknown mode fails to parse, naming the field.)
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.selector.as_ref().is_some_and(|s| s.match_labels.is_empty()) {
            let msg = "must name at least one label in matchLabels when present (leave the selector out to apply \
                       to the whole namespace)";
            out.push(FieldError::new("spec.selector", msg));
        }
        if !self.port_level_mtls.is_empty() && self.selector.is_none() {
            let msg = "needs spec.selector: Istio applies port-level mTLS only to the workloads a selector names";
            out.push(FieldError::new("spec.portLevelMtls", msg));
        }
        for port in self.port_level_mtls.keys().filter(|p| !(1..=65535).contains(*p)) {
            out.push(FieldError::new(format!("spec.portLevelMtls.{port}"), "port must be between 1 and 65535"));
        }
        out
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// The PeerAuthentications that apply to one workload, one per level (the oldest at each).
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerPolicies<'a> {
    pub mesh: Option<&'a PeerAuthenticationSpec>,
    pub namespace: Option<&'a PeerAuthenticationSpec>,
    pub workload: Option<&'a PeerAuthenticationSpec>,
}

impl PeerPolicies<'_> {
    /// The mode of the workload as a whole: the most specific level that sets one, else PERMISSIVE.
    pub fn workload_mode(&self) -> MtlsMode {
        let mode = |p: Option<&PeerAuthenticationSpec>| p.and_then(|p| p.mtls.as_ref()).and_then(|m| m.mode.set());
        mode(self.workload).or(mode(self.namespace)).or(mode(self.mesh)).unwrap_or(MtlsMode::Permissive)
    }

    /// The mode on one port the workload listens on: the workload policy's `portLevelMtls` for it (UNSET inherits),
    /// else [`Self::workload_mode`].
    pub fn port_mode(&self, port: u16) -> MtlsMode {
        let level = self.workload.and_then(|p| p.port_level_mtls.get(&u32::from(port))).and_then(|m| m.mode.set());
        level.unwrap_or_else(|| self.workload_mode())
    }
}

impl Model {
    /// The PeerAuthentications that apply to a workload of `namespace` carrying `labels`.
    pub fn peer_policies(&self, namespace: &str, labels: &BTreeMap<String, String>) -> PeerPolicies<'_> {
        let root = self.settings.root_namespace.as_str();
        let oldest = |keep: &dyn Fn(&ObjectKey, &PeerAuthentication) -> bool| {
            let mut found: Vec<(&ObjectKey, &PeerAuthentication)> =
                self.peer_authentications.iter().filter(|(k, p)| keep(k, p)).collect();
            found.sort_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)));
            found.first().map(|(_, p)| &p.spec)
        };
        PeerPolicies {
            mesh: oldest(&|k, p| k.namespace == root && p.spec.selector.is_none()),
            namespace: (namespace != root)
                .then(|| oldest(&|k, p| k.namespace == namespace && p.spec.selector.is_none()))
                .flatten(),
            workload: oldest(&|k, p| k.namespace == namespace && p.spec.selects(labels)),
        }
    }

    /// The mode for a namespace as a whole (its own PeerAuthentication without selector, else the mesh-wide one):
    /// what a client infers of a Service there, as istiod's `BestEffortInferServiceMTLSMode` does.
    pub fn namespace_mtls_mode(&self, namespace: &str) -> MtlsMode {
        PeerPolicies { workload: None, ..self.peer_policies(namespace, &BTreeMap::new()) }.workload_mode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pa(ns: &str, name: &str, seq: u64, spec: serde_json::Value) -> (ObjectKey, PeerAuthentication) {
        let spec = serde_json::from_value(spec).expect("spec");
        let provenance = Provenance { seq, ..Default::default() };
        let object = PeerAuthentication { name: name.into(), namespace: ns.into(), spec, provenance };
        (ObjectKey::new(ns, name), object)
    }

    fn model(objects: Vec<(ObjectKey, PeerAuthentication)>) -> Model {
        Model { peer_authentications: objects.into_iter().collect(), ..Default::default() }
    }

    #[test]
    fn the_most_specific_level_wins_and_nothing_means_permissive() {
        let reviews: BTreeMap<String, String> = [("app".to_string(), "reviews".to_string())].into();
        assert_eq!(Model::default().peer_policies("default", &reviews).port_mode(9080), MtlsMode::Permissive);
        let m = model(vec![
            pa("istio-system", "mesh", 0, json!({"mtls": {"mode": "STRICT"}})),
            pa("other", "ns", 1, json!({"mtls": {"mode": "DISABLE"}})),
            pa("default", "ns-unset", 2, json!({"mtls": {"mode": "UNSET"}})),
            pa(
                "default",
                "reviews",
                3,
                json!({"selector": {"matchLabels": {"app": "reviews"}},
                "mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"9080": {"mode": "DISABLE"}, "9090": {}}}),
            ),
        ]);
        let p = m.peer_policies("default", &reviews);
        assert_eq!(
            (p.port_mode(9080), p.port_mode(9090), p.port_mode(1)),
            (MtlsMode::Disable, MtlsMode::Permissive, MtlsMode::Permissive),
            "port-level beats workload-level; UNSET inherits"
        );
        assert_eq!(m.peer_policies("default", &BTreeMap::new()).port_mode(9080), MtlsMode::Strict, "UNSET: mesh");
        assert_eq!(m.peer_policies("other", &reviews).port_mode(9080), MtlsMode::Disable, "the selector is default's");
        assert_eq!(m.namespace_mtls_mode("default"), MtlsMode::Strict);
    }

    #[test]
    fn the_oldest_object_of_a_level_applies() {
        let m = model(vec![
            pa("default", "b-new", 1, json!({"mtls": {"mode": "DISABLE"}})),
            pa("default", "a-old", 0, json!({"mtls": {"mode": "STRICT"}})),
        ]);
        assert_eq!(m.namespace_mtls_mode("default"), MtlsMode::Strict);
    }

    #[test]
    fn validation_names_the_field() {
        let check = |spec: serde_json::Value| -> Vec<String> {
            let spec: PeerAuthenticationSpec = serde_json::from_value(spec).expect("spec");
            spec.validate().into_iter().map(|e| e.path).collect()
        };
        assert_eq!(check(json!({"selector": {}})), ["spec.selector"]);
        assert_eq!(check(json!({"portLevelMtls": {"80": {"mode": "STRICT"}}})), ["spec.portLevelMtls"]);
        let ports = json!({"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"0": {}, "70000": {}}});
        assert_eq!(check(ports), ["spec.portLevelMtls.0", "spec.portLevelMtls.70000"]);
        let bad = serde_json::from_value::<PeerAuthenticationSpec>(json!({"mtls": {"mode": "STRICTER"}}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant `STRICTER`"));
    }
}
