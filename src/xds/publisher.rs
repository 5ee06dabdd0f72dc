//! The snapshot publisher: store changes → translate (off the async threads) → `watch` of the newest snapshot.
//!
//! The first change after a quiet period is translated at once (no delay for a lone change); changes arriving
//! within `min_interval` of the last publish are coalesced into the next one, so a burst costs one translation
//! per interval at most. An inconsistent snapshot is refused and the last good one keeps serving.
//!
//! Metrics: `pilot_debounce_time` (a change's wait before its build starts); each snapshot carries when its change
//! was seen (`changed_at`), where each proxy's `pilot_proxy_convergence_time` starts.

use super::limits::Limits;
use super::snapshot::Snapshot;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Starts publishing; the receiver holds `None` until every source has loaded.
pub fn spawn(store: Store, min_interval: Duration, limits: Limits) -> watch::Receiver<Option<Arc<Snapshot>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(store, tx, min_interval, limits));
    rx
}

async fn run(store: Store, tx: watch::Sender<Option<Arc<Snapshot>>>, min_interval: Duration, limits: Limits) {
    store.wait_ready().await;
    let mut models = store.subscribe();
    let mut version = 0u64;
    let mut previous: Option<Arc<Snapshot>> = None;
    let mut changed_at = Instant::now();
    let mut conflicts = ConflictLog::default();
    loop {
        let model = models.borrow_and_update().clone();
        if previous.as_ref().is_none_or(|p| !p.model.only_endpoints_differ(&model)) {
            conflicts.update(&model);
        }
        let started = Instant::now();
        crate::telemetry::xds::get().debounced(started - changed_at);
        version += 1;
        let prev = previous.clone();
        let built = tokio::task::spawn_blocking(move || Snapshot::build(version, model, prev.as_deref())).await;
        match built {
            Ok(Ok(mut snapshot)) => {
                snapshot.changed_at = changed_at.into_std();
                let snapshot = Arc::new(snapshot);
                tracing::info!(
                    version,
                    clusters = snapshot.clusters().len(),
                    endpoints = snapshot.endpoints().len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "snapshot published"
                );
                tx.send_replace(Some(snapshot.clone()));
                if previous.as_ref().is_none_or(|p| !Arc::ptr_eq(p.clusters(), snapshot.clusters())) {
                    for w in limits.check_size(&crate::xds::limits::ConfigSize::shared(&snapshot)) {
                        tracing::warn!(version, "config size: {w}");
                    }
                }
                previous = Some(snapshot);
            }
            Ok(Err(e)) => tracing::error!(version, error = %e, "snapshot refused; the last good config keeps serving"),
            // The runtime is shutting down: nothing to publish to, and nothing went wrong.
            Err(e) if e.is_cancelled() => {
                tracing::debug!(version, "translation cancelled: shutting down");
                return;
            }
            Err(e) => tracing::error!(version, error = %e, "translation panicked; the last good config keeps serving"),
        }
        if models.changed().await.is_err() || tx.is_closed() {
            return;
        }
        changed_at = Instant::now();
        tokio::time::sleep_until(started + min_interval).await;
    }
}

/// Reports conflicts between routing objects of the merged model (every source's objects together): each new
/// conflict is logged once, naming both objects and where they are, and `sluice_config_conflicts{kind}` counts
/// the current ones. The model still serves: the older object wins (see [`crate::model::mesh::conflicts`]).
#[derive(Default)]
struct ConflictLog {
    known: std::collections::BTreeSet<String>,
}

impl ConflictLog {
    fn update(&mut self, model: &crate::model::Model) {
        let now = crate::model::mesh::conflicts(model);
        let mut counts = std::collections::BTreeMap::from([("VirtualService", 0u32), ("DestinationRule", 0)]);
        let mut known = std::collections::BTreeSet::new();
        for c in &now {
            *counts.entry(c.kind).or_default() += 1;
            let message = c.message();
            if !self.known.contains(&message) {
                tracing::warn!(kind = c.kind, object = %c.loser.0, field = %c.field, "conflict: {message}");
            }
            known.insert(message);
        }
        for (kind, n) in counts {
            metrics::gauge!(crate::telemetry::names::CONFIG_CONFLICTS, "kind" => kind).set(f64::from(n));
        }
        self.known = known;
    }
}
