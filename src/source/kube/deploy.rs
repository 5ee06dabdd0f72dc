//! The Deployment task: creates the canary's Deployment (`spec.deploy`), reports its rollout, and scales or
//! deletes the loser's (`spec.finalize.loser`) once no proxy routes to it. Only the Lease holder acts.
//!
//! ```text
//!  every second, and on model / index / leadership changes, while leading:
//!   per cluster-owned ReleasePolicy with spec.deploy or a loser action (its controller spec = the indexed one):
//!     LIST Deployments of its namespace ─▶ rollout::behind_service / spec.deploy.from: the stable Deployment
//!       Pending/Progressing/Paused, canary Deployment absent ─▶ POST rollout::canary_copy (ownerReference: policy)
//!       canary Deployment ─▶ status.rollout numbers (desired, updated, ready) and `RolledOut`
//!       a loser decided (rollout::loser) and every connected proxy ACKed the release's current state
//!         ScaleToZero ─▶ merge PATCH spec.replicas: 0 (skipped when already 0)
//!         Delete ─────▶ DELETE with the uid as precondition (skipped when gone)
//!     status.rollout changed ─▶ merge PATCH …/releasepolicies/NAME/status {rollout}
//! ```
//! Every write is decided from what the API server holds now, so running it again (a restart, a new leader) does
//! nothing twice: a Deployment that exists is not created, one at zero is not patched, one gone is not deleted.
//! Sluice touches only the canary Deployment it created (owned by the policy; an existing one it does not own is
//! reported and left alone) and the loser's Deployment when the policy names an action. Weight is not this task's
//! business: translate gives a version without ready endpoints no traffic, and the release status says so.

use super::index::{Observed, Owners};
use super::rollout::{self, LoserStatus, Rollout, condition};
use super::{DEPLOYMENTS, SOURCE, convert};
use crate::model::{Loser, ObjectKey, ReleasePolicySpec};
use crate::release::{Condition, ReleaseController, ReleaseView};
use crate::telemetry::names;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// How often Deployments are looked at while a policy needs them (rollout progress changes no model).
pub const TICK: Duration = Duration::from_secs(1);

