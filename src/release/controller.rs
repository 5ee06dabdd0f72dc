//! The release controller: the one owner of every release's record. Sources give specs; the controller turns
//! verbs, weights and timed steps into release state, persists it before acknowledging, and lays it over the
//! model for translate. Releases of a shared source (Kubernetes) are driven only while this replica leads; a
//! follower adopts the leader's stored records instead (see [`super::shared`]).

use super::machine::{Record, Refused, Verb};
use super::persist::{PersistError, Persisted, StateDir, StoredPolicy};
use super::replicas;
use super::shared::{self, Shared};
use super::status::{self, Proxies, ReleaseView};
use crate::model::{FieldError, Model, ObjectKey, ReleasePolicy, ReleasePolicySpec};
use crate::store::Store;
use crate::telemetry::{Totals, TrafficStats, VersionKey};
use crate::xds::{Registry, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};

/// The store part holding policies created through the API.
pub const API_SOURCE: &str = "api";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("release policy {0} not found")]
    NotFound(ObjectKey),
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("storing release state: {0}")]
    Persist(#[from] PersistError),
    #[error("release request failed: {0}")]
    Internal(String),
    /// A verb sent to a replica that follows: only the leader changes a shared release.
    #[error(
        "release {release} is driven by the leading replica {}, not this one: send the request there",
        .leader.as_deref().unwrap_or("(none holds the lease now; retry shortly)")
    )]
    NotLeader { release: ObjectKey, leader: Option<String> },
    /// A shared release's change applied by the leader, whose record did not reach the ReleasePolicy status in
    /// time: the other replicas (and a new leader, should this one die now) do not know it yet.
    #[error(
        "release {release}: the change was applied on the leading replica but is not yet stored in the cluster \
         (no ReleasePolicy status with it after {} ms); check with `sluice release get {}` before sending it again",
        .waited.as_millis(), .release.name
    )]
    NotStored { release: ObjectKey, waited: Duration },
    /// A policy written to the cluster that this replica's watch has not delivered in time.
    #[error(
        "release {release} was written to the cluster, but this replica has not seen it there after {} ms; check \
         with `sluice release get {}` before sending it again",
        .waited.as_millis(), .release.name
    )]
    NotSeen { release: ObjectKey, waited: Duration },
}

impl ReleaseError {
    /// A stable name for the kind of error, sent beside the message (REST `reason`) so that a client, a forwarding
    /// replica and the gRPC mapping tell the kinds apart without reading the text.
    pub fn reason(&self) -> &'static str {
        match self {
            ReleaseError::NotFound(_) => "NotFound",
            ReleaseError::Invalid(_) => "Invalid",
            ReleaseError::Conflict(_) => "Conflict",
            ReleaseError::Refused(_) => "Refused",
            ReleaseError::Persist(_) => "Persist",
            ReleaseError::Internal(_) => "Internal",
            ReleaseError::NotLeader { .. } => "NotLeader",
            ReleaseError::NotStored { .. } => "NotStored",
            ReleaseError::NotSeen { .. } => "NotSeen",
        }
    }
}

/// A change of a release's state: what the verbs and the weight endpoints send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Weight(u32),
    Act(Verb),
}

/// How long a leader waits for a shared release's changed record to be stored in the cluster before it answers.
pub const STORE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ReleaseController {
    inner: Arc<Mutex<Inner>>,
    store: Store,
    registry: Registry,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    wake: Arc<Notify>,
    traffic: TrafficStats,
    /// Per release with analysis: the canary's totals when its current interval began (and that instant).
    baselines: Arc<Mutex<BTreeMap<ObjectKey, (u64, Totals)>>>,
    /// Set once in Kubernetes mode: the shared source and who leads it.
    shared: Arc<OnceLock<Shared>>,
    /// Set once in Kubernetes mode: where the Release API creates policies.
    cluster: Arc<OnceLock<Arc<dyn super::cluster::Cluster>>>,
}

