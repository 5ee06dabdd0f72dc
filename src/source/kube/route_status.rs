//! Writes HTTPRoute `status.parents` (GAMMA: `Accepted`, `ResolvedRefs` per Service parent) for the HTTPRoutes
//! read from the cluster, computed by [`crate::model::mesh::http_route_status`] from the merged model.
//!
//! ```text
//!  index task ── keys of the cluster's HTTPRoutes ─┐
//!  Store (merged model) ───────────────────────────┴▶ status per route ─ changed? ─▶ merge patch on /status
//! ```
//! Only the leader (the Lease holder, as for ReleasePolicy status) writes. A status is written when it differs from the last one written (conditions compared without timestamps), so a
//! steady cluster gets no writes. The patch replaces `status.parents` whole: other controllers' entries on the
//! same route are not kept (Sluice is meant to be the mesh's only controller). A failed write is logged, counted
//! in `sluice_kube_watch_errors_total{kind="HTTPRoute"}` and retried at the next model change.

use super::mesh::{HTTP_ROUTE, resource};
use crate::model::ObjectKey;
use crate::model::mesh::{ParentStatus, http_route_status};
use crate::store::Store;
use crate::telemetry::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::watch;

/// Runs until `stop`: while `leader` is true, on every change of the model, of the set of cluster routes or of
/// leadership, writes what changed (a new leader writes every route once).
pub async fn write_route_status(
    client: Client,
    store: Store,
    mut routes: watch::Receiver<BTreeSet<ObjectKey>>,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut models = store.subscribe();
    let mut written: BTreeMap<ObjectKey, Vec<ParentStatus>> = BTreeMap::new();
    let ar = resource(HTTP_ROUTE);
    loop {
        let keys = routes.borrow_and_update().clone();
        let model = models.borrow_and_update().clone();
        let view = crate::model::mesh::gateway_view(&model);
        written.retain(|k, _| keys.contains(k));
        if !*leader.borrow_and_update() {
            written.clear();
        }
        for key in keys.iter().filter(|_| *leader.borrow()) {
            let Some(route) = model.http_routes.get(key) else { continue };
            let status = http_route_status(&model, key, route, &view);
            if written.get(key) == Some(&status) {
                continue;
            }
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &key.namespace, &ar);
            let patch = json!({"status": {"parents": with_times(&status)}});
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch)).await {
                Ok(_) => {
                    tracing::debug!(route = %key, "HTTPRoute status written");
                    written.insert(key.clone(), status);
                }
                Err(error) => {
                    tracing::warn!(route = %key, %error, "writing HTTPRoute status failed; retrying on the next change");
                    metrics::counter!(names::KUBE_WATCH_ERRORS, "kind" => "HTTPRoute").increment(1);
                }
            }
        }
        tokio::select! {
            r = routes.changed() => if r.is_err() { return },
            r = models.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The parents as JSON, each condition with `lastTransitionTime` (now) as the API requires.
fn with_times(status: &[ParentStatus]) -> Value {
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null);
    let mut v = serde_json::to_value(status).unwrap_or(Value::Null);
    for p in v.as_array_mut().into_iter().flatten() {
        for c in p["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = now.clone();
        }
    }
    v
}
