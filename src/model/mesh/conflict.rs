//! Two routing objects that claim one Service: which one applies (istiod's rule for sidecars), and what the
//! other loses. Both sources decide the same way, and nothing here refuses a config: a conflict is reported
//! (`sluice validate` warnings, a log line per new conflict, `sluice_config_conflicts{kind}`), never fatal.
//!
//! ```text
//!  VirtualServices naming one Service ─ oldest first ─▶ the first applies; the others are not applied to it
//!  DestinationRules for one Service   ─ oldest first ─▶ merged: the first trafficPolicy, subsets by name (first wins)
//! ```
//! "Oldest" is [`Provenance::age`]: in a cluster the `creationTimestamp`, in files the load order (the `--config`
//! paths in order, a directory's files by name, documents top to bottom); file objects come before cluster ones;
//! ties go by name, then namespace, as istiod sorts them.

use super::{DestinationRule, Subset, TrafficPolicy, VirtualService};
use crate::model::{Model, ObjectKey};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Where a routing object came from and how old it is: what decides between two that claim one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Provenance {
    /// `metadata.creationTimestamp`, seconds since the epoch (cluster objects); `None` for file objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
    /// Position in the file source's load order.
    #[serde(default)]
    pub seq: u64,
    /// Where a user finds it: `file:line`, or `cluster`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
}

impl Provenance {
    /// The age order: file objects (in load order) before cluster objects (oldest first).
    pub fn age(&self) -> (bool, i64, u64) {
        (self.created.is_some(), self.created.unwrap_or(0), self.seq)
    }

    /// `key` and where it is: `default/reviews (a.yaml:3)`.
    pub fn describe(&self, key: &ObjectKey) -> String {
        if self.at.is_empty() { key.to_string() } else { format!("{key} ({})", self.at) }
    }
}

/// Orders two objects by age, then name, then namespace (istiod's `configCompareByCreationTime`).
pub fn older(a: (&ObjectKey, &Provenance), b: (&ObjectKey, &Provenance)) -> Ordering {
    a.1.age().cmp(&b.1.age()).then_with(|| a.0.name.cmp(&b.0.name)).then_with(|| a.0.namespace.cmp(&b.0.namespace))
}

/// The DestinationRules for one Service, merged as istiod merges them: the oldest rule's `trafficPolicy` (a
/// younger one's only when no older rule has one), and every subset by name, the oldest definition of a name
/// winning.
#[derive(Clone, Debug, Default)]
pub struct EffectiveRule<'a> {
    /// Oldest first.
    pub rules: Vec<(&'a ObjectKey, &'a DestinationRule)>,
}

impl<'a> EffectiveRule<'a> {
    pub fn traffic_policy(&self) -> Option<&'a TrafficPolicy> {
        self.rules.iter().find_map(|(_, r)| r.spec.traffic_policy.as_ref())
    }

    /// Every subset, the oldest definition of each name, in the order they were written.
    pub fn subsets(&self) -> Vec<&'a Subset> {
        let mut seen = std::collections::BTreeSet::new();
        self.rules.iter().flat_map(|(_, r)| &r.spec.subsets).filter(|s| seen.insert(s.name.as_str())).collect()
    }

    pub fn subset(&self, name: &str) -> Option<&'a Subset> {
        self.rules.iter().flat_map(|(_, r)| &r.spec.subsets).find(|s| s.name == name)
    }
}

impl Model {
    /// Every DestinationRule whose host names `svc`, oldest first; `None` when there is none.
    pub fn destination_rule_for<'a>(&'a self, svc: &ObjectKey) -> Option<EffectiveRule<'a>> {
        let keys = self.by_service().destination_rules_of.get(svc).cloned().unwrap_or_default();
        let mut rules: Vec<_> = keys.iter().filter_map(|k| self.destination_rules.get_key_value(k)).collect();
        rules.sort_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)));
        (!rules.is_empty()).then_some(EffectiveRule { rules })
    }

    /// The VirtualService that routes a service for sidecars: the oldest of those that apply to the mesh and
    /// name the service in `hosts` (istiod applies one per host; the others are reported by [`conflicts`]).
    pub fn virtual_service_for<'a>(&'a self, svc: &'a ObjectKey) -> Option<(&'a ObjectKey, &'a VirtualService)> {
        self.virtual_services_for(svc).min_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)))
    }
}

/// One object that loses (part of) what it asks for to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `VirtualService`, `DestinationRule` or `Sidecar`.
    pub kind: &'static str,
    pub service: ObjectKey,
    pub winner: (ObjectKey, Provenance),
    pub loser: (ObjectKey, Provenance),
    /// The loser's field that is not applied (`spec.hosts[0]`, `spec.trafficPolicy`, `spec.subsets[1]`).
    pub field: String,
    pub lost: Lost,
}

