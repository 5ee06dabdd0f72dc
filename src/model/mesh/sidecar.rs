//! Istio `Sidecar` (`networking.istio.io/v1`, `v1beta1`, `v1alpha3`): which services a sidecar is given
//! (`egress[].hosts`) and where calls to hosts outside the mesh go (`outboundTrafficPolicy`).
//!
//! ```text
//!  Sidecar { workloadSelector?, egress[].hosts ["ns/dnsName"], outboundTrafficPolicy.mode }
//!     │ which one applies to a proxy: sidecar_scope::Model::sidecar_for (istiod's order)
//!     ▼
//!  Visibility::Egress (sidecar_scope) ─▶ the proxy's clusters, assignments, routes, listeners (xds::snapshot)
//! ```
//! Translated: `workloadSelector.labels`, `egress[].hosts`, `outboundTrafficPolicy.mode`. Written but not
//! translated (reported as warnings, the rest of the object applies): `egress[].port`, `egress[].bind`,
//! `egress[].captureMode` (every egress listener's hosts apply on every port), `ingress`,
//! `outboundTrafficPolicy.egressProxy`, `inboundConnectionPool`.

use super::{Provenance, older};
use crate::model::{FieldError, Model, ObjectKey, is_dns_label};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    pub name: String,
    pub namespace: String,
    pub spec: SidecarSpec,
    #[serde(default, skip_serializing_if = "super::is_unset")]
    pub provenance: Provenance,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// The workloads (of the Sidecar's namespace) it applies to; absent: every workload of the namespace without a
    /// Sidecar of its own (in the root namespace: of every such namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<SidecarSelector>,
    /// What the proxy may call; empty: `*/*` (everything), as istiod reads it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// Istio's Sidecar selector: `labels` (not `matchLabels`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `egress` entry. Only `hosts` is translated (see the module header).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressListener {
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
}

/// Where an intercepting sidecar sends a call to a host the mesh does not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Where it was going (`PassthroughCluster`, route `allow_any`): istiod's default.
    #[default]
    AllowAny,
    /// Nowhere: HTTP answers 502 (route `block_all`), TCP goes to `BlackHoleCluster`.
    RegistryOnly,
}

impl SidecarSpec {
    /// Istio's own checks, each naming its field: a present selector names labels, each egress entry names hosts,
    /// each host is `namespace/dnsName`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.workload_selector.as_ref().is_some_and(|s| s.labels.is_empty()) {
            let msg = "must name at least one label when present (leave workloadSelector out to apply to the whole \
                       namespace)";
            out.push(FieldError::new("spec.workloadSelector.labels", msg));
        }
        for (i, e) in self.egress.iter().enumerate() {
            if e.hosts.is_empty() {
                out.push(FieldError::new(format!("spec.egress[{i}].hosts"), "must list at least one host"));
            }
            for (j, host) in e.hosts.iter().enumerate() {
                if let Err(message) = check_host(host) {
                    out.push(FieldError::new(format!("spec.egress[{i}].hosts[{j}]"), message));
                }
            }
        }
        out
    }

    /// Whether the selector (present) picks a workload with `labels`.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.workload_selector.as_ref().is_some_and(|s| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    pub fn mode(&self) -> OutboundMode {
        self.outbound_traffic_policy.as_ref().map(|p| p.mode).unwrap_or_default()
    }
}

/// `namespace/dnsName`, as istiod accepts it in a Sidecar: namespace `*`, `.`, `~` or a DNS label; dnsName `*`,
/// `*.suffix` or a name with at least one dot (short names are refused: Istio matches the FQDN).
pub fn check_host(host: &str) -> Result<(), String> {
    let Some((ns, name)) = host.split_once('/').filter(|(_, n)| !n.contains('/')) else {
        return Err(format!(
            "`{host}` must be of the form namespace/dnsName (`./*`, `ns/*`, `*/name.ns.svc.cluster.local`)"
        ));
    };
    if !matches!(ns, "*" | "." | "~") && !is_dns_label(ns) {
        return Err(format!("namespace `{ns}` must be `*`, `.`, `~` or a DNS label"));
    }
    if name == "*" {
        return Ok(());
    }
    let labels = name.strip_prefix("*.").unwrap_or(name);
    if !name.starts_with("*.") && !name.contains('.') {
        return Err(format!(
            "`{name}` is a short name; write the FQDN (`{name}.NAMESPACE.svc.cluster.local`), `*.suffix` or `*`"
        ));
    }
    match labels.split('.').all(|l| is_dns_label(&l.to_ascii_lowercase())) && labels.len() <= 253 {
        true => Ok(()),
        false => Err(format!("`{name}` is not `*`, `*.suffix` or a DNS name")),
    }
}

