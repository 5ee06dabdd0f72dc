//! Lookups by Service: which release policy, VirtualServices (by host, and by route destination), DestinationRules
//! and HTTPRoutes name a Service.
//!
//! Answering each by a scan of every object made translation and `sluice validate` grow with the square of the
//! mesh (every Service scanned every object: 63 s for 4,000 Services each with a VirtualService and a
//! DestinationRule). The index is built once per model, lazily, in one pass over those maps, and kept beside the
//! model. The model's fields are public and edited in place, so each lookup first checks that the maps it was built
//! from are still the model's (`imbl`'s `ptr_eq`: O(1)); an edit makes the next lookup rebuild it. A clone of the
//! model starts without one (two models in use side by side never take turns rebuilding one shared index).

use super::mesh::{self, DestinationRule, HttpRouteObject, VirtualService};
use super::{ObjectKey, Objects, ReleasePolicy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The index cell a [`super::Model`] carries. Invisible to `Debug`, equality and serde.
#[derive(Default)]
pub struct ServiceIndex(Mutex<Option<Arc<Built>>>);

impl Clone for ServiceIndex {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for ServiceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceIndex")
    }
}

impl PartialEq for ServiceIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The maps an index was built from, and what it found, per Service (object keys in key order).
pub struct Built {
    policies: Objects<ReleasePolicy>,
    virtual_services: Objects<VirtualService>,
    destination_rules: Objects<DestinationRule>,
    http_routes: Objects<HttpRouteObject>,
    pub policies_of: HashMap<ObjectKey, Vec<ObjectKey>>,
    pub virtual_services_of: HashMap<ObjectKey, Vec<ObjectKey>>,
    /// VirtualServices (mesh and gateway ones) with a route or mirror destination naming the Service.
    pub routed_by: HashMap<ObjectKey, Vec<ObjectKey>>,
    pub destination_rules_of: HashMap<ObjectKey, Vec<ObjectKey>>,
    pub http_routes_of: HashMap<ObjectKey, Vec<ObjectKey>>,
}

impl Built {
    fn current(&self, m: &super::Model) -> bool {
        self.policies.ptr_eq(&m.policies)
            && self.virtual_services.ptr_eq(&m.virtual_services)
            && self.destination_rules.ptr_eq(&m.destination_rules)
            && self.http_routes.ptr_eq(&m.http_routes)
    }

    fn build(m: &super::Model) -> Self {
        fn add(map: &mut HashMap<ObjectKey, Vec<ObjectKey>>, svc: ObjectKey, key: &ObjectKey) {
            let keys = map.entry(svc).or_default();
            if keys.last() != Some(key) {
                keys.push(key.clone());
            }
        }
        let mut b = Built {
            policies: m.policies.clone(),
            virtual_services: m.virtual_services.clone(),
            destination_rules: m.destination_rules.clone(),
            http_routes: m.http_routes.clone(),
            policies_of: HashMap::new(),
            virtual_services_of: HashMap::new(),
            routed_by: HashMap::new(),
            destination_rules_of: HashMap::new(),
            http_routes_of: HashMap::new(),
        };
        for (k, p) in &m.policies {
            add(&mut b.policies_of, ObjectKey::new(&p.namespace, &p.spec.service), k);
        }
        for (k, vs) in &m.virtual_services {
            for svc in vs.spec.hosts.iter().filter_map(|h| mesh::service_of_host(h, &k.namespace)) {
                add(&mut b.virtual_services_of, svc, k);
            }
            let http = vs.spec.http.iter();
            let dests = http.flat_map(|h| h.route.iter().map(|d| &d.destination).chain(h.mirror.as_ref()));
            for svc in dests.filter_map(|d| mesh::service_of_host(&d.host, &k.namespace)) {
                if !b.routed_by.get(&svc).is_some_and(|keys| keys.contains(k)) {
                    add(&mut b.routed_by, svc, k);
                }
            }
        }
        for (k, dr) in &m.destination_rules {
            if let Some(svc) = mesh::service_of_host(&dr.spec.host, &k.namespace) {
                add(&mut b.destination_rules_of, svc, k);
            }
        }
        for (k, r) in &m.http_routes {
            for p in r.spec.parent_refs.iter().filter(|p| p.is_service()) {
                add(&mut b.http_routes_of, ObjectKey::new(p.namespace.as_deref().unwrap_or(&k.namespace), &p.name), k);
            }
        }
        b
    }
}

impl super::Model {
    /// The index of this model's objects by Service (built now if the model changed since).
    pub fn by_service(&self) -> Arc<Built> {
        let mut cell = self.by_service.0.lock().unwrap_or_else(|e| e.into_inner());
        match cell.as_ref() {
            Some(b) if b.current(self) => b.clone(),
            _ => cell.insert(Arc::new(Built::build(self))).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, ReleasePolicySpec};

    #[test]
    fn an_edit_in_place_is_seen_by_the_next_lookup() {
        let mut m = Model::default();
        let svc = ObjectKey::new("default", "reviews");
        assert!(m.policy_for(&svc).is_none());
        let spec = ReleasePolicySpec { service: "reviews".into(), ..Default::default() };
        let policy = ReleasePolicy { name: "r".into(), namespace: "default".into(), spec, state: Default::default() };
        m.policies.insert(ObjectKey::new("default", "r"), policy);
        assert_eq!(m.policy_for(&svc).map(|p| p.name.as_str()), Some("r"));
        let copy = m.clone();
        m.policies.clear();
        assert!(m.policy_for(&svc).is_none());
        assert!(copy.policy_for(&svc).is_some(), "a clone keeps its own answer");
    }
}
