//! The pure half of the Deployment work (`spec.deploy`, `spec.finalize`): which Deployment is the stable one, the
//! canary's copy of it, which version lost, and the `status.rollout` that reports all of it. No IO: the task in
//! `super::deploy` reads the Deployments and performs what these functions decide.

use crate::model::{Phase, ReleasePolicySpec, TOTAL_WEIGHT, canary_name};
use crate::release::{Condition, ReleaseView};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `status.rollout` of a ReleasePolicy with `spec.deploy` or a loser action: the canary Deployment's progress and
/// what happened to the loser. Written by the Deployment task beside the release status (a merge patch of this
/// key only).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The canary's Deployment (with `spec.deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Desired (`spec.replicas`), updated and ready replicas of the canary's Deployment.
    pub replicas: i32,
    pub updated_replicas: i32,
    pub ready_replicas: i32,
    /// The losing version's Deployment, once the release has a loser and the policy names an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loser: Option<LoserStatus>,
    /// `Deployed` (the canary's Deployment exists and is ours), `RolledOut` (all its replicas ready), `Loser`
    /// (the loser action done, or why it waits).
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoserStatus {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub action: crate::model::Loser,
    pub done: bool,
}

pub fn condition(kind: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    let status = if ok { "True" } else { "False" };
    Condition { kind: kind.into(), status: status.into(), reason: reason.into(), message: message.into() }
}

/// The version that lost, once the release has decided: the stable after promote + finalize, the canary after
/// an abort (or a failure, or finalize after one). `None` while the canary may still win or lose.
pub fn loser(view: &ReleaseView) -> Option<&str> {
    let spec = &view.spec;
    let canary_weight = view.status.weights.get(&spec.canary).copied().unwrap_or(0);
    match view.status.phase {
        Phase::Finalized if canary_weight == TOTAL_WEIGHT => Some(&spec.stable),
        Phase::Finalized | Phase::Aborted | Phase::Failed => Some(&spec.canary),
        _ => None,
    }
}

/// Whether Sluice may create the canary's Deployment now: only while the release can still send it traffic.
pub fn canary_wanted(phase: Phase) -> bool {
    matches!(phase, Phase::Pending | Phase::Progressing | Phase::Paused)
}

/// The one Deployment running `version`'s pods behind the Service: its pod template carries the version label
/// and every label of the Service's `selector`. Errors say what was found instead.
pub fn behind_service<'a>(
    deployments: &'a [Deployment],
    spec: &ReleasePolicySpec,
    service_selector: &BTreeMap<String, String>,
    version: &str,
) -> Result<&'a Deployment, String> {
    let label = spec.version_label();
    if service_selector.is_empty() {
        return Err(format!("Service {} has no selector to find its Deployments by", spec.service));
    }
    let found: Vec<&Deployment> = deployments
        .iter()
        .filter(|d| {
            let labels = template_labels(d);
            labels.get(label).map(String::as_str) == Some(version)
                && service_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no Deployment runs the {version} pods behind Service {}", spec.service)),
        several => {
            let names: Vec<String> = several.iter().map(|d| d.name_any()).collect();
            Err(format!("several Deployments run {version} pods ({}): name one in spec.deploy.from", names.join(", ")))
        }
    }
}

fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    let meta = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
    meta.and_then(|m| m.labels.clone()).unwrap_or_default()
}

/// Whether `d`'s pod template carries the policy's version label with `version`.
pub fn runs(d: &Deployment, spec: &ReleasePolicySpec, version: &str) -> bool {
    template_labels(d).get(spec.version_label()).map(String::as_str) == Some(version)
}

/// Whether `d` is owned by the ReleasePolicy with this uid.
pub fn owned_by(d: &Deployment, uid: &str) -> bool {
    d.metadata.owner_references.iter().flatten().any(|r| r.uid == uid)
}