/// The message of a Sidecar field that is written but not translated, when it says more than "ignored".
pub(super) fn untranslated_message(path: &str) -> Option<&'static str> {
    let egress = path.contains(".egress[");
    if egress && (path.ends_with(".port") || path.ends_with(".bind") || path.ends_with(".captureMode")) {
        return Some(
            "not supported by Sluice; ignored: this entry's hosts apply on every port, at the usual listeners",
        );
    }
    path.ends_with("spec.ingress").then_some(
        "not supported by Sluice; ignored: inbound listeners come from the proxy's inbound ports and PeerAuthentications",
    )
}

/// Every Sidecar without a selector that is not the oldest of its namespace (istiod applies one per namespace).
pub(super) fn sidecar_conflicts(model: &Model, out: &mut Vec<super::Conflict>) {
    let mut by_namespace: BTreeMap<&str, Vec<(&ObjectKey, &Sidecar)>> = BTreeMap::new();
    for (key, s) in model.sidecars.iter().filter(|(_, s)| s.spec.workload_selector.is_none()) {
        by_namespace.entry(key.namespace.as_str()).or_default().push((key, s));
    }
    for (ns, mut group) in by_namespace.into_iter().filter(|(_, g)| g.len() > 1) {
        group.sort_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)));
        let (wk, wv) = group[0];
        for (lk, lv) in &group[1..] {
            out.push(super::Conflict {
                kind: "Sidecar",
                service: ObjectKey::new(ns, ""),
                winner: (wk.clone(), wv.provenance.clone()),
                loser: ((*lk).clone(), lv.provenance.clone()),
                field: "metadata.name".into(),
                lost: super::Lost::Namespace,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> SidecarSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn hosts_are_namespace_slash_dns_name() {
        for ok in ["./*", "*/*", "~/*", "default/*", "prod/reviews.prod.svc.cluster.local", "*/*.example.com"] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in ["reviews", "a/b/c", "Default/*", "./reviews", "./", "/x.y", "./*.", "./a..b", "./*x.com", "ns_1/*"]
        {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_field_path() {
        let s = spec(json!({"workloadSelector": {"labels": {}},
            "egress": [{"hosts": ["./*", "reviews"]}, {"hosts": []}]}));
        let paths: Vec<String> = s.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["spec.workloadSelector.labels", "spec.egress[0].hosts[1]", "spec.egress[1].hosts"]);
        let bad = serde_json::from_value::<SidecarSpec>(json!({"outboundTrafficPolicy": {"mode": "DENY"}}));
        assert!(bad.unwrap_err().to_string().contains("unknown variant `DENY`"));
        assert_eq!(spec(json!({})).mode(), OutboundMode::AllowAny, "istiod's default");
        assert_eq!(
            spec(json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})).mode(),
            OutboundMode::RegistryOnly
        );
    }

    #[test]
    fn untranslated_fields_are_reported_with_what_becomes_of_them() {
        let raw = json!({"egress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "bind": "127.0.0.1",
            "captureMode": "NONE", "hosts": ["./*"]}], "ingress": [{"port": {"number": 9080}, "defaultEndpoint":
            "127.0.0.1:8080"}], "outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "x.com"}}});
        let typed: SidecarSpec = serde_json::from_value(raw.clone()).expect("spec");
        let found = super::super::untranslated("Sidecar", "spec", &raw, &typed);
        let paths: Vec<&str> = found.iter().map(|u| u.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.egress[0].bind",
                "spec.egress[0].captureMode",
                "spec.egress[0].port",
                "spec.ingress",
                "spec.outboundTrafficPolicy.egressProxy"
            ]
        );
        assert!(found.iter().all(|u| !u.refused));
        assert!(found[2].message.contains("every port"), "{}", found[2].message);
    }
}
