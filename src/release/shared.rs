//! Releases that several replicas share (Kubernetes mode): one replica, the Lease holder, drives them; the others
//! serve the state it stored.
//!
//! ```text
//!  leader:    ReleaseController ── timed steps, analysis, verbs ──▶ record ──▶ status writer ──▶ ReleasePolicy status
//!                                                                                                      │ watch
//!  follower:  stored record (status of the spec's generation) ◀────────────────────────────────────────┘
//!               └─▶ adopted as is: same phase, step, weight, step start, analysis count; no ticks of its own;
//!                   verbs refused, naming the leader
//!  takeover:  the new leader adopts the stored records once, then drives them on from there
//! ```
//! The source of truth is the leader's controller, persisted to the status subresource; a follower never decides
//! anything about a shared release, so two replicas cannot step one release twice. A follower still follows spec
//! edits at once (a respec is deterministic), and takes the leader's result when its status arrives.

use super::machine::Record;
use super::replicas::Peers;
use crate::model::ObjectKey;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;

/// Stored records by release: what the leader last wrote, only where it describes the spec now read.
pub type StoredRecords = BTreeMap<ObjectKey, Record>;

/// How this replica learns who drives the releases of a shared source.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The store part whose releases are shared (`kube`).
    pub source: String,
    /// Whether this replica holds the Lease.
    pub leading: watch::Receiver<bool>,
    /// Who holds it (for the refusal a follower answers a verb with).
    pub holder: watch::Receiver<Option<String>>,
    /// The records the leader stored.
    pub stored: watch::Receiver<StoredRecords>,
    /// This replica's name (its Lease identity).
    pub identity: String,
    /// The other replicas' reports (their proxies and traffic; see [`super::replicas`]).
    pub peers: watch::Receiver<Peers>,
    /// How long the Lease lasts without renewal: a new leader is known within about this long after the old one
    /// dies, which bounds how long a follower retries forwarding a change.
    pub lease: Duration,
}

impl Shared {
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    pub fn holder(&self) -> Option<String> {
        self.holder.borrow().clone()
    }

    /// Where the leader's Release API listens, from its report (`None`: no leader, or it reported no address).
    pub fn leader_api_url(&self) -> Option<String> {
        let holder = self.holder()?;
        self.peers.borrow().get(&holder).and_then(|r| r.api_url.clone())
    }

