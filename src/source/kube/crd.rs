//! The ReleasePolicy CustomResourceDefinition (`sluice.dev/v1alpha1`), derived from the model's own spec types.
//!
//! The spec is the model's [`ReleasePolicySpec`] unchanged (`#[serde(transparent)]`), so a policy moves between
//! a config file, the REST API and the cluster as the same document, and the CRD's schema is generated from the
//! same types (schemars) rather than written twice. `sluice crd` prints it; `deploy/crd.yaml` is kept equal.

use crate::model::ReleasePolicySpec;
use crate::release::ReleaseStatus;
use crate::source::kube::progress::Progress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec` of the ReleasePolicy custom resource: the model's spec, field for field.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ReleasePolicy",
    plural = "releasepolicies",
    shortname = "rp",
    namespaced,
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Canary","type":"string","jsonPath":".spec.canary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
pub struct PolicySpec(pub ReleasePolicySpec);

/// `status` of the ReleasePolicy custom resource: what the release controller reports, plus the generation of the
/// spec it describes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(flatten)]
    pub release: ReleaseStatus,
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// With `phase` and `step`: enough for another replica to serve this release and to drive it on.
    #[serde(flatten)]
    pub progress: Progress,
    /// The canary Deployment's rollout and the loser's fate (`spec.deploy`, `spec.finalize`), written by the
    /// Deployment task under this key alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::Rollout>,
}

/// The CRD as applied to a cluster.
pub fn crd() -> CustomResourceDefinition {
    let crd = <ReleasePolicy as kube::CustomResourceExt>::crd();
    // A field of any JSON (schemars: `{}`) must say so in a structural schema, or the API server refuses the CRD.
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    mark_free_form(&mut value["spec"]["versions"]);
    serde_json::from_value(value).unwrap_or(crd)
}

/// Gives every schema node that constrains nothing (`{}`) `x-kubernetes-preserve-unknown-fields: true`.
fn mark_free_form(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "properties"
                    && let serde_json::Value::Object(props) = child
                {
                    for schema in props.values_mut() {
                        if schema.as_object().is_some_and(|o| o.is_empty() || o.keys().all(|k| k == "description")) {
                            schema["x-kubernetes-preserve-unknown-fields"] = true.into();
                        }
                    }
                }
                mark_free_form(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mark_free_form),
        _ => {}
    }
}

/// The CRD as YAML (`sluice crd`, `deploy/crd.yaml`).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_names_the_group_kind_and_status_subresource() {
        let crd = crd();
        assert_eq!(crd.spec.group, "sluice.dev");
        assert_eq!(crd.spec.names.kind, "ReleasePolicy");
        assert_eq!(crd.spec.names.plural, "releasepolicies");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let schema = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["traffic"]["properties"]["canaryWeight"]["type"], "integer");
        assert!(spec["required"].as_array().unwrap().iter().any(|r| r == "service"), "{spec}");
        // Every field has a type or says it takes any JSON (a structural schema).
        let analysis = &spec["properties"]["analysis"];
        assert!(analysis["type"].is_string() || analysis["x-kubernetes-preserve-unknown-fields"] == true, "{analysis}");
    }
}
