//! The Release API's cluster ([`crate::release::cluster::Cluster`]) over the API server: a PUT of a release in a
//! watched namespace creates the ReleasePolicy object (or replaces its spec), so the task is every replica's and
//! can deploy its canary; the console's inventory lists the namespace's Deployments; a task's rollout is read from
//! the policy's `status.rollout` as the leader wrote it.
//!
//! ```text
//!  apply  ─▶ POST releasepolicies (fieldManager sluice-release-api)
//!            409 AlreadyExists ─▶ GET, merge PATCH {resourceVersion read, the spec's difference with nulls for
//!                                 what it leaves out} (409 Conflict: another writer came first; read again, ≤ 3)
//!  deployments ─▶ LIST deployments (the Deployment task's own verb)
//!  rollout ─▶ GET releasepolicies/NAME ─▶ status.rollout
//! ```

use super::crd::ReleasePolicy;
use super::{DEPLOYMENTS, RELEASE_POLICY_WRITES};
use crate::model::{ObjectKey, ReleasePolicySpec};
use crate::release::ReleaseError;
use crate::release::cluster::{Cluster, Container, DeploymentInfo};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The field manager of the Release API's writes.
pub const FIELD_MANAGER: &str = "sluice-release-api";

/// The cluster of `serve --kube`: every namespace Sluice watches (all of them when `namespaces` is empty).
pub struct ClusterPolicies {
    client: Client,
    namespaces: Vec<String>,
}

impl ClusterPolicies {
    pub fn new(client: Client, namespaces: &[String]) -> Self {
        Self { client, namespaces: namespaces.to_vec() }
    }
}

impl Cluster for ClusterPolicies {
    fn holds(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    fn apply(&self, key: ObjectKey, spec: ReleasePolicySpec) -> BoxFuture<'static, Result<(), ReleaseError>> {
        Box::pin(apply(self.client.clone(), key, spec))
    }

    fn deployments(&self, namespace: String) -> BoxFuture<'static, Result<Vec<DeploymentInfo>, ReleaseError>> {
        let client = self.client.clone();
        Box::pin(async move {
            debug_assert!(DEPLOYMENTS.verbs.contains(&"list"));
            let api = Api::<Deployment>::namespaced(client, &namespace);
            let list = api.list(&ListParams::default()).await.map_err(|e| failed("listing Deployments", &e))?;
            Ok(list.items.iter().map(info).collect())
        })
    }

    fn rollout(&self, key: ObjectKey) -> BoxFuture<'static, Result<Option<Value>, ReleaseError>> {
        let client = self.client.clone();
        Box::pin(async move {
            match policies(client, &key.namespace).get_opt(&key.name).await {
                Ok(Some(p)) => Ok(p.data.get("status").and_then(|s| s.get("rollout")).cloned()),
                Ok(None) => Err(ReleaseError::NotFound(key)),
                Err(e) => Err(failed(&format!("reading ReleasePolicy {key}"), &e)),
            }
        })
    }
}

fn policies(client: Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &ApiResource::erase::<ReleasePolicy>(&()))
}

fn failed(what: &str, e: &kube::Error) -> ReleaseError {
    ReleaseError::Internal(format!("{what} in the cluster: {}", crate::error_chain(e)))
}

async fn apply(client: Client, key: ObjectKey, spec: ReleasePolicySpec) -> Result<(), ReleaseError> {
    debug_assert!(RELEASE_POLICY_WRITES.verbs.iter().all(|v| ["get", "create", "patch"].contains(v)));
    let api = policies(client, &key.namespace);
    let spec = serde_json::to_value(&spec).map_err(|e| ReleaseError::Internal(e.to_string()))?;
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    let what = format!("writing ReleasePolicy {key}");
    let mut object = DynamicObject::new(&key.name, &ApiResource::erase::<ReleasePolicy>(&())).within(&key.namespace);
    object.data = json!({ "spec": spec });
    match api.create(&params, &object).await {
        Ok(_) => return Ok(()),
        // A create's 409 is AlreadyExists (kmock words the reason differently from an API server).
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(failed(&what, &e)),
    }
    // There already: its spec replaced by a merge patch that also removes what the new spec leaves out, guarded by
    // the resourceVersion read (an API server answers 409 when another writer came in between: read again).
    for _ in 0..3 {
        let current = api.get(&key.name).await.map_err(|e| failed(&what, &e))?;
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": merge_diff(current.data.get("spec").unwrap_or(&Value::Null), &spec),
        });
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(&key.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(failed(&what, &e)),
        }
    }
    Err(ReleaseError::Conflict(format!("ReleasePolicy {key} kept changing while it was replaced; send it again")))
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and added keys, and `null` for each key
/// `new` leaves out (pure).
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(was) if was == v => {}
                    Some(was) => {
                        out.insert(k.clone(), merge_diff(was, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

/// What the console shows of a Deployment.
fn info(d: &Deployment) -> DeploymentInfo {
    let spec = d.spec.as_ref();
    let template = spec.map(|s| &s.template);
    let labels = template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|p| {
            p.containers
                .iter()
                .map(|c| Container { name: c.name.clone(), image: c.image.clone().unwrap_or_default() })
                .collect()
        })
        .unwrap_or_default();
    DeploymentInfo {
        name: d.name_any(),
        template_labels: labels,
        containers,
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready_replicas: d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_diff_applied_gives_the_new_value() {
        let old = json!({"service": "reviews", "stable": "v1", "canary": "v3",
                         "traffic": {"canaryWeight": 0, "rules": [{"match": {"clientOS": ["Windows"]}}]},
                         "deploy": {"images": {"reviews": "r:3"}, "replicas": 2}});
        let new = json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": 2000},
                         "deploy": {"images": {"reviews": "r:3"}, "replicas": 2}, "steps": [{"setWeight": 5000}]});
        let patch = merge_diff(&old, &new);
        assert_eq!(patch, json!({"traffic": {"canaryWeight": 2000, "rules": null}, "steps": [{"setWeight": 5000}]}));
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
    }
}
