//! The benchmark's model: S services with K endpoints each, two versions, a release policy on every n-th, and with
//! `sidecar_egress` an Istio Sidecar per proxy group limiting what its proxies get. Deterministic, so the server,
//! the floor and the driver agree on names. Endpoint addresses are in 127.0.0.0/8: they are config only (nothing
//! sends traffic to them).

use crate::model::{Endpoint, Model, ObjectKey, ReleasePolicy, ReleasePolicySpec, Service};

/// What to generate.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Shape {
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Every n-th service gets a release policy (v1 stable, v2 canary at 10%); 0 = none.
    pub policy_every: usize,
    /// Each proxy depends on this many services (0: on all): `GROUPS` Sidecars, each selecting the proxies of
    /// one group (`bench-group: gN`), allow `shared_services` (every group's: the changes are made there) and
    /// services of their own.
    pub sidecar_egress: usize,
    /// Every service also gets an Istio DestinationRule (subsets v1, v2) and a VirtualService splitting 90/10.
    pub istio: bool,
}

/// Proxy groups (one Sidecar each) in the `sidecar_egress` mode.
pub const GROUPS: usize = 10;

/// The label value of proxy `i`'s group.
pub fn group_of(i: usize) -> String {
    format!("g{}", i % GROUPS)
}

/// The services every group's Sidecar allows (half of `sidecar_egress`, at least two), so the measured changes
/// reach every proxy: release-policy services (weight changes) and as many without a policy (VirtualService
/// edits: a policy's split would override the edited weights). Empty without Sidecars.
pub fn shared_services(shape: &Shape) -> Vec<usize> {
    if shape.sidecar_egress == 0 {
        return Vec::new();
    }
    let n = (shape.sidecar_egress / 2).max(2);
    let policies = policy_services(shape);
    let plain = (0..shape.services).filter(|i| !policies.contains(i));
    let mut out: Vec<usize> =
        policies.iter().copied().take(n / 2).chain(plain.take(n - n.min(policies.len()).min(n / 2))).collect();
    out.sort_unstable();
    out
}

/// The services whose weight, endpoints and VirtualService the measured changes use, in turn: with Sidecars the
/// shared ones, else all.
pub fn changed_services(shape: &Shape, with_policy: bool) -> Vec<usize> {
    let policies = policy_services(shape);
    let candidates = match shape.sidecar_egress {
        0 => (0..shape.services).collect(),
        _ => shared_services(shape),
    };
    candidates.into_iter().filter(|i| policies.contains(i) == with_policy).collect()
}

/// The egress hosts of group `g`'s Sidecar: the shared services, then `sidecar_egress - shared` of its own.
fn group_hosts(shape: &Shape, g: usize) -> Vec<String> {
    let shared = shared_services(shape);
    let own = shape.sidecar_egress.saturating_sub(shared.len());
    let others: Vec<usize> = (0..shape.services).filter(|i| !shared.contains(i)).collect();
    let mine = (0..own).filter_map(|j| others.get((g * own + j) % others.len().max(1)).copied());
    shared
        .iter()
        .copied()
        .chain(mine)
        .map(|i| format!("default/{}.default.svc.cluster.local", service_name(i)))
        .collect()
}

pub fn service_name(i: usize) -> String {
    format!("svc-{i:05}")
}

pub fn policy_name(i: usize) -> String {
    format!("svc-{i:05}-v2")
}

/// The services that have a policy.
pub fn policy_services(shape: &Shape) -> Vec<usize> {
    match shape.policy_every {
        0 => Vec::new(),
        n => (0..shape.services).step_by(n).collect(),
    }
}

pub fn model(shape: &Shape) -> Model {
    let mut m = Model::default();
    for i in 0..shape.services {
        let key = m.insert_service(Service::http("default", &service_name(i), 9080));
        for j in 0..shape.endpoints_per_service {
            m.push_endpoint(&key, endpoint(i, j, 9080));
        }
    }
    for i in policy_services(shape) {
        let spec = ReleasePolicySpec::split(&service_name(i), "v1", "v2", 1000);
        m.insert_policy(ReleasePolicy::new("default", &policy_name(i), spec));
    }
    if shape.istio {
        for i in 0..shape.services {
            let (dr, vs) = istio_objects(i, 10);
            m.destination_rules.insert(ObjectKey::new("default", service_name(i)), dr);
            m.virtual_services.insert(ObjectKey::new("default", service_name(i)), vs);
        }
    }
    if shape.sidecar_egress > 0 {
        for g in 0..GROUPS {
            let sidecar = serde_json::json!({
                "name": format!("bench-{}", group_of(g)),
                "namespace": "default",
                "spec": {
                    "workloadSelector": {"labels": {"bench-group": group_of(g)}},
                    "egress": [{"hosts": group_hosts(shape, g)}],
                },
                "provenance": {"seq": g},
            });
            let sidecar: crate::model::mesh::Sidecar = serde_json::from_value(sidecar).expect("a valid Sidecar");
            m.sidecars.insert(ObjectKey::new("default", sidecar.name.clone()), sidecar);
        }
    }
    m
}