/// The canary's Deployment: a copy of `stable` with the version label changed (name suffix, labels, selector,
/// pod template), the images of `spec.deploy.images` set, owned by the policy (`uid`). Errors name what stops it.
pub fn canary_copy(
    stable: &Deployment,
    spec: &ReleasePolicySpec,
    policy: &str,
    uid: &str,
) -> Result<Deployment, String> {
    let deploy = spec.deploy.as_ref().ok_or("the policy has no spec.deploy")?;
    let label = spec.version_label();
    let stable_name = stable.name_any();
    let mut d_spec = stable.spec.clone().ok_or_else(|| format!("Deployment {stable_name} has no spec"))?;
    let selector = d_spec.selector.match_labels.get_or_insert_default();
    if selector.get(label).map(String::as_str) != Some(spec.stable.as_str()) {
        return Err(format!(
            "the selector of Deployment {stable_name} does not hold `{label}: {}`: a copy would select the stable \
             pods too",
            spec.stable
        ));
    }
    selector.insert(label.into(), spec.canary.clone());
    let template = d_spec.template.metadata.get_or_insert_default();
    template.labels.get_or_insert_default().insert(label.into(), spec.canary.clone());
    let pod = d_spec.template.spec.as_mut().ok_or_else(|| format!("Deployment {stable_name} has no pod template"))?;
    for (container, image) in &deploy.images {
        let c = pod.containers.iter_mut().find(|c| &c.name == container).ok_or_else(|| {
            format!("spec.deploy.images.{container}: Deployment {stable_name} has no container `{container}`")
        })?;
        c.image = Some(image.clone());
    }
    d_spec.replicas = deploy.replicas.or(d_spec.replicas);
    let mut labels = stable.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key(label) {
        labels.insert(label.into(), spec.canary.clone());
    }
    let owner = OwnerReference {
        api_version: "sluice.dev/v1alpha1".into(),
        kind: "ReleasePolicy".into(),
        name: policy.into(),
        uid: uid.into(),
        controller: Some(true),
        // `true` would need `update` on releasepolicies/finalizers; the garbage collector deletes it either way.
        block_owner_deletion: None,
    };
    let metadata = ObjectMeta {
        name: Some(canary_name(&stable_name, &spec.stable, &spec.canary)),
        namespace: stable.metadata.namespace.clone(),
        labels: Some(labels).filter(|l| !l.is_empty()),
        owner_references: Some(vec![owner]),
        ..Default::default()
    };
    Ok(Deployment { metadata, spec: Some(d_spec), status: None })
}

/// The progress of the canary's Deployment as `status.rollout` numbers and its `RolledOut` condition.
pub fn progress(rollout: &mut Rollout, d: &Deployment) {
    let status = d.status.clone().unwrap_or_default();
    rollout.replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    rollout.updated_replicas = status.updated_replicas.unwrap_or(0);
    rollout.ready_replicas = status.ready_replicas.unwrap_or(0);
    let done = rollout.updated_replicas >= rollout.replicas && rollout.ready_replicas >= rollout.replicas;
    let msg = format!(
        "{} of {} replicas ready, {} updated",
        rollout.ready_replicas, rollout.replicas, rollout.updated_replicas
    );
    rollout.conditions.push(condition("RolledOut", done, if done { "AllReplicasReady" } else { "Progressing" }, msg));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stable() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "reviews-v1", "namespace": "default", "labels": {"app": "reviews", "version": "v1"},
                         "uid": "u-1", "resourceVersion": "7", "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
                     "template": {"metadata": {"labels": {"app": "reviews", "version": "v1"}},
                                  "spec": {"containers": [{"name": "reviews", "image": "reviews:v1"},
                                                          {"name": "sidecar", "image": "envoy:1.40"}]}}},
            "status": {"readyReplicas": 3}
        }))
        .unwrap()
    }

    fn spec(images: serde_json::Value) -> ReleasePolicySpec {
        serde_json::from_value(json!({"service": "reviews", "stable": "v1", "canary": "v3",
                                      "deploy": {"images": images, "replicas": 2}}))
        .unwrap()
    }

    #[test]
    fn the_copy_changes_the_version_and_images_only() {
        let copy = canary_copy(&stable(), &spec(json!({"reviews": "reviews:v3"})), "reviews", "uid-p").unwrap();
        let v = serde_json::to_value(&copy).unwrap();
        assert_eq!(v["metadata"]["name"], "reviews-v3");
        assert_eq!(v["metadata"]["labels"], json!({"app": "reviews", "version": "v3"}));
        assert!(v["metadata"].get("resourceVersion").is_none() && v["metadata"].get("annotations").is_none());
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-p");
        assert_eq!(v["spec"]["selector"]["matchLabels"], json!({"app": "reviews", "version": "v3"}));
        assert_eq!(v["spec"]["template"]["metadata"]["labels"]["version"], "v3");
        let images: Vec<&str> = v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        assert_eq!(images, ["reviews:v3", "envoy:1.40"]);
        assert_eq!(v["spec"]["replicas"], 2);
        assert!(v.get("status").is_none_or(|s| s.is_null()));
    }

    #[test]
    fn a_copy_is_refused_when_it_would_select_the_stable_pods_or_names_no_container() {
        let err = canary_copy(&stable(), &spec(json!({"ratings": "r:v3"})), "reviews", "u").unwrap_err();
        assert!(err.contains("no container `ratings`"), "{err}");
        let mut d = stable();
        d.spec.as_mut().unwrap().selector.match_labels.as_mut().unwrap().remove("version");
        let err = canary_copy(&d, &spec(json!({"reviews": "r:v3"})), "reviews", "u").unwrap_err();
        assert!(err.contains("would select the stable pods"), "{err}");
    }
}