struct Inner {
    records: BTreeMap<ObjectKey, Record>,
    api: BTreeMap<ObjectKey, StoredPolicy>,
    dir: Option<StateDir>,
    /// Leading, and the stored records were adopted since this replica began to lead.
    took_over: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ReleaseController {
    /// Loads stored state (if a state dir is given) and puts API policies into the store.
    pub fn new(
        store: Store,
        registry: Registry,
        snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        dir: Option<StateDir>,
        traffic: TrafficStats,
    ) -> Result<Self, PersistError> {
        let stored = match &dir {
            Some(d) => d.load()?,
            None => Persisted::default(),
        };
        let api: BTreeMap<ObjectKey, StoredPolicy> = stored.api_policies.into_values().map(|p| (p.key(), p)).collect();
        let records = stored
            .records
            .into_iter()
            .filter_map(|(k, r)| k.split_once('/').map(|(ns, n)| (ObjectKey::new(ns, n), r)))
            .collect();
        let this = Self {
            inner: Arc::new(Mutex::new(Inner { records, api, dir, took_over: false })),
            store,
            registry,
            snapshots,
            wake: Arc::new(Notify::new()),
            traffic,
            baselines: Default::default(),
            shared: Default::default(),
            cluster: Default::default(),
        };
        this.store.set_part(API_SOURCE, this.api_model());
        this.publish_states();
        Ok(this)
    }

    /// Makes the releases of `shared.source` follow the leader: from now on this replica drives them only while
    /// it leads. Call once, from within the runtime (a task wakes the controller on every leadership or stored
    /// state change).
    pub fn share(&self, shared: Shared) {
        let (mut leading, mut stored) = (shared.leading.clone(), shared.stored.clone());
        if self.shared.set(shared).is_err() {
            tracing::error!("release sharing set twice; keeping the first");
            return;
        }
        let wake = self.wake.clone();
        wake.notify_one();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = leading.changed() => if r.is_err() { return },
                    r = stored.changed() => if r.is_err() { return },
                }
                wake.notify_one();
            }
        });
    }

    /// The releases this replica follows rather than drives: the shared source's, while another replica leads.
    fn followed(&self, model: &Model) -> BTreeSet<ObjectKey> {
        match self.shared.get() {
            Some(s) if !s.leading() => self.shared_keys(model),
            _ => BTreeSet::new(),
        }
    }

    fn shared_keys(&self, model: &Model) -> BTreeSet<ObjectKey> {
        let Some(s) = self.shared.get() else { return BTreeSet::new() };
        model
            .policies
            .keys()
            .filter(|k| self.store.policy_source(k).as_deref() == Some(s.source.as_str()))
            .cloned()
            .collect()
    }

    /// Runs the controller: reconciles when sources change, runs due steps, until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut models = self.store.subscribe();
        loop {
            self.reconcile();
            let analysing = self.refresh_baselines();
            let now = now_ms();
            let followed = self.followed(&self.store.model());
            let due = self
                .lock()
                .records
                .iter()
                .filter(|(k, _)| !followed.contains(*k))
                .filter_map(|(_, r)| r.next_wake(now))
                .min();
            let mut sleep =
                due.map(|d| Duration::from_millis(d.saturating_sub(now))).unwrap_or(Duration::from_secs(3600));
            if analysing {
                // Baselines follow interval starts within a second.
                sleep = sleep.min(Duration::from_secs(1));
            }
            tokio::select! {
                changed = models.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(sleep) => self.tick(),
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The store the controller reads sources from (and publishes release states to).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn list(&self, namespace: Option<&str>) -> Vec<ReleaseView> {
        let keys: Vec<ObjectKey> = self.lock().records.keys().cloned().collect();
        keys.iter().filter(|k| namespace.is_none_or(|ns| k.namespace == ns)).filter_map(|k| self.get(k).ok()).collect()
    }

    /// A release's record as the controller holds it (the status writer stores it for the other replicas).
    pub fn record(&self, key: &ObjectKey) -> Option<Record> {
        self.lock().records.get(key).cloned()
    }

    pub fn get(&self, key: &ObjectKey) -> Result<ReleaseView, ReleaseError> {
        let record = self.lock().records.get(key).cloned().ok_or_else(|| ReleaseError::NotFound(key.clone()))?;
        let model = self.store.model();
        let now = now_ms();
        let traffic = [&record.spec.stable, &record.spec.canary]
            .into_iter()
            .filter_map(|v| {
                let vk = VersionKey::new(&key.namespace, &record.spec.service, v);
                self.traffic.window(&vk, now).map(|w| (v.clone(), w))
            })
            .collect();
        let proxies = self.proxies(key, &record);
        Ok(status::view(key, &record, &model, proxies, &self.source_of(key), &traffic))
    }

    /// Creates or replaces a policy's spec (API-owned policies only).
    pub fn apply(&self, key: &ObjectKey, spec: ReleasePolicySpec) -> Result<ReleaseView, ReleaseError> {
        local_spec_checks(&spec)?;
        let model = self.store.model();
        self.check_apply(key, &spec, &model, API_SOURCE)?;
        {
            let mut inner = self.lock();
            let stored = StoredPolicy { namespace: key.namespace.clone(), name: key.name.clone(), spec: spec.clone() };
            let mut api = inner.api.clone();
            api.insert(key.clone(), stored);
            let mut records = inner.records.clone();
            match records.get_mut(key) {
                Some(r) => r.respec(spec, now_ms()),
                None => {
                    records.insert(key.clone(), Record::new(spec, now_ms()));
                }
            }
            inner.commit(records, Some(api))?;
            self.store.set_part(API_SOURCE, api_model(&inner));
        }
        self.publish_states();
        self.get(key)
    }

    pub fn delete(&self, key: &ObjectKey) -> Result<(), ReleaseError> {
        {
            let mut inner = self.lock();
            if !inner.api.contains_key(key) {
                return Err(match inner.records.contains_key(key) {
                    true => ReleaseError::Conflict(format!(
                        "release policy {key} comes from {}; remove it there",
                        self.source_of(key)
                    )),
                    false => ReleaseError::NotFound(key.clone()),
                });
            }
            let mut api = inner.api.clone();
            api.remove(key);
            let mut records = inner.records.clone();
            records.remove(key);
            inner.commit(records, Some(api))?;
            self.store.set_part(API_SOURCE, api_model(&inner));
        }
        self.publish_states();
        Ok(())
    }

    /// Runs a mutation off the async threads: mutations write (and fsync) the state file before they answer.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReleaseController) -> Result<T, ReleaseError> + Send + 'static,
    ) -> Result<T, ReleaseError> {
        let controller = self.clone();
        tokio::task::spawn_blocking(move || f(&controller)).await.map_err(|e| ReleaseError::Internal(e.to_string()))?
    }

    pub fn set_weight(&self, key: &ObjectKey, weight: u32) -> Result<ReleaseView, ReleaseError> {
        if weight > crate::model::TOTAL_WEIGHT {
            return Err(FieldError::new("spec.traffic.canaryWeight", "must be between 0 and 10000").into());
        }
        self.mutate(key, |r, _| r.set_weight(weight))
    }

    pub fn act(&self, key: &ObjectKey, verb: Verb) -> Result<ReleaseView, ReleaseError> {
        self.mutate(key, |r, now| r.act(verb, now))
    }

    fn mutate(
        &self,
        key: &ObjectKey,
        f: impl FnOnce(&mut Record, u64) -> Result<(), Refused>,
    ) -> Result<ReleaseView, ReleaseError> {
        if self.followed(&self.store.model()).contains(key) {
            let leader = self.shared.get().and_then(Shared::holder);
            return Err(ReleaseError::NotLeader { release: key.clone(), leader });
        }
        {
            let mut inner = self.lock();
            let mut records = inner.records.clone();
            let record = records.get_mut(key).ok_or_else(|| ReleaseError::NotFound(key.clone()))?;
            f(record, now_ms())?;
            inner.commit(records, None)?;
        }
        self.publish_states();
        self.wake.notify_one();
        self.get(key)
    }

    /// The checks of an apply beyond the spec's own. `writes`: the source the apply writes to (the API's own
    /// policies, or the cluster's); a policy of another source is changed there.
    fn check_apply(
        &self,
        key: &ObjectKey,
        spec: &ReleasePolicySpec,
        model: &Model,
        writes: &str,
    ) -> Result<(), ReleaseError> {
        let source = self.source_of(key);
        if source != writes && self.lock().records.contains_key(key) {
            return Err(ReleaseError::Conflict(format!(
                "release policy {key} comes from {source}; change it there (the API manages only policies it created)"
            )));
        }
        let svc = ObjectKey::new(&key.namespace, &spec.service);
        if !model.services.contains_key(&svc) {
            return Err(FieldError::new("spec.service", format!("no Service {svc}")).into());
        }
        if let Some(other) = model
            .policies
            .iter()
            .find(|(k, p)| *k != key && k.namespace == key.namespace && p.spec.service == spec.service)
        {
            return Err(ReleaseError::Conflict(format!("Service {svc} already has release policy {}", other.0)));
        }
        Ok(())
    }

    /// Follows source changes: new policies start, changed specs apply, removed policies end. Shared releases
    /// take the stored record: when new, while following, and once on taking over.
    fn reconcile(&self) {
        let shared = self.shared.get();
        let following = shared.is_some_and(|s| !s.leading());
        let changed = {
            let mut inner = self.lock();
            // The model is read under the lock: `apply` and `delete` change the API part while holding it, so a
            // model read before their change can never drop the record they just made.
            let model = self.store.model();
            let shared_keys = self.shared_keys(&model);
            let now = now_ms();
            let mut records = inner.records.clone();
            records.retain(|k, _| model.policies.contains_key(k));
            let mut started = BTreeSet::new();
            for (key, policy) in &model.policies {
                match records.get_mut(key) {
                    Some(r) if r.spec != policy.spec => r.respec(policy.spec.clone(), now),
                    Some(_) => {}
                    None => {
                        tracing::info!(release = %key, "release started");
                        records.insert(key.clone(), Record::new(policy.spec.clone(), now));
                        started.insert(key.clone());
                    }
                }
            }
            if let Some(s) = shared {
                let adopting = match following || !inner.took_over {
                    true => shared_keys.clone(),
                    false => shared_keys.intersection(&started).cloned().collect(),
                };
                shared::adopt(&mut records, &adopting, &s.stored.borrow());
                if !following && !inner.took_over {
                    // Steps that fell due while no replica led run now (the run loop waits only for future ones).
                    for (key, r) in records.iter_mut().filter(|(k, _)| adopting.contains(*k)) {
                        r.tick(now);
                        tracing::info!(release = %key, step = r.state.step, phase = ?r.state.phase, "leading: going on from the stored release state");
                    }
                }
                inner.took_over = !following;
            }
            let changed = records != inner.records;
            if changed && let Err(e) = inner.commit(records, None) {
                tracing::error!(error = %e, "release state not stored; will retry on the next change");
            }
            changed
        };
        if changed {
            self.publish_states();
        }
    }

    /// Starts a canary baseline for every release whose analysis interval began since the last one; true when
    /// any release is being analysed.
    fn refresh_baselines(&self) -> bool {
        let starts: Vec<(ObjectKey, VersionKey, u64)> = self
            .lock()
            .records
            .iter()
            .filter(|(_, r)| r.next_check().is_some())
            .map(|(k, r)| (k.clone(), canary_key(k, r), r.analysis.interval_started_ms))
            .collect();
        let mut baselines = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        baselines.retain(|k, _| starts.iter().any(|(s, _, _)| s == k));
        for (key, canary, started) in &starts {
            if baselines.get(key).is_none_or(|(at, _)| at != started) {
                baselines.insert(key.clone(), (*started, self.traffic.totals(canary)));
            }
        }
        !starts.is_empty()
    }

    /// The canary's numbers since its interval's baseline, for the releases whose check is due at `now`; the
    /// totals they were measured to become the next interval's baseline (nothing falls between two intervals).
    fn measure_due(
        &self,
        records: &BTreeMap<ObjectKey, Record>,
        followed: &BTreeSet<ObjectKey>,
        now: u64,
    ) -> BTreeMap<ObjectKey, crate::telemetry::Measured> {
        let mut baselines = self.baselines.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .filter(|(k, r)| !followed.contains(*k) && r.next_check().is_some_and(|due| now >= due))
            .map(|(k, r)| {
                let totals = self.traffic.totals(&canary_key(k, r));
                let base = baselines.get(k).map(|(_, t)| t.clone()).unwrap_or_else(|| totals.clone());
                let measured = totals.since(&base);
                baselines.insert(k.clone(), (now, totals));
                (k.clone(), measured)
            })
            .collect()
    }

    fn tick(&self) {
        let followed = self.followed(&self.store.model());
        let changed = {
            let mut inner = self.lock();
            let mut records = inner.records.clone();
            let now = now_ms();
            let measured = self.measure_due(&records, &followed, now);
            let mut changed = false;
            for (key, m) in &measured {
                if let Some(r) = records.get_mut(key) {
                    changed |= r.check(now, m);
                    tracing::info!(release = %key, check = ?r.analysis.last, phase = ?r.state.phase, "analysis check");
                }
            }
            let driven = records.iter_mut().filter(|(k, _)| !followed.contains(*k));
            let changed = driven.fold(changed, |acc, (_, r)| r.tick(now) | acc);
            if changed && let Err(e) = inner.commit(records, None) {
                tracing::error!(error = %e, "release step not stored; will retry");
            }
            changed
        };
        if changed {
            self.publish_states();
        }
    }

    fn source_of(&self, key: &ObjectKey) -> String {
        self.store.policy_source(key).unwrap_or_else(|| API_SOURCE.to_string())
    }

    fn api_model(&self) -> Model {
        api_model(&self.lock())
    }

    fn publish_states(&self) {
        let states = self.lock().records.iter().map(|(k, r)| (k.clone(), r.state.clone())).collect();
        self.store.set_release_states(states);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The API source's part of the model: the policies the release API owns.
fn api_model(inner: &Inner) -> Model {
    let policies = inner
        .api
        .iter()
        .map(|(k, p)| {
            let policy = ReleasePolicy {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                spec: p.spec.clone(),
                state: Default::default(),
            };
            (k.clone(), policy)
        })
        .collect();
    Model { policies, ..Default::default() }
}

/// What a spec the API stores itself must pass: its own checks, and no Deployment work (there are no Deployments
/// outside a cluster).
fn local_spec_checks(spec: &ReleasePolicySpec) -> Result<(), ReleaseError> {
    spec.validate()?;
    spec.check_without_deployments("the release API")?;
    Ok(())
}

fn canary_key(key: &ObjectKey, r: &Record) -> VersionKey {
    VersionKey::new(&key.namespace, &r.spec.service, &r.spec.canary)
}

#[path = "controller_replicas.rs"]
mod replicas_view;

#[path = "plan.rs"]
pub mod plan;

#[path = "controller_cluster.rs"]
mod in_cluster;

impl Inner {
    /// Stores the new state first; only then does it become the state in memory (and so what is served).
    fn commit(
        &mut self,
        records: BTreeMap<ObjectKey, Record>,
        api: Option<BTreeMap<ObjectKey, StoredPolicy>>,
    ) -> Result<(), PersistError> {
        let api = api.unwrap_or_else(|| self.api.clone());
        if let Some(dir) = &self.dir {
            let persisted = Persisted {
                format: 0,
                api_policies: api.iter().map(|(k, p)| (k.to_string(), p.clone())).collect(),
                records: records.iter().map(|(k, r)| (k.to_string(), r.clone())).collect(),
            };
            dir.save(&persisted)?;
        }
        self.records = records;
        self.api = api;
        Ok(())
    }
}