/// What the loser of a conflict loses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// A VirtualService: all of it, for that Service.
    Routes,
    /// A DestinationRule's `trafficPolicy` (an older rule for the Service has one).
    TrafficPolicy,
    /// A DestinationRule's subset of this name (an older rule defines it).
    Subset(String),
    /// A Sidecar without a selector: all of it, for its namespace (`service` names the namespace only).
    Namespace,
}

const RULE: &str = "istiod's rule: the oldest object wins; in files, the first loaded";
const MERGE: &str = "DestinationRules for one Service merge as in istiod: the oldest trafficPolicy, each subset name                      from the oldest rule defining it; in files, the first loaded is the oldest";

impl Conflict {
    /// The warning a user reads: both objects and where they are, and which one applies.
    pub fn message(&self) -> String {
        let (kind, svc) = (self.kind, &self.service);
        let loser = format!("{kind} {}", self.loser.1.describe(&self.loser.0));
        let winner = format!("{kind} {}", self.winner.1.describe(&self.winner.0));
        match &self.lost {
            Lost::Routes => {
                format!("{loser} is not applied to Service {svc}: {winner} routes it and is older ({RULE})")
            }
            Lost::TrafficPolicy => {
                format!(
                    "the trafficPolicy of {loser} is not applied to Service {svc}: {winner} is older and has one ({MERGE})"
                )
            }
            Lost::Namespace => format!(
                "{loser} is not applied: {winner} is older and also has no workloadSelector (istiod applies one \
                 Sidecar without selector per namespace; {RULE})"
            ),
            Lost::Subset(name) => format!(
                "subset `{name}` of {loser} is not applied to Service {svc}: {winner} is older and defines it ({MERGE})"
            ),
        }
    }
}

/// Every conflict in the model, by kind, service and loser.
pub fn conflicts(model: &Model) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut claims: BTreeMap<ObjectKey, Vec<(&ObjectKey, &VirtualService, usize)>> = BTreeMap::new();
    for (key, vs) in model.virtual_services.iter().filter(|(_, vs)| vs.spec.applies_to_mesh()) {
        for (i, host) in vs.spec.hosts.iter().enumerate() {
            if let Some(svc) = super::service_of_host(host, &key.namespace).filter(|s| model.services.contains_key(s)) {
                claims.entry(svc).or_default().push((key, vs, i));
            }
        }
    }
    for (svc, mut claimants) in claims {
        claimants.sort_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)));
        claimants.dedup_by(|a, b| a.0 == b.0);
        let Some(((wk, wv, _), rest)) = claimants.split_first() else { continue };
        for (lk, lv, i) in rest {
            out.push(Conflict {
                kind: "VirtualService",
                service: svc.clone(),
                winner: ((*wk).clone(), wv.provenance.clone()),
                loser: ((*lk).clone(), lv.provenance.clone()),
                field: format!("spec.hosts[{i}]"),
                lost: Lost::Routes,
            });
        }
    }
    // One pass over the rules (not one scan per Service: a mesh may hold thousands of each).
    let mut rules: BTreeMap<ObjectKey, Vec<(&ObjectKey, &DestinationRule)>> = BTreeMap::new();
    for (key, dr) in &model.destination_rules {
        if let Some(svc) = super::service_of_host(&dr.spec.host, &key.namespace) {
            rules.entry(svc).or_default().push((key, dr));
        }
    }
    for (svc, mut group) in rules.into_iter().filter(|(_, g)| g.len() > 1) {
        group.sort_by(|a, b| older((a.0, &a.1.provenance), (b.0, &b.1.provenance)));
        rule_conflicts(&svc, &EffectiveRule { rules: group }, &mut out);
    }
    super::sidecar::sidecar_conflicts(model, &mut out);
    out
}

