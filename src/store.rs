//! The Store: the one current [`Model`], merged from every source, and the readiness of those sources.
//!
//! ```text
//!  file source ─set_part("file")──┐
//!  release API ─set_part("api")───┼─▶ Store ──watch::Receiver<Arc<Model>>──▶ snapshot publisher (debounce, translate)
//!  harness ────update(|m| ..)─────┘
//! ```
//! Each source owns a part; the merged model is the union, with parts applied in name order (so a later source
//! name wins on a key clash: a "file" policy overrides an "api" one of the same namespace/name, and the release
//! API refuses to create such a clash). Release state (phase, weight, step) is not part of any source: the release
//! controller sets it for every policy with [`Store::set_release_states`]. A change that leaves the merged model
//! equal wakes nobody.
//!
//! The merged model is kept, not rebuilt: a change re-merges only the keys that differ between the part before
//! and after (a structural diff of persistent maps, see [`crate::model::Objects`]), so publishing one endpoint
//! change costs O(change · parts), and the published model shares all other structure with the previous one.

use crate::model::{Model, ObjectKey, Objects, ReleaseState, diff_key};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    parts: Mutex<Parts>,
    model: watch::Sender<Arc<Model>>,
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct Parts {
    models: BTreeMap<String, Model>,
    /// Release state per policy, owned by the release controller and laid over whichever part holds the spec.
    states: BTreeMap<ObjectKey, ReleaseState>,
    /// Sources that must load once before the store is ready.
    pending: BTreeSet<String>,
    /// The union of `models` with `states` laid over its policies: what was last published.
    merged: Model,
    /// `merged` differs from what was last published.
    dirty: bool,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store, ready at once (no source registered yet).
    pub fn new() -> Self {
        let (model, _) = watch::channel(Arc::new(Model::default()));
        let (ready, _) = watch::channel(true);
        Self { inner: Arc::new(Inner { parts: Mutex::new(Parts::default()), model, ready }) }
    }

    /// Declares a source that must deliver its first model before the store is ready (and before any proxy gets
    /// config: an empty or partial first push is an outage).
    pub fn register_source(&self, source: &str) {
        let mut parts = self.lock();
        parts.pending.insert(source.to_string());
        self.inner.ready.send_replace(false);
    }

    /// Replaces one source's part and marks that source loaded.
    pub fn set_part(&self, source: &str, model: Model) {
        let mut parts = self.lock();
        let new = model.clone();
        let old = parts.models.insert(source.to_string(), model).unwrap_or_default();
        parts.pending.remove(source);
        parts.remerge(&old, &new);
        self.publish(&mut parts);
    }

    /// Edits one source's part in place (the part starts empty).
    pub fn update_part(&self, source: &str, edit: impl FnOnce(&mut Model)) {
        let mut parts = self.lock();
        let part = parts.models.entry(source.to_string()).or_default();
        let old = part.clone();
        edit(part);
        let new = part.clone();
        parts.pending.remove(source);
        parts.remerge(&old, &new);
        self.publish(&mut parts);
    }

    /// One source's part as it last set it (`None` before it did).
    pub fn part(&self, source: &str) -> Option<Model> {
        self.lock().models.get(source).cloned()
    }

    /// The source a harness or test edits with [`Store::update`].
    pub const LOCAL: &'static str = "local";

    /// Replaces the whole "local" part: the entry point for code that drives Sluice directly.
    pub fn set_model(&self, model: Model) {
        self.set_part(Self::LOCAL, model);
    }

    /// Edits the "local" part.
    pub fn update(&self, edit: impl FnOnce(&mut Model)) {
        self.update_part(Self::LOCAL, edit);
    }

    /// Replaces the release state of every policy (the release controller's output). A policy without an entry
    /// keeps the default state: follow its spec.
    pub fn set_release_states(&self, states: BTreeMap<ObjectKey, ReleaseState>) {
        let mut parts = self.lock();
        let old = std::mem::replace(&mut parts.states, states);
        let changed: BTreeSet<ObjectKey> =
            old.keys().chain(parts.states.keys()).filter(|k| old.get(*k) != parts.states.get(*k)).cloned().collect();
        for key in &changed {
            parts.remerge_key(key, |m| &m.policies, |m| &mut m.policies);
        }
        self.publish(&mut parts);
    }

    /// The source whose part defines the policy `key` as served: the last part in merge order that has it.
    pub fn policy_source(&self, key: &ObjectKey) -> Option<String> {
        let parts = self.lock();
        parts.models.iter().rev().find(|(_, m)| m.policies.contains_key(key)).map(|(source, _)| source.clone())
    }

    /// Sets the server's mesh-wide settings (trust domain, root namespace) that translation reads from the model.
    pub fn set_settings(&self, settings: crate::model::MeshSettings) {
        let mut parts = self.lock();
        if parts.merged.settings != settings {
            parts.merged.settings = settings;
            parts.dirty = true;
        }
        self.publish(&mut parts);
    }

    /// The current merged model.
    pub fn model(&self) -> Arc<Model> {
        self.inner.model.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Model>> {
        self.inner.model.subscribe()
    }

    /// True once every registered source has loaded.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Resolves when every registered source has loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        // The sender lives as long as the store, so `wait_for` only fails if the store is gone.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A panic while holding the lock leaves plain data behind; the next writer replaces it whole.
        self.inner.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, parts: &mut Parts) {
        if std::mem::take(&mut parts.dirty) {
            let merged = Arc::new(parts.merged.clone());
            self.inner.model.send_replace(merged);
        }
        if parts.pending.is_empty() {
            self.inner.ready.send_if_modified(|r| !std::mem::replace(r, true));
        }
    }
}

