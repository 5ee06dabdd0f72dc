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
use crate::model::ObjectKey;
use std::collections::{BTreeMap, BTreeSet};
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
}

impl Shared {
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    pub fn holder(&self) -> Option<String> {
        self.holder.borrow().clone()
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
}
