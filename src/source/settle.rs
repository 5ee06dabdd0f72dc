//! Which file edits wait for the removal grace: a file caught while a slow writer pauses mid-write parses as a
//! valid config that lacks what comes later (or has it cut short), and applying it would move traffic and end a
//! release the operator is running. So an edit that removes an object, or changes what routes traffic (a
//! ReleasePolicy, VirtualService, DestinationRule, HTTPRoute, or what sidecars accept or see: a PeerAuthentication, a Sidecar), applies only once the files have stayed the same
//! for the grace period; additions and Service or Workload changes apply at once.
//!
//! ```text
//!  new model vs the last applied ─▶ removed objects / changed routing? ─ no ─▶ apply after two equal polls
//!                                                                     └ yes ─▶ apply once unchanged for the grace
//! ```

use crate::model::{Model, Objects};

/// What in `new` would take away or reroute something `old` has, as `Kind namespace/name` (empty: nothing).
pub(crate) fn held_back(old: &Model, new: &Model) -> Vec<String> {
    let mut out = Vec::new();
    removed("Service", &old.services, &new.services, &mut out);
    for (key, eps) in old.endpoints.iter() {
        let kept = new.endpoints.get(key);
        for e in eps.iter().filter(|e| kept.is_none_or(|k| !k.iter().any(|n| n.name == e.name))) {
            out.push(format!("Workload {}/{}", key.namespace, e.name));
        }
    }
    changed("ReleasePolicy", &old.policies, &new.policies, |p| &p.spec, &mut out);
    changed("VirtualService", &old.virtual_services, &new.virtual_services, |v| &v.spec, &mut out);
    changed("DestinationRule", &old.destination_rules, &new.destination_rules, |d| &d.spec, &mut out);
    changed("HTTPRoute", &old.http_routes, &new.http_routes, |r| &r.spec, &mut out);
    changed("PeerAuthentication", &old.peer_authentications, &new.peer_authentications, |p| &p.spec, &mut out);
    changed("Gateway", &old.gateways, &new.gateways, |g| &g.spec, &mut out);
    changed("GatewayClass", &old.gateway_classes, &new.gateway_classes, |g| &g.spec, &mut out);
    changed("Gateway", &old.api_gateways, &new.api_gateways, |g| &g.spec, &mut out);
    changed("ReferenceGrant", &old.reference_grants, &new.reference_grants, |g| &g.spec, &mut out);
    changed("Secret", &old.secrets, &new.secrets, |s| s, &mut out);
    changed("Sidecar", &old.sidecars, &new.sidecars, |s| &s.spec, &mut out);
    out
}

fn removed<V>(kind: &str, old: &Objects<V>, new: &Objects<V>, out: &mut Vec<String>) {
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).map(|k| format!("{kind} {k}")));
}

/// Objects of `old` that are gone from `new` or whose spec differs.
fn changed<V, S: PartialEq>(kind: &str, old: &Objects<V>, new: &Objects<V>, spec: fn(&V) -> &S, out: &mut Vec<String>) {
    for (k, v) in old.iter() {
        if new.get(k).is_none_or(|n| spec(n) != spec(v)) {
            out.push(format!("{kind} {k}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ReleasePolicy, ReleasePolicySpec, Service};

    fn model(policy_weight: Option<u32>, workloads: &[&str]) -> Model {
        let mut m = Model::default();
        let svc = m.insert_service(Service::http("default", "reviews", 9080));
        for w in workloads {
            m.push_endpoint(&svc, Endpoint::ready(w, "10.0.0.1", 9080, 9080));
        }
        if let Some(w) = policy_weight {
            m.insert_policy(ReleasePolicy::new("default", "r", ReleasePolicySpec::split("reviews", "v1", "v3", w)));
        }
        m
    }

    #[test]
    fn removals_and_routing_changes_wait_additions_do_not() {
        let old = model(Some(3000), &["a"]);
        assert!(held_back(&old, &model(Some(3000), &["a", "b"])).is_empty(), "an addition applies at once");
        assert_eq!(held_back(&old, &model(None, &["a"])), ["ReleasePolicy default/r"]);
        assert_eq!(held_back(&old, &model(Some(1000), &["a"])), ["ReleasePolicy default/r"]);
        assert_eq!(held_back(&old, &model(Some(3000), &[])), ["Workload default/a"]);
        let no_svc = Model { policies: old.policies.clone(), ..Default::default() };
        assert_eq!(held_back(&old, &no_svc), ["Service default/reviews", "Workload default/a"]);
        assert!(held_back(&Model::default(), &old).is_empty());
    }
}