impl Parts {
    /// Brings `merged` up to date after one part changed from `old` to `new` (already in `models`): only the keys
    /// their diff names are merged again.
    fn remerge(&mut self, old: &Model, new: &Model) {
        self.remerge_map(&old.services, &new.services, |m| &m.services, |m| &mut m.services);
        self.remerge_map(&old.endpoints, &new.endpoints, |m| &m.endpoints, |m| &mut m.endpoints);
        self.remerge_map(&old.policies, &new.policies, |m| &m.policies, |m| &mut m.policies);
        self.remerge_map(
            &old.virtual_services,
            &new.virtual_services,
            |m| &m.virtual_services,
            |m| &mut m.virtual_services,
        );
        self.remerge_map(
            &old.destination_rules,
            &new.destination_rules,
            |m| &m.destination_rules,
            |m| &mut m.destination_rules,
        );
        self.remerge_map(&old.http_routes, &new.http_routes, |m| &m.http_routes, |m| &mut m.http_routes);
        self.remerge_map(
            &old.peer_authentications,
            &new.peer_authentications,
            |m| &m.peer_authentications,
            |m| &mut m.peer_authentications,
        );
        self.remerge_map(&old.gateways, &new.gateways, |m| &m.gateways, |m| &mut m.gateways);
        self.remerge_map(
            &old.gateway_classes,
            &new.gateway_classes,
            |m| &m.gateway_classes,
            |m| &mut m.gateway_classes,
        );
        self.remerge_map(&old.api_gateways, &new.api_gateways, |m| &m.api_gateways, |m| &mut m.api_gateways);
        self.remerge_map(
            &old.reference_grants,
            &new.reference_grants,
            |m| &m.reference_grants,
            |m| &mut m.reference_grants,
        );
        self.remerge_map(&old.secrets, &new.secrets, |m| &m.secrets, |m| &mut m.secrets);
        self.remerge_map(&old.sidecars, &new.sidecars, |m| &m.sidecars, |m| &mut m.sidecars);
    }

    fn remerge_map<V: Clone + PartialEq + Overlay>(
        &mut self,
        old: &Objects<V>,
        new: &Objects<V>,
        get: fn(&Model) -> &Objects<V>,
        get_mut: fn(&mut Model) -> &mut Objects<V>,
    ) {
        for d in old.diff(new) {
            self.remerge_key(diff_key(&d), get, get_mut);
        }
    }

    /// Merges one key again: the value of the last part (in name order) that has it, with release state laid
    /// over a policy. Marks the model dirty only when the merged value really changed.
    fn remerge_key<V: Clone + PartialEq + Overlay>(
        &mut self,
        key: &ObjectKey,
        get: fn(&Model) -> &Objects<V>,
        get_mut: fn(&mut Model) -> &mut Objects<V>,
    ) {
        let value = self.models.values().rev().find_map(|m| get(m).get(key)).map(|v| v.overlay(key, &self.states));
        let merged = get_mut(&mut self.merged);
        if merged.get(key) == value.as_ref() {
            return;
        }
        match value {
            Some(v) => merged.insert(key.clone(), v),
            None => merged.remove(key),
        };
        self.dirty = true;
    }
}

/// What the store lays over a part's object when merging: the release state over a policy, nothing otherwise.
trait Overlay: Sized + Clone {
    fn overlay(&self, _key: &ObjectKey, _states: &BTreeMap<ObjectKey, ReleaseState>) -> Self {
        self.clone()
    }
}

