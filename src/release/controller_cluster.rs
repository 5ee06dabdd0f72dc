//! The controller's side of releases created in a Kubernetes cluster ([`super::super::cluster`]): an apply to a
//! namespace the cluster holds is written there, not to the API's own store, and answered once this replica's
//! watch has brought it back. A child module of the controller, so it reads the controller's own state.

use super::*;
use crate::release::cluster::{Cluster, DeploymentInfo};

/// How long an apply written to the cluster waits for the watch to deliver it.
pub const SEEN_WAIT: Duration = Duration::from_secs(10);

impl ReleaseController {
    /// Kubernetes mode: from now on the Release API creates policies of the namespaces `cluster` holds there.
    /// Call once.
    pub fn set_cluster(&self, cluster: Arc<dyn Cluster>) {
        if self.cluster.set(cluster).is_err() {
            tracing::warn!("the release controller's cluster was set twice; keeping the first");
        }
    }

    /// The cluster, when it holds `namespace`.
    fn cluster_for(&self, namespace: &str) -> Option<&Arc<dyn Cluster>> {
        self.cluster.get().filter(|c| c.holds(namespace))
    }

    /// Whether releases in `namespace` are created in the cluster.
    pub fn in_cluster(&self, namespace: &str) -> bool {
        self.cluster_for(namespace).is_some()
    }

    /// The spec's own checks, and the source an apply of it writes to: the cluster's policies may deploy.
    pub(super) fn check_spec(&self, key: &ObjectKey, spec: &ReleasePolicySpec) -> Result<&'static str, ReleaseError> {
        if self.in_cluster(&key.namespace) {
            spec.validate()?;
            return Ok(crate::release::cluster::SOURCE);
        }
        local_spec_checks(spec)?;
        Ok(API_SOURCE)
    }

    /// Creates or replaces a policy's spec where its namespace's policies live: in the cluster (answered once this
    /// replica holds it), or in the API's own store ([`Self::apply`], off the async threads).
    pub async fn put(&self, key: ObjectKey, spec: ReleasePolicySpec) -> Result<ReleaseView, ReleaseError> {
        let Some(cluster) = self.cluster_for(&key.namespace).cloned() else {
            return self.blocking(move |c| c.apply(&key, spec)).await;
        };
        let writes = self.check_spec(&key, &spec)?;
        self.check_apply(&key, &spec, &self.store.model(), writes)?;
        cluster.apply(key.clone(), spec.clone()).await?;
        let started = std::time::Instant::now();
        loop {
            if self.record(&key).is_some_and(|r| r.spec == spec) {
                return self.get(&key);
            }
            if started.elapsed() > SEEN_WAIT {
                return Err(ReleaseError::NotSeen { release: key, waited: started.elapsed() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Deployments of `namespace`, when the cluster holds it (`None`: no Deployments here).
    pub async fn deployments(&self, namespace: &str) -> Result<Option<Vec<DeploymentInfo>>, ReleaseError> {
        let Some(cluster) = self.cluster_for(namespace).cloned() else { return Ok(None) };
        cluster.deployments(namespace.to_string()).await.map(Some)
    }

    /// A cluster policy's `status.rollout` as the leader last wrote it (`None` before it did).
    pub async fn rollout(&self, key: &ObjectKey) -> Result<Option<serde_json::Value>, ReleaseError> {
        let Some(cluster) = self.cluster_for(&key.namespace).cloned() else {
            return Err(ReleaseError::Conflict(format!(
                "release policy {key} is not in a Kubernetes cluster: it has no Deployments to roll out"
            )));
        };
        cluster.rollout(key.clone()).await
    }
}
