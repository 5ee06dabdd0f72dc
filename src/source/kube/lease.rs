//! Leader election on a `coordination.k8s.io/v1` Lease: one replica leads (drives the cluster's releases and
//! writes their status, see [`crate::release::shared`]), every replica serves xDS. Besides whether this replica
//! leads, it publishes who does, so a follower's refusal of a verb can name the leader.
//!
//! ```text
//!  every duration/3:  GET lease ─ absent ──────────────▶ create (holder = me)        ─▶ leading
//!                               ─ held by me ──────────▶ patch renewTime              ─▶ leading
//!                               ─ expired (renewTime + leaseDurationSeconds < now) ─▶ patch holder = me,
//!                                                           with the read resourceVersion as precondition
//!                               ─ held by another ─────▶ not leading
//! ```
//! A leader that cannot renew within the lease duration stops leading by itself before another replica may take
//! over, so two replicas never lead at once while their clocks agree. When the leader stops, another replica takes
//! over within one lease duration plus one retry period (duration/3).

use super::LEASES;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Which Lease to contend for, as whom, for how long.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name in `holderIdentity` (the pod name in a cluster).
    pub identity: String,
    pub duration: Duration,
}

/// Contends for the lease until `stop` turns true; `leading` says whether this replica holds it, `holder` who does
/// (as last read; `None` while nobody does or the Lease cannot be read), for a follower to name the leader.
pub async fn lead(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    holder: watch::Sender<Option<String>>,
    mut stop: watch::Receiver<bool>,
) {
    debug_assert_eq!((LEASES.group, LEASES.resource), ("coordination.k8s.io", "leases"));
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let retry = config.duration / 3;
    let mut renewed: Option<Instant> = None;
    loop {
        let held = match try_hold(&api, &config).await {
            Ok(by) => {
                let held = by.as_deref() == Some(config.identity.as_str());
                renewed = held.then(Instant::now);
                holder.send_if_modified(|h| std::mem::replace(h, by.clone()) != by);
                held
            }
            Err(error) => {
                tracing::warn!(lease = %config.name, %error, "lease request failed; will retry");
                // Keep leading only while the last renewal still holds.
                let held = renewed.is_some_and(|at| at.elapsed() < config.duration);
                let by = held.then(|| config.identity.clone());
                holder.send_if_modified(|h| std::mem::replace(h, by.clone()) != by);
                held
            }
        };
        leading.send_if_modified(|l| {
            if *l != held {
                tracing::info!(lease = %config.name, identity = %config.identity, leading = held, "leadership changed");
            }
            std::mem::replace(l, held) != held
        });
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => {
                leading.send_replace(false);
                holder.send_replace(None);
                return;
            }
        }
    }
}

/// One round: takes or renews the lease if it is free, expired or ours; returns who holds it now (this replica's
/// identity when it does; `None` when a race was lost and the winner is not known yet).
async fn try_hold(api: &Api<Lease>, config: &LeaseConfig) -> Result<Option<String>, kube::Error> {
    let me = Some(config.identity.clone());
    let now = Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    // By code, not reason: emulators word the 404 reason differently from `NotFound`.
    let found = match api.get(&config.name).await {
        Ok(lease) => Some(lease),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    let Some(lease) = found else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(me),
            // Another replica created it first.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let held_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
    let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + held_for < now) || spec.holder_identity.is_none();
    if !ours && !expired {
        return Ok(spec.holder_identity);
    }
    let mut patch = serde_json::json!({
        // A precondition on a real API server: a replica that read an older version gets 409.
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": {"holderIdentity": config.identity, "leaseDurationSeconds": seconds, "renewTime": MicroTime(now)},
    });
    if !ours {
        patch["spec"]["acquireTime"] = serde_json::to_value(MicroTime(now)).unwrap_or_default();
        patch["spec"]["leaseTransitions"] = (spec.lease_transitions.unwrap_or(0) + 1).into();
    }
    match api.patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(me),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
