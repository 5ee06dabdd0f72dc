//! The benchmark's model: S services with K endpoints each, two versions, a release policy on every n-th.
//! Deterministic, so the server, the floor and the driver agree on names. Endpoint addresses are in 127.0.0.0/8:
//! they are config only (nothing sends traffic to them).

use crate::model::{Endpoint, Model, ObjectKey, ReleasePolicy, ReleasePolicySpec, Service};

/// What to generate.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Shape {
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Every n-th service gets a release policy (v1 stable, v2 canary at 10%); 0 = none.
    pub policy_every: usize,
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
    m
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
        let shape = Shape { services: 20, endpoints_per_service: 4, policy_every: 10 };
        let m = model(&shape);
        assert_eq!((m.services.len(), m.policies.len()), (20, 2));
        assert!(m.endpoints.values().all(|e| e.len() == 4));
        let mut n = m.clone();
        churn(&mut n, 3, 0);
        assert_eq!(m.services_with_changed_endpoints(&n), vec![ObjectKey::new("default", service_name(3))]);
    }
}
