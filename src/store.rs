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

use crate::model::{Model, ObjectKey, ReleaseState};
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
        parts.models.insert(source.to_string(), model);
        parts.pending.remove(source);
        self.publish(&parts);
    }

    /// Edits one source's part in place (the part starts empty).
    pub fn update_part(&self, source: &str, edit: impl FnOnce(&mut Model)) {
        let mut parts = self.lock();
        edit(parts.models.entry(source.to_string()).or_default());
        parts.pending.remove(source);
        self.publish(&parts);
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
        parts.states = states;
        self.publish(&parts);
    }

    /// The source whose part defines the policy `key` as served: the last part in merge order that has it.
    pub fn policy_source(&self, key: &ObjectKey) -> Option<String> {
        let parts = self.lock();
        parts.models.iter().rev().find(|(_, m)| m.policies.contains_key(key)).map(|(source, _)| source.clone())
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

    fn publish(&self, parts: &Parts) {
        let mut merged = Model::default();
        for part in parts.models.values() {
            merged.services.extend(part.services.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.endpoints.extend(part.endpoints.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.policies.extend(part.policies.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.virtual_services.extend(part.virtual_services.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.destination_rules.extend(part.destination_rules.iter().map(|(k, v)| (k.clone(), v.clone())));
            merged.http_routes.extend(part.http_routes.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for (key, policy) in merged.policies.iter_mut() {
            policy.state = parts.states.get(key).cloned().unwrap_or_default();
        }
        self.inner.model.send_if_modified(|current| {
            if **current == merged {
                return false;
            }
            *current = Arc::new(merged);
            true
        });
        if parts.pending.is_empty() {
            self.inner.ready.send_if_modified(|r| !std::mem::replace(r, true));
        }
    }
}

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
}
