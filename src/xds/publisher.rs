//! The snapshot publisher: store changes → translate (off the async threads) → `watch` of the newest snapshot.
//!
//! The first change after a quiet period is translated at once (no delay for a lone change); changes arriving
//! within `min_interval` of the last publish are coalesced into the next one, so a burst costs one translation
//! per interval at most. An inconsistent snapshot is refused and the last good one keeps serving.
//!
//! Metrics: `pilot_debounce_time` (a change's wait before its build starts); each snapshot carries when its change
//! was seen (`changed_at`), where each proxy's `pilot_proxy_convergence_time` starts.

use super::snapshot::Snapshot;
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Starts publishing; the receiver holds `None` until every source has loaded.
pub fn spawn(store: Store, min_interval: Duration) -> watch::Receiver<Option<Arc<Snapshot>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(store, tx, min_interval));
    rx
}

async fn run(store: Store, tx: watch::Sender<Option<Arc<Snapshot>>>, min_interval: Duration) {
    store.wait_ready().await;
    let mut models = store.subscribe();
    let mut version = 0u64;
    let mut previous: Option<Arc<Snapshot>> = None;
    let mut changed_at = Instant::now();
    loop {
        let model = models.borrow_and_update().clone();
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
                previous = Some(snapshot);
            }
            Ok(Err(e)) => tracing::error!(version, error = %e, "snapshot refused; the last good config keeps serving"),
            Err(e) => tracing::error!(version, error = %e, "translation panicked; the last good config keeps serving"),
        }
        if models.changed().await.is_err() || tx.is_closed() {
            return;
        }
        changed_at = Instant::now();
        tokio::time::sleep_until(started + min_interval).await;
    }
}
