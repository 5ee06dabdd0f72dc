//! What the release controller does for replicas acting as one (Kubernetes mode): its proxies' count merged with
//! the other replicas' reports, the report it gives them, and changes answered only once they are stored in the
//! cluster. A child module of the controller, so it reads the controller's own state.

use super::*;

impl ReleaseController {
    /// Proxies connected to this replica.
    pub fn connected(&self) -> usize {
        self.registry.connected()
    }

    /// Applies a weight or verb and answers once it holds beyond this process: file-mode releases once the state
    /// dir is synced (as [`Self::set_weight`] and [`Self::act`]); a shared release, on the leader, once its record
    /// is in the ReleasePolicy status the other replicas read (so a new leader taking over right after the answer
    /// goes on from it; see [`Shared::until_stored`]). REST and gRPC both change releases through here.
    pub async fn change(&self, key: ObjectKey, change: Change) -> Result<ReleaseView, ReleaseError> {
        let k = key.clone();
        let before = self.shared.get().and_then(|s| s.stored.borrow().get(&key).cloned());
        let (view, record) = self
            .blocking(move |c| {
                let view = match change {
                    Change::Weight(w) => c.set_weight(&k, w)?,
                    Change::Act(verb) => c.act(&k, verb)?,
                };
                Ok((view, c.record(&k)))
            })
            .await?;
        let Some(shared) = self.shared.get().filter(|_| self.is_shared(&key)) else { return Ok(view) };
        let Some(record) = record else { return Ok(view) };
        let started = std::time::Instant::now();
        match shared.until_stored(&key, (before.as_ref(), &record), || self.record(&key), STORE_WAIT).await {
            true => {
                let waited_ms = started.elapsed().as_millis() as u64;
                tracing::info!(release = %key, ?change, waited_ms, "release change stored in the cluster");
                Ok(view)
            }
            false => Err(ReleaseError::NotStored { release: key, waited: started.elapsed() }),
        }
    }

    /// The shared source and who leads it (Kubernetes mode), for forwarding a change to the leader.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.get()
    }

    pub(super) fn is_shared(&self, key: &ObjectKey) -> bool {
        self.shared.get().is_some_and(|s| self.store.policy_source(key).as_deref() == Some(s.source.as_str()))
    }

    /// Connected proxies, and how many hold a snapshot that carries this release's current state; for a shared
    /// release, every replica's proxies as their reports say (see [`super::replicas::merge_proxies`]).
    pub(super) fn proxies(&self, key: &ObjectKey, record: &Record) -> Proxies {
        let local = self.local_proxies(key, record);
        match self.shared.get() {
            Some(s) if self.is_shared(key) => {
                let state = replicas::fingerprint(&record.spec, &record.state);
                replicas::merge_proxies(&s.identity, local, key, &state, &s.peers.borrow(), now_ms())
            }
            _ => local,
        }
    }

    /// This replica's own proxies for a release (what it reports to the others).
    pub fn local_proxies(&self, key: &ObjectKey, record: &Record) -> Proxies {
        let snapshot = self.snapshots.borrow().clone();
        let total = self.registry.connected();
        let current = snapshot.as_ref().filter(|s| {
            s.model.policies.get(key).is_some_and(|p: &ReleasePolicy| p.state == record.state && p.spec == record.spec)
        });
        let service = crate::translate::service_fqdn(&key.namespace, &record.spec.service);
        let refused = self.registry.refusals_of(&service);
        match current {
            Some(s) => {
                let (acked, total, pending) = self.registry.holding(s.version, &service, replicas::MAX_PENDING);
                Proxies { acked, total, refused, pending, replicas: Vec::new() }
            }
            None => {
                let pending = vec![format!("{total} proxies (this replica has not built the release's state yet)")];
                Proxies {
                    acked: 0,
                    total,
                    refused,
                    pending: if total > 0 { pending } else { Vec::new() },
                    replicas: Vec::new(),
                }
            }
        }
    }

    /// What this replica reports to the others about the releases it serves: per release, the state's
    /// fingerprint and its own proxies' count (see [`super::replicas`]).
    pub fn report_releases(&self) -> BTreeMap<String, replicas::ReleaseProxies> {
        let records = self.lock().records.clone();
        records
            .iter()
            .map(|(key, record)| {
                let proxies = self.local_proxies(key, record);
                let state = replicas::fingerprint(&record.spec, &record.state);
                (key.to_string(), replicas::ReleaseProxies { state, proxies })
            })
            .collect()
    }
}