    /// Waits (at most `within`) until the stored records hold `wanted` for `key`, or a later record the controller
    /// moved on to (`current`, when it is stored and is not `before`, what was stored when the change began: the
    /// status writer stores only the newest). False on timeout, or once this replica no longer leads (a follower's
    /// controller adopts the stored record, so a change not yet stored is then lost).
    ///
    /// The leader's status writer wakes on the model change a mutation publishes and PATCHes the status; its own
    /// index reads the status back into `stored`. So this returns once the change is where a new leader reads it.
    pub async fn until_stored(
        &self,
        key: &ObjectKey,
        (before, wanted): (Option<&Record>, &Record),
        current: impl Fn() -> Option<Record>,
        within: Duration,
    ) -> bool {
        let mut stored = self.stored.clone();
        let held = |stored: &StoredRecords| {
            let Some(s) = stored.get(key) else { return false };
            s == wanted || (Some(s) != before && current().is_some_and(|c| &c == s))
        };
        let wait = async {
            loop {
                if held(&stored.borrow_and_update()) {
                    return true;
                }
                if !self.leading() {
                    return false;
                }
                // Looked at again on each stored change, and now and then for the controller reaching what is
                // stored or this replica ceasing to lead.
                tokio::select! {
                    changed = stored.changed() => if changed.is_err() { return false },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        };
        tokio::time::timeout(within, wait).await.unwrap_or(false)
    }
}

/// Replaces the record of each release in `keys` by its stored one, where that one is for the same spec; true
/// when a record changed. Pure: the controller calls it under its lock.
pub fn adopt(records: &mut BTreeMap<ObjectKey, Record>, keys: &BTreeSet<ObjectKey>, stored: &StoredRecords) -> bool {
    let mut changed = false;
    for key in keys {
        let (Some(record), Some(s)) = (records.get_mut(key), stored.get(key)) else { continue };
        if record.spec == s.spec && record != s {
            *record = s.clone();
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pause, Phase, ReleasePolicySpec, Step};

    fn spec(weight: u32) -> ReleasePolicySpec {
        ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            steps: vec![Step::SetWeight(weight), Step::Pause(Pause { duration: Some("10s".into()) })],
            ..Default::default()
        }
    }

    #[test]
    fn only_shared_releases_with_the_same_spec_take_the_stored_record() {
        let (a, b, c) = (ObjectKey::new("default", "a"), ObjectKey::new("default", "b"), ObjectKey::new("x", "c"));
        let mut records: BTreeMap<ObjectKey, Record> =
            [&a, &b, &c].into_iter().map(|k| (k.clone(), Record::new(spec(1000), 0))).collect();
        let mut ahead = Record::new(spec(1000), 0);
        ahead.state.step = 2;
        ahead.state.canary_weight = Some(4000);
        ahead.step_started_ms = 12_000;
        let mut other_spec = Record::new(spec(2000), 0);
        other_spec.state.phase = Phase::Promoted;
        let stored =
            StoredRecords::from([(a.clone(), ahead.clone()), (b.clone(), other_spec), (c.clone(), ahead.clone())]);
        let keys = BTreeSet::from([a.clone(), b.clone()]);
        assert!(adopt(&mut records, &keys, &stored));
        assert_eq!(records[&a], ahead, "a shared release follows the leader's record");
        assert_eq!(records[&b], Record::new(spec(1000), 0), "a status for another spec is not applied");
        assert_eq!(records[&c], Record::new(spec(1000), 0), "a release of another source is this replica's own");
        assert!(!adopt(&mut records, &keys, &stored), "adopting again changes nothing");
    }

    /// Polls the controller's record until `f` holds (the run loop reacts to channel changes asynchronously).
    async fn until(c: &crate::release::ReleaseController, key: &ObjectKey, f: impl Fn(&Record) -> bool) -> Record {
        for _ in 0..200 {
            if let Some(r) = c.record(key).filter(|r| f(r)) {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("record never matched: {:?}", c.record(key));
    }

    #[tokio::test]
    async fn a_follower_serves_the_stored_record_refuses_verbs_and_goes_on_once_it_leads() {
        use crate::model::{Model, ReleasePolicy};
        use crate::release::{ReleaseController, ReleaseError, Verb};
        let store = crate::store::Store::new();
        let (_snapshots_tx, snapshots) = watch::channel(None);
        let registry = crate::xds::Registry::new();
        let c = ReleaseController::new(store.clone(), registry, snapshots, None, crate::telemetry::TrafficStats::new())
            .unwrap();
        let key = ObjectKey::new("default", "reviews");
        // The leader stored: step 1 (a 10 s pause) begun 60 s ago, the weight set by hand to 3000.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut stored = Record::new(spec(1000), now - 60_000);
        stored.state.canary_weight = Some(3000);
        let (lead, leading) = watch::channel(false);
        let (_holder_tx, holder) = watch::channel(Some("replica-a".to_string()));
        let (_stored_tx, stored_rx) = watch::channel(StoredRecords::from([(key.clone(), stored.clone())]));
        let (_peers_tx, peers) = watch::channel(Peers::new());
        let identity = "replica-b".to_string();
        let lease = Duration::from_secs(2);
        c.share(Shared { source: "kube".into(), leading, holder, stored: stored_rx, identity, peers, lease });
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(c.clone().run(stop));
        let policy = ReleasePolicy {
            name: "reviews".into(),
            namespace: "default".into(),
            spec: spec(1000),
            state: Default::default(),
        };
        store.set_part("kube", Model { policies: imbl::OrdMap::unit(key.clone(), policy), ..Default::default() });

        let r = until(&c, &key, |r| r.state.canary_weight == Some(3000)).await;
        assert_eq!(r, stored, "the follower serves the stored record, its pause long over but not ended");
        match c.act(&key, Verb::Promote) {
            Err(ReleaseError::NotLeader { leader, .. }) => assert_eq!(leader.as_deref(), Some("replica-a")),
            other => panic!("a follower took a verb: {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(c.record(&key).unwrap(), stored, "still no step of its own");

        lead.send_replace(true);
        let r = until(&c, &key, |r| r.state.step == 2).await;
        assert_eq!(r.canary_weight(), 3000, "the new leader ends the overdue pause and keeps the stored weight");
        assert!(r.step_started_ms >= now, "the next step starts at takeover");
        assert_eq!(c.act(&key, Verb::Promote).unwrap().status.phase, Phase::Promoted);
    }
}
