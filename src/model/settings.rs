//! Mesh-wide settings that are not objects of any source: the server's flags that translation needs.
//!
//! ```text
//!  sluice serve --trust-domain, --root-namespace ─▶ Store::set_settings ─▶ Model::settings ─▶ translate
//! ```
//! Kept in the model (not passed beside it) so that translation stays a function of the model alone and a
//! changed setting travels the same path as any other change.

use serde::{Deserialize, Serialize};

/// istiod's defaults: `cluster.local`, `istio-system`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshSettings {
    /// The SPIFFE trust domain of workload identities: `spiffe://TRUST_DOMAIN/ns/NS/sa/SA` (`--trust-domain`).
    pub trust_domain: String,
    /// Where a PeerAuthentication without a selector applies to the whole mesh (`--root-namespace`).
    pub root_namespace: String,
}

/// istiod's root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

impl Default for MeshSettings {
    fn default() -> Self {
        Self { trust_domain: super::CLUSTER_DOMAIN.to_string(), root_namespace: DEFAULT_ROOT_NAMESPACE.to_string() }
    }
}

impl MeshSettings {
    /// The SPIFFE identity of a service account.
    pub fn spiffe_id(&self, namespace: &str, service_account: &str) -> String {
        format!("spiffe://{}/ns/{namespace}/sa/{service_account}", self.trust_domain)
    }
}
