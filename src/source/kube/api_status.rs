//! Writes the status of the cluster's Gateway API objects, as [`super::gateway_status`] computes it from the
//! merged model: GatewayClass `status.conditions`, Gateway `status.{conditions,listeners,addresses}`, HTTPRoute
//! `status.parents` (GAMMA Service parents and Sluice Gateway parents).
//!
//! ```text
//!  index task ── StatusObjects (objects, generations, statuses; Service fronts) ─┐
//!  Store (merged model) ─────────────────────────────────────────────────────────┴▶ desired statuses
//!        ─ same as written, or as the object holds (timestamps aside)? ─ no ─▶ merge patch on /status
//! ```
//! Only the leader (the Lease holder, as for ReleasePolicy status) writes, and only a status that differs from
//! the last one it wrote and from the one the object holds (so a new leader rewrites nothing that is already
//! true). Each condition carries `observedGeneration` and a `lastTransitionTime` that moves only when its status
//! does. The patch replaces the lists it names whole: other controllers' `parents` entries on a route are not kept
//! (Sluice is meant to be the mesh's only controller). A failed write is logged, counted in
//! `sluice_kube_watch_errors_total{kind}` and retried at the next change.

use super::conditions::{same, stamp};
use super::gateway_status::{Desired, StatusObjects, Target, desired};
use super::mesh::{API_GATEWAY, GATEWAY_CLASS, HTTP_ROUTE, resource};
use super::{API_GATEWAY_STATUS, GATEWAY_CLASS_STATUS, HTTP_ROUTE_STATUS};
use crate::model::ObjectKey;
use crate::store::Store;
use crate::telemetry::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

/// Runs until `stop`: while `leader` is true, on every change of the model, of the indexed objects or of
/// leadership, writes what changed.
pub async fn write_api_status(
    client: Client,
    store: Store,
    mut objects: watch::Receiver<Arc<StatusObjects>>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut models = store.subscribe();
    let mut written: BTreeMap<(Target, ObjectKey), Value> = BTreeMap::new();
    loop {
        let indexed = objects.borrow_and_update().clone();
        let model = models.borrow_and_update().clone();
        if *leader.borrow_and_update() {
            let wanted = desired(&model, &indexed);
            let ids: BTreeSet<(Target, &ObjectKey)> = wanted.iter().map(|d| (d.target, &d.key)).collect();
            written.retain(|(t, k), _| ids.contains(&(*t, k)));
            for d in wanted {
                write_one(&client, &mut written, d).await;
            }
        } else {
            // Another replica writes; when this one leads again, it compares with what the objects hold.
            written.clear();
        }
        tokio::select! {
            r = objects.changed() => if r.is_err() { return },
            r = models.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Writes `d` unless the last write or the object already says it.
async fn write_one(client: &Client, written: &mut BTreeMap<(Target, ObjectKey), Value>, d: Desired) {
    let id = (d.target, d.key);
    let last = written.get(&id);
    if (last.is_some() && same(last, &d.status)) || same(d.current.as_ref(), &d.status) {
        return;
    }
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null);
    let status = stamp(d.status, last.or(d.current.as_ref()), &now);
    let (target, key) = &id;
    let ar = api_resource(*target);
    let api = match *target {
        Target::GatewayClass => Api::<DynamicObject>::all_with(client.clone(), &ar),
        Target::Gateway | Target::HttpRoute => Api::namespaced_with(client.clone(), &key.namespace, &ar),
    };
    let patch = json!({ "status": status });
    match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::debug!(kind = target.name(), object = %key, "status written");
            written.insert(id, status);
        }
        Err(error) => {
            tracing::warn!(kind = target.name(), object = %key, %error, "writing status failed; retrying on the next change");
            metrics::counter!(names::KUBE_WATCH_ERRORS, "kind" => target.name()).increment(1);
            written.remove(&id);
        }
    }
}

/// The resource whose `status` subresource is patched (checked against [`super::ACCESS`]).
fn api_resource(target: Target) -> ApiResource {
    let (gvkp, access) = match target {
        Target::GatewayClass => (GATEWAY_CLASS, GATEWAY_CLASS_STATUS),
        Target::Gateway => (API_GATEWAY, API_GATEWAY_STATUS),
        Target::HttpRoute => (HTTP_ROUTE, HTTP_ROUTE_STATUS),
    };
    debug_assert_eq!((gvkp.0, format!("{}/status", gvkp.3)), (access.group, access.resource.to_string()));
    resource(gvkp)
}