/// Service `i`'s DestinationRule (subsets by `version`) and VirtualService sending `v2_percent` to v2.
fn istio_objects(
    i: usize,
    v2_percent: u32,
) -> (crate::model::mesh::DestinationRule, crate::model::mesh::VirtualService) {
    let name = service_name(i);
    let subset = |v: &str| serde_json::json!({"name": v, "labels": {"version": v}});
    let dr = serde_json::json!({
        "name": name, "namespace": "default",
        "spec": {"host": name, "subsets": [subset("v1"), subset("v2")]},
        "provenance": {"seq": i},
    });
    let to = |v: &str, weight: u32| serde_json::json!({"destination": {"host": name, "subset": v}, "weight": weight});
    let vs = serde_json::json!({
        "name": name, "namespace": "default",
        "spec": {"hosts": [name], "http": [{"route": [to("v1", 100 - v2_percent), to("v2", v2_percent)]}]},
        "provenance": {"seq": i},
    });
    (
        serde_json::from_value(dr).expect("a valid DestinationRule"),
        serde_json::from_value(vs).expect("a valid VirtualService"),
    )
}

/// One VirtualService edit: service `i`'s split becomes `v2_percent` to v2.
pub fn edit_virtual_service(model: &mut Model, i: usize, v2_percent: u32) {
    let (_, vs) = istio_objects(i, v2_percent);
    if let Some(old) = model.virtual_services.get_mut(&ObjectKey::new("default", service_name(i))) {
        *old = vs;
    }
}

/// Endpoint `j` of service `i`, listening on `port`; even endpoints are v1, odd ones v2.
pub fn endpoint(i: usize, j: usize, port: u16) -> Endpoint {
    let n = i * 1000 + j + 1;
    let address = format!("127.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
    let version = if j.is_multiple_of(2) { "v1" } else { "v2" };
    Endpoint::ready(&format!("{}-{j}", service_name(i)), &address, 9080, port)
        .with_label("app", &service_name(i))
        .with_label("version", version)
}

/// One endpoint change: endpoint 0 of service `i` moves between two ports.
pub fn churn(model: &mut Model, i: usize, round: usize) {
    let key = ObjectKey::new("default", service_name(i));
    if let Some(eps) = model.endpoints.get_mut(&key)
        && let Some(first) = eps.first_mut()
    {
        *first = endpoint(i, 0, 9080 + 1 + (round % 2) as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_has_the_asked_shape_and_churn_changes_one_service() {
        let shape = Shape { services: 20, endpoints_per_service: 4, policy_every: 10, sidecar_egress: 0, istio: false };
        let m = model(&shape);
        assert_eq!((m.services.len(), m.policies.len()), (20, 2));
        assert!(m.endpoints.values().all(|e| e.len() == 4));
        let mut n = m.clone();
        churn(&mut n, 3, 0);
        assert_eq!(m.services_with_changed_endpoints(&n), vec![ObjectKey::new("default", service_name(3))]);
    }

    #[test]
    fn each_group_sidecar_allows_the_shared_services_and_its_own() {
        let shape =
            Shape { services: 100, endpoints_per_service: 2, policy_every: 10, sidecar_egress: 10, istio: true };
        let m = model(&shape);
        assert_eq!(m.sidecars.len(), GROUPS);
        assert_eq!((m.virtual_services.len(), m.destination_rules.len()), (100, 100));
        let mut n = m.clone();
        edit_virtual_service(&mut n, 7, 50);
        assert_eq!(m.virtual_services.diff(&n.virtual_services).count(), 1);
        assert_eq!(shared_services(&shape), [0, 1, 2, 3, 10], "half with a release policy, half without");
        assert_eq!(changed_services(&shape, true), [0, 10]);
        assert_eq!(changed_services(&shape, false), [1, 2, 3]);
        let (a, b) = (group_hosts(&shape, 0), group_hosts(&shape, 1));
        assert_eq!((a.len(), b.len()), (10, 10));
        assert_eq!(a[..5], b[..5]);
        assert_ne!(a[5..], b[5..], "each group has services of its own");
    }
}