impl Overlay for crate::model::ReleasePolicy {
    fn overlay(&self, key: &ObjectKey, states: &BTreeMap<ObjectKey, ReleaseState>) -> Self {
        Self { state: states.get(key).cloned().unwrap_or_default(), ..self.clone() }
    }
}

impl Overlay for crate::model::Service {}
impl Overlay for Vec<crate::model::Endpoint> {}
impl Overlay for crate::model::mesh::VirtualService {}
impl Overlay for crate::model::mesh::DestinationRule {}
impl Overlay for crate::model::mesh::HttpRouteObject {}
impl Overlay for crate::model::mesh::PeerAuthentication {}
impl Overlay for crate::model::mesh::Gateway {}
impl Overlay for crate::model::mesh::GatewayClass {}
impl Overlay for crate::model::mesh::ApiGateway {}
impl Overlay for crate::model::mesh::ReferenceGrant {}
impl Overlay for crate::model::mesh::TlsSecret {}
impl Overlay for crate::model::mesh::Sidecar {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectKey, Service};

    fn svc(name: &str) -> Service {
        Service { name: name.into(), namespace: "default".into(), ..Default::default() }
    }

    #[test]
    fn ready_waits_for_every_registered_source() {
        let store = Store::new();
        store.register_source("file");
        store.register_source("api");
        store.set_part("file", Model::default());
        assert!(!store.is_ready());
        store.set_part("api", Model::default());
        assert!(store.is_ready());
    }

    #[test]
    fn parts_merge_and_an_unchanged_model_wakes_nobody() {
        let store = Store::new();
        let mut rx = store.subscribe();
        store.update(|m| {
            m.services.insert(ObjectKey::new("default", "a"), svc("a"));
        });
        store.update_part("api", |m| {
            m.services.insert(ObjectKey::new("default", "b"), svc("b"));
        });
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().services.len(), 2);
        store.update(|_| {});
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn a_later_part_wins_a_clash_and_removing_it_uncovers_the_earlier() {
        let store = Store::new();
        let key = ObjectKey::new("default", "a");
        let port = |n: u16, s: &str| {
            let mut svc = svc(s);
            svc.ports.push(crate::model::ServicePort {
                name: String::new(),
                port: n,
                target_port: crate::model::TargetPort::Number(n),
                app_protocol: None,
            });
            svc
        };
        store.update_part("api", |m| {
            m.services.insert(key.clone(), port(1, "a"));
        });
        store.update_part("file", |m| {
            m.services.insert(key.clone(), port(2, "a"));
        });
        assert_eq!(store.model().services[&key].ports[0].port, 2, "\"file\" sorts after \"api\"");
        store.update_part("api", |m| {
            m.services.insert(key.clone(), port(3, "a"));
        });
        assert_eq!(store.model().services[&key].ports[0].port, 2, "an earlier part's edit stays covered");
        store.update_part("file", |m| {
            m.services.remove(&key);
        });
        assert_eq!(store.model().services[&key].ports[0].port, 3, "the earlier part shows through");
        store.update_part("api", |m| {
            m.services.remove(&key);
        });
        assert!(store.model().services.is_empty());
    }

    #[test]
    fn release_states_lay_over_policies_and_an_edit_shares_the_rest() {
        use crate::model::{Phase, ReleasePolicy, ReleasePolicySpec};
        let store = Store::new();
        let mut rx = store.subscribe();
        let key = ObjectKey::new("default", "r");
        store.update(|m| {
            m.insert_service(svc("a"));
            m.insert_policy(ReleasePolicy::new("default", "r", ReleasePolicySpec::split("a", "v1", "v2", 100)));
        });
        rx.borrow_and_update();
        let state = ReleaseState { phase: Phase::Paused, canary_weight: Some(7), step: 0 };
        store.set_release_states([(key.clone(), state.clone())].into());
        assert!(rx.has_changed().unwrap());
        let before = rx.borrow_and_update().clone();
        assert_eq!(before.policies[&key].state, state);
        store.set_release_states([(key.clone(), state.clone())].into());
        assert!(!rx.has_changed().unwrap(), "the same states wake nobody");
        // A policy edit in the part keeps the state laid over it; the services map is shared, not copied.
        store.update(|m| m.policies.get_mut(&key).unwrap().spec.canary = "v3".into());
        let after = store.model();
        assert_eq!((after.policies[&key].spec.canary.as_str(), &after.policies[&key].state), ("v3", &state));
        assert!(after.services.ptr_eq(&before.services));
        store.set_release_states(BTreeMap::new());
        assert_eq!(store.model().policies[&key].state, ReleaseState::default());
    }
}