/// Runs the Deployment work of every cluster-owned ReleasePolicy while `leader` is true, until `stop` turns true.
pub async fn manage_deployments(
    client: Client,
    releases: ReleaseController,
    mut observed: watch::Receiver<Observed>,
    mut owners: watch::Receiver<Owners>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    debug_assert_eq!((DEPLOYMENTS.group, DEPLOYMENTS.resource), ("apps", "deployments"));
    let mut models = releases.store().subscribe();
    let mut written: BTreeMap<ObjectKey, Rollout> = BTreeMap::new();
    let mut handled = Handled::new();
    loop {
        if *leader.borrow_and_update() {
            let work = work(&releases, &observed.borrow_and_update(), &owners.borrow_and_update());
            written.retain(|k, _| work.iter().any(|(key, _, _)| key == k));
            handled.retain(|k, _| work.iter().any(|(key, _, _)| key == k));
            for (key, view, uid) in work {
                let pass = reconcile(&client, &releases, &key, &view, uid.as_deref(), &mut handled).await;
                let Some(rollout) = pass else { continue };
                if written.get(&key) != Some(&rollout) && write_rollout(&client, &key, &rollout).await {
                    written.insert(key, rollout);
                }
            }
        } else {
            // Another replica acts; when this one leads again, it reads everything afresh.
            written.clear();
            handled.clear();
        }
        tokio::select! {
            changed = models.changed() => if changed.is_err() { return },
            changed = observed.changed() => if changed.is_err() { return },
            changed = owners.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Loser actions done since this replica leads, per release: reported as done without looking again (a deleted
/// or scaled-down loser may no longer be found behind the Service). After a restart it is found done again.
type Handled = BTreeMap<ObjectKey, (LoserStatus, Condition)>;

/// The cluster-owned releases with Deployment work, whose controller spec is the indexed one.
fn work(
    releases: &ReleaseController,
    observed: &Observed,
    owners: &Owners,
) -> Vec<(ObjectKey, ReleaseView, Option<String>)> {
    observed
        .iter()
        .filter(|(_, (spec, _))| spec.deploy.is_some() || spec.loser() != Loser::Keep)
        .filter_map(|(key, (spec, _))| {
            let view = releases.get(key).ok().filter(|v| v.status.source == SOURCE && &v.spec == spec)?;
            Some((key.clone(), view, owners.get(key).cloned()))
        })
        .collect()
}

/// One pass over one release; `None` when the Deployments could not be read (logged, retried next tick).
async fn reconcile(
    client: &Client,
    releases: &ReleaseController,
    key: &ObjectKey,
    view: &ReleaseView,
    uid: Option<&str>,
    handled: &mut Handled,
) -> Option<Rollout> {
    let api = Api::<Deployment>::namespaced(client.clone(), &key.namespace);
    let deployments = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(release = %key, %error, "listing Deployments failed; will retry");
            metrics::counter!(names::KUBE_DEPLOYMENT_ERRORS).increment(1);
            return None;
        }
    };
    let spec = &view.spec;
    let model = releases.store().model();
    let no_selector = BTreeMap::new();
    let service = model.services.get(&ObjectKey::new(&key.namespace, &spec.service));
    let selector = service.map_or(&no_selector, |s| &s.selector);
    let stable = match spec.deploy.as_ref().and_then(|d| d.from.as_deref()) {
        Some(name) => deployments
            .iter()
            .find(|d| d.name_any() == name)
            .ok_or_else(|| format!("Deployment {name} (spec.deploy.from) not found")),
        None => rollout::behind_service(&deployments, spec, selector, &spec.stable),
    };
    let mut out = Rollout::default();
    // The canary's Deployment: the one this policy owns for this canary version, else one to create from the stable.
    let owned = |d: &&Deployment| uid.is_some_and(|u| rollout::owned_by(d, u) && rollout::runs(d, spec, &spec.canary));
    let mut canary: Option<Deployment> = None;
    if spec.deploy.is_some() {
        canary = match (deployments.iter().find(owned), &stable, uid) {
            (Some(d), _, _) => Some(d.clone()),
            (None, Err(why), _) => {
                out.conditions.push(condition("Deployed", false, "NoStableDeployment", why.clone()));
                None
            }
            (None, Ok(_), None) => {
                let msg = "the ReleasePolicy has no metadata.uid to own a Deployment with";
                out.conditions.push(condition("Deployed", false, "NoOwner", msg));
                None
            }
            (None, Ok(stable), Some(uid)) => create_canary(&api, &deployments, stable, key, view, uid, &mut out).await,
        };
        if let Some(d) = &canary {
            out.deployment = Some(d.name_any());
            out.conditions.push(condition(
                "Deployed",
                true,
                "Owned",
                format!("Deployment {} is this policy's", d.name_any()),
            ));
            rollout::progress(&mut out, d);
        }
    }
    if let Some(version) = rollout::loser(view)
        && spec.loser() != Loser::Keep
    {
        let target = if version == spec.canary && spec.deploy.is_some() {
            canary.as_ref().ok_or_else(|| "this policy owns no canary Deployment".to_string())
        } else if version == spec.stable {
            stable.clone()
        } else {
            rollout::behind_service(&deployments, spec, selector, version)
        };
        let action = spec.loser();
        let (status, done) = match handled.get(key).filter(|(s, _)| s.version == version && s.action == action) {
            Some(done) => done.clone(),
            None => handle_loser(&api, key, view, version, target).await?,
        };
        if status.done {
            handled.insert(key.clone(), (status.clone(), done.clone()));
        }
        out.loser = Some(status);
        out.conditions.push(done);
    } else {
        handled.remove(key);
    }
    Some(out)
}

/// Creates the canary's Deployment unless a Deployment of that name exists (reported, never touched when it is
/// not this policy's).
async fn create_canary(
    api: &Api<Deployment>,
    deployments: &[Deployment],
    stable: &Deployment,
    key: &ObjectKey,
    view: &ReleaseView,
    uid: &str,
    out: &mut Rollout,
) -> Option<Deployment> {
    let spec: &ReleasePolicySpec = &view.spec;
    let copy = match rollout::canary_copy(stable, spec, &key.name, uid) {
        Ok(copy) => copy,
        Err(why) => {
            out.conditions.push(condition("Deployed", false, "CannotCopy", why));
            return None;
        }
    };
    let name = copy.name_any();
    if deployments.iter().any(|d| d.name_any() == name) {
        let msg = format!("Deployment {name} exists and is not owned by this policy: Sluice leaves it alone");
        out.conditions.push(condition("Deployed", false, "NotOwned", msg));
        return None;
    }
    if !rollout::canary_wanted(view.status.phase) {
        let msg = format!("the release is {:?}: no canary Deployment is created any more", view.status.phase);
        out.conditions.push(condition("Deployed", false, "ReleaseEnded", msg));
        return None;
    }
    match api.create(&PostParams::default(), &copy).await {
        Ok(created) => {
            tracing::info!(release = %key, deployment = %name, from = %stable.name_any(), "canary Deployment created");
            Some(created)
        }
        Err(error) => {
            tracing::warn!(release = %key, deployment = %name, %error, "creating the canary Deployment failed");
            metrics::counter!(names::KUBE_DEPLOYMENT_ERRORS).increment(1);
            out.conditions.push(condition("Deployed", false, "CreateFailed", error.to_string()));
            None
        }
    }
}

/// Scales to zero or deletes the loser's Deployment once every connected proxy holds the release's current state
/// (so none routes to the loser any more); `None` when a write failed (retried next tick).
async fn handle_loser(
    api: &Api<Deployment>,
    key: &ObjectKey,
    view: &ReleaseView,
    version: &str,
    target: Result<&Deployment, String>,
) -> Option<(LoserStatus, Condition)> {
    let action = view.spec.loser();
    let mut status = LoserStatus { version: version.into(), deployment: None, action, done: false };
    let d = match target {
        Ok(d) => d,
        Err(why) => {
            status.done = true;
            return Some((status, condition("Loser", true, "NoDeployment", format!("{why}: nothing to {action:?}"))));
        }
    };
    let name = d.name_any();
    status.deployment = Some(name.clone());
    let proxies = &view.status.proxies;
    if proxies.acked < proxies.total {
        let msg = format!(
            "{} of {} connected proxies hold the config without {version}: {name} waits",
            proxies.acked, proxies.total
        );
        return Some((status, condition("Loser", false, "WaitingForProxies", msg)));
    }
    let result = match action {
        Loser::Keep => Ok(false),
        Loser::ScaleToZero if d.spec.as_ref().and_then(|s| s.replicas) == Some(0) => Ok(false),
        Loser::ScaleToZero => {
            let patch = json!({"spec": {"replicas": 0}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| true)
        }
        Loser::Delete => {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: d.metadata.uid.clone(), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(acted) => {
            if acted {
                tracing::info!(release = %key, deployment = %name, ?action, %version, "loser Deployment handled");
            }
            status.done = true;
            let reason = if action == Loser::Delete { "Deleted" } else { "ScaledToZero" };
            Some((status, condition("Loser", true, reason, format!("Deployment {name} of {version}: {action:?}"))))
        }
        Err(error) => {
            tracing::warn!(release = %key, deployment = %name, %error, ?action, "handling the loser failed; will retry");
            metrics::counter!(names::KUBE_DEPLOYMENT_ERRORS).increment(1);
            None
        }
    }
}

/// Merge-patches `status.rollout` (only that key: the release status writer owns the rest).
async fn write_rollout(client: &Client, key: &ObjectKey, rollout: &Rollout) -> bool {
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &convert::policy_resource());
    let value = serde_json::to_value(rollout).unwrap_or(Value::Null);
    let patch = json!({"status": {"rollout": value}});
    match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(release = %key, %error, "writing status.rollout failed; will retry");
            metrics::counter!(names::KUBE_STATUS_ERRORS).increment(1);
            false
        }
    }
}