/// What a merge of DestinationRules drops: a younger rule's `trafficPolicy` when an older one has one, and a
/// younger definition of a subset name.
fn rule_conflicts(svc: &ObjectKey, rule: &EffectiveRule<'_>, out: &mut Vec<Conflict>) {
    let conflict =
        |winner: (&ObjectKey, &DestinationRule), loser: (&ObjectKey, &DestinationRule), field, lost| Conflict {
            kind: "DestinationRule",
            service: svc.clone(),
            winner: (winner.0.clone(), winner.1.provenance.clone()),
            loser: (loser.0.clone(), loser.1.provenance.clone()),
            field,
            lost,
        };
    let policy_owner = rule.rules.iter().find(|(_, r)| r.spec.traffic_policy.is_some());
    let mut subset_owner: BTreeMap<&str, (&ObjectKey, &DestinationRule)> = BTreeMap::new();
    for (key, dr) in &rule.rules {
        if let Some(owner) = policy_owner.filter(|(k, _)| k != key)
            && dr.spec.traffic_policy.is_some()
        {
            out.push(conflict(*owner, (key, dr), "spec.trafficPolicy".into(), Lost::TrafficPolicy));
        }
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            match subset_owner.get(s.name.as_str()) {
                Some(owner) if owner.0 != *key => {
                    let lost = Lost::Subset(s.name.clone());
                    out.push(conflict(*owner, (key, dr), format!("spec.subsets[{i}]"), lost));
                }
                Some(_) => {}
                None => {
                    subset_owner.insert(&s.name, (key, dr));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Service;
    use serde_json::json;

    fn vs(name: &str, created: Option<i64>, seq: u64) -> (ObjectKey, VirtualService) {
        let spec = serde_json::from_value(json!({"hosts": ["reviews"], "http": [{"route": [{"destination":
            {"host": "reviews"}}]}]}))
        .expect("spec");
        let provenance = Provenance { created, seq, at: format!("{name}.yaml:1") };
        (
            ObjectKey::new("default", name),
            VirtualService { name: name.into(), namespace: "default".into(), spec, provenance },
        )
    }

    fn model(objects: Vec<(ObjectKey, VirtualService)>) -> Model {
        let mut m = Model::default();
        let svc = Service { name: "reviews".into(), namespace: "default".into(), ..Default::default() };
        m.services.insert(ObjectKey::new("default", "reviews"), svc);
        m.virtual_services = objects.into_iter().collect();
        m
    }

    #[test]
    fn the_oldest_virtual_service_wins_and_the_loser_is_reported() {
        let svc = ObjectKey::new("default", "reviews");
        // Files: load order, whatever the names.
        let m = model(vec![vs("b", None, 0), vs("a", None, 1)]);
        assert_eq!(m.virtual_service_for(&svc).map(|(k, _)| k.name.as_str()), Some("b"));
        let c = conflicts(&m);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].winner.0.name.as_str(), c[0].loser.0.name.as_str()), ("b", "a"));
        let text = c[0].message();
        assert!(text.contains("default/a (a.yaml:1)") && text.contains("default/b (b.yaml:1)"), "{text}");
        // Cluster: creation time, then the name.
        let m = model(vec![vs("a", Some(200), 0), vs("z", Some(100), 0), vs("y", Some(100), 0)]);
        assert_eq!(m.virtual_service_for(&svc).map(|(k, _)| k.name.as_str()), Some("y"));
        assert_eq!(conflicts(&m).len(), 2);
        // A file object is older than any cluster object.
        let m = model(vec![vs("c", Some(1), 0), vs("f", None, 9)]);
        assert_eq!(m.virtual_service_for(&svc).map(|(k, _)| k.name.as_str()), Some("f"));
    }

    #[test]
    fn destination_rules_merge_as_istiod_merges_them() {
        let dr = |name: &str, seq: u64, spec: serde_json::Value| {
            let spec = serde_json::from_value(spec).expect("spec");
            let provenance = Provenance { seq, ..Default::default() };
            (
                ObjectKey::new("default", name),
                DestinationRule { name: name.into(), namespace: "default".into(), spec, provenance },
            )
        };
        let mut m = model(Vec::new());
        m.destination_rules = [
            dr("old", 0, json!({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
                "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})),
            dr("new", 1, json!({"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}},
                "subsets": [{"name": "v1", "labels": {"version": "one"}}, {"name": "v2", "labels": {"version": "v2"}}]})),
        ]
        .into_iter()
        .collect();
        let rule = m.destination_rule_for(&ObjectKey::new("default", "reviews")).expect("rule");
        let lb = rule.traffic_policy().and_then(|p| p.load_balancer.as_ref()).and_then(|l| l.simple);
        assert_eq!(lb, Some(super::super::SimpleLb::Random), "the oldest policy");
        let subsets: Vec<(&str, &str)> =
            rule.subsets().iter().map(|s| (s.name.as_str(), s.labels["version"].as_str())).collect();
        assert_eq!(subsets, [("v1", "v1"), ("v2", "v2")], "merged; the oldest v1");
        let lost: Vec<String> = conflicts(&m).iter().map(|c| format!("{} {}", c.loser.0.name, c.field)).collect();
        assert_eq!(lost, ["new spec.trafficPolicy", "new spec.subsets[0]"]);
    }
}
