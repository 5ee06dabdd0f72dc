//! The ReleasePolicy status writer: the release controller's view of each Kubernetes-owned release, written to
//! the object's `status` subresource.
//!
//! ```text
//!  ReleaseController ──(store model changes: release states, endpoints; a 1 s tick: proxy ACKs)──┐
//!  index: spec + metadata.generation per policy ──────────────────────────────────────────────────┤
//!                                                                                                  ▼
//!             status changed since the last write? ─▶ merge PATCH …/releasepolicies/NAME/status
//! ```
//! A status is written only for a release whose controller spec equals the indexed spec, so `observedGeneration`
//! is the generation of the spec the status describes (never a newer one the controller has not applied yet).
//! Beside phase and step it stores the record's [`progress::Progress`] (weight, step start, analysis count): the state the
//! other replicas serve and a new leader goes on from.
//! The traffic numbers of the REST view (rps, success rate, latencies) and the replicas' report ages are left out:
//! they change every second, and a status write is an API server write (and a watch event for every client). A
//! failed write is logged, counted, and retried at the next tick.

use super::index::Observed;
use super::progress;
use super::{RELEASE_POLICY_STATUS, SOURCE, convert};
use crate::model::ObjectKey;
use crate::release::{Record, ReleaseController, ReleaseView};
use crate::source::kube::crd::PolicyStatus;
use crate::telemetry::names;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// How often proxy ACK counts (which change no model) are looked at.
const TICK: Duration = Duration::from_secs(1);

/// Writes the status of every ReleasePolicy the cluster owns while `leader` is true, until `stop` turns true.
pub async fn write_status(
    client: Client,
    releases: ReleaseController,
    mut observed: watch::Receiver<Observed>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    debug_assert_eq!(RELEASE_POLICY_STATUS.resource, "releasepolicies/status");
    let ar = convert::policy_resource();
    let mut models = releases.store().subscribe();
    let mut written: BTreeMap<ObjectKey, Value> = BTreeMap::new();
    loop {
        if *leader.borrow_and_update() {
            let wanted = statuses(&releases, &observed.borrow_and_update());
            written.retain(|k, _| wanted.contains_key(k));
            for (key, status) in wanted {
                if written.get(&key) == Some(&status) {
                    continue;
                }
                let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &ar);
                let patch = serde_json::json!({ "status": merge_patch(written.get(&key), &status) });
                match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {
                        tracing::info!(release = %key, "ReleasePolicy status written");
                        written.insert(key, status);
                    }
                    Err(error) => {
                        tracing::warn!(release = %key, %error, "writing ReleasePolicy status failed; will retry");
                        metrics::counter!(names::KUBE_STATUS_ERRORS).increment(1);
                        written.remove(&key);
                    }
                }
            }
        } else {
            // Another replica writes; when this one leads again, it writes every status afresh.
            written.clear();
        }
        tokio::select! {
            changed = models.changed() => if changed.is_err() { return },
            changed = observed.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The status each Kubernetes-owned release should have, as JSON, for the releases whose controller spec is the
/// indexed one.
fn statuses(releases: &ReleaseController, observed: &Observed) -> BTreeMap<ObjectKey, Value> {
    observed
        .iter()
        .filter_map(|(key, (spec, generation))| {
            let record = releases.record(key)?;
            let view = releases.get(key).ok().filter(|v| v.status.source == SOURCE && &v.spec == spec)?;
            // Read apart, so a step may fall between: write only a consistent pair (the step's change wakes us).
            if (view.status.phase, view.status.step, &view.spec)
                != (record.state.phase, record.state.step, &record.spec)
            {
                return None;
            }
            Some((key.clone(), to_json(policy_status(view, &record, *generation))))
        })
        .collect()
}

/// The CRD status of a release view: the controller's status without the per-second numbers (traffic, the age of
/// each replica's report), with the record's progress.
pub fn policy_status(view: ReleaseView, record: &Record, generation: Option<i64>) -> PolicyStatus {
    let mut release = view.status;
    release.proxies.replicas.iter_mut().for_each(|r| r.age_ms = 0);
    for v in &mut release.versions {
        (v.rps, v.success_rate, v.latency_p50_ms, v.latency_p99_ms) = (None, None, None, None);
    }
    // Likewise the age of each replica's report (it grows every second: a write every second otherwise).
    for r in &mut release.proxies.replicas {
        r.age_ms = 0;
    }
    PolicyStatus { release, observed_generation: generation, progress: progress::progress(record), rollout: None }
}

fn to_json(status: PolicyStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`: keys of `old` objects that `new` lacks become
/// `null` (a merge patch deletes them), so a renamed version leaves no stale weight behind.
fn merge_patch(old: Option<&Value>, new: &Value) -> Value {
    match (old, new) {
        (Some(Value::Object(old)), Value::Object(new)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in new {
                out.insert(k.clone(), merge_patch(old.get(k), v));
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_removes_what_is_gone_and_replaces_lists() {
        let old = json!({"phase": "Progressing", "weights": {"v1": 8000, "v3": 2000}, "conditions": [{"a": 1}]});
        let new = json!({"phase": "Promoted", "weights": {"v1": 0, "v4": 10000}, "conditions": []});
        let patch = merge_patch(Some(&old), &new);
        assert_eq!(
            patch,
            json!({"phase": "Promoted", "weights": {"v1": 0, "v4": 10000, "v3": null}, "conditions": []})
        );
        assert_eq!(merge_patch(None, &new), new);
    }
}
