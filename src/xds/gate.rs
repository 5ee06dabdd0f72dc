//! First configs served a bounded number at a time ([`Limits::max_initial_syncs`]).
//!
//! When thousands of sidecars connect at once (a control-plane restart, a node pool coming up), each one's first
//! config is megabytes. Served all at once, every stream advances a little at a time: each holds a partly sent
//! config on Sluice's side and a partly read one on the proxy's for the whole storm, and the proxies' HTTP/2
//! keepalives go unanswered under the load, so connections drop and syncs start over. Served a bounded number at a
//! time, each sync takes a fraction of the time and the others wait their turn, holding only their first request.
//!
//! ```text
//!  stream accepted ─▶ first snapshot? ─▶ enter(): waits for a place (FIFO) ─▶ pushes ─▶ synced: place freed
//!                                                                                    └▶ or HOLD passed
//! ```
//! A proxy that does not read (or syncs slowly) keeps its place for [`HOLD`] at most, so it cannot hold others
//! back. Only the first config goes through the gate: later changes are pushed to every stream at once.
//!
//! [`Limits::max_initial_syncs`]: super::limits::Limits::max_initial_syncs

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The longest a stream keeps its place before it is synced.
pub const HOLD: Duration = Duration::from_secs(5);

/// Places for streams receiving their first config; cheap to clone.
#[derive(Clone, Debug)]
pub struct SyncGate {
    places: Option<Arc<Semaphore>>,
}

impl SyncGate {
    /// `max` places (0: no bound).
    pub fn new(max: usize) -> Self {
        Self { places: (max > 0).then(|| Arc::new(Semaphore::new(max))) }
    }

    /// Waits for a place, first come first served.
    pub async fn enter(&self) -> Place {
        let permit = match &self.places {
            Some(places) => places.clone().acquire_owned().await.ok(),
            None => None,
        };
        Place { _permit: permit, until: Instant::now() + HOLD }
    }

    /// Places free now (`None`: no bound).
    pub fn available(&self) -> Option<usize> {
        self.places.as_ref().map(|p| p.available_permits())
    }
}

/// A stream's place in the gate, given back when dropped.
#[derive(Debug)]
pub struct Place {
    _permit: Option<OwnedSemaphorePermit>,
    /// When the place is given back even if the stream is not synced.
    pub until: Instant,
}

/// Where a stream is with respect to the gate.
#[derive(Debug)]
pub(crate) enum Turn {
    /// Not yet entered: nothing is pushed.
    Waiting,
    Holding(Place),
    /// Synced, or held too long: pushes are never gated again.
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn places_are_bounded_and_given_back_in_order() {
        let gate = SyncGate::new(2);
        let a = gate.enter().await;
        let _b = gate.enter().await;
        assert_eq!(gate.available(), Some(0));
        let third = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished(), "a third stream waits while two hold places");
        drop(a);
        let c = third.await.unwrap();
        assert_eq!(gate.available(), Some(0));
        assert_eq!(c.until - Instant::now(), HOLD);
        assert_eq!(SyncGate::new(0).available(), None, "0 means no bound");
    }
}
