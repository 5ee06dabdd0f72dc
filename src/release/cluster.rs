//! Release tasks that live in a Kubernetes cluster (`serve --kube`): what the Release API needs from the cluster
//! to create them there, and what the console shows of their Deployments. The interface is here; its one
//! implementation, over the API server, is `source::kube::console`.
//!
//! ```text
//!  PUT .../releases/NAME (a watched namespace) ──▶ Cluster::apply (create, or replace the spec) ──▶ the watch
//!      ──▶ the controller's record with that spec ──▶ the answer (so a GET right after shows it)
//!  GET /api/v1/inventory ──▶ Cluster::deployments (per namespace: template labels, containers, replicas)
//!  GET .../releases/NAME/rollout ──▶ Cluster::rollout (the policy's status.rollout, as the leader wrote it)
//! ```
//! A policy in the cluster is every replica's: any replica can create it, the leader drives it, and `spec.deploy`
//! and `spec.finalize` work for it (the Deployment task acts only on cluster policies).

use super::ReleaseError;
use crate::model::{ObjectKey, ReleasePolicySpec};
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::BTreeMap;

/// The store part cluster policies come from (`source::kube::SOURCE`).
pub const SOURCE: &str = "kube";

/// The cluster the Release API writes policies to.
pub trait Cluster: Send + Sync + 'static {
    /// Whether releases in `namespace` belong in the cluster (the kube source watches the namespace).
    fn holds(&self, namespace: &str) -> bool;
    /// Creates the ReleasePolicy `key` with `spec`, or replaces the spec of the one there.
    fn apply(&self, key: ObjectKey, spec: ReleasePolicySpec) -> BoxFuture<'static, Result<(), ReleaseError>>;
    /// The Deployments of `namespace`.
    fn deployments(&self, namespace: String) -> BoxFuture<'static, Result<Vec<DeploymentInfo>, ReleaseError>>;
    /// The policy's `status.rollout` (`None`: not written yet).
    fn rollout(&self, key: ObjectKey) -> BoxFuture<'static, Result<Option<serde_json::Value>, ReleaseError>>;
}

/// What the console shows of a Deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInfo {
    pub name: String,
    /// The pod template's labels (they tell the version, and which Service's pods it runs).
    #[serde(skip)]
    pub template_labels: BTreeMap<String, String>,
    pub containers: Vec<Container>,
    /// `spec.replicas` and `status.readyReplicas`.
    pub replicas: i32,
    pub ready_replicas: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Container {
    pub name: String,
    pub image: String,
}

impl DeploymentInfo {
    /// Whether its pods carry every label of `selector` (a Service's), so the Service routes to them.
    pub fn runs_pods_of(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| self.template_labels.get(k) == Some(v))
    }
}
