//! Who an mTLS stream is, and what it may see.
//!
//! ```text
//!  TLS peer certificate ──Identity::from_cert──▶ spiffe://TD/ns/NS/sa/SA   (else: PermissionDenied)
//!  first request's node ──stated_namespace────▶ NS' (node.metadata.NAMESPACE, or the Istio node id)
//!        NS' == NS, or none stated (then NS)   (else: PermissionDenied naming both)
//!  visibility = {NS} ∪ --shared-namespaces      (`*` among them: every namespace)
//! ```
//! Plaintext streams carry no identity and see every namespace: the plaintext port is for trusted networks, and
//! `--no-plaintext` turns it off (see SECURITY.md).

use crate::model::{ProxyInfo, Visibility};
use crate::tls::Identity;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Status};

/// How the mTLS port turns certificates into identities and identities into visibility.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Trust {
    /// The SPIFFE trust domain client certificates must name.
    pub trust_domain: String,
    /// Namespaces every mTLS proxy sees besides its own; `*` means all.
    pub shared_namespaces: Vec<String>,
}

/// An authenticated stream's peer.
pub(crate) struct Peer {
    pub identity: Identity,
    pub trust: Arc<Trust>,
}

impl Trust {
    /// The identity in the request's verified client certificate.
    pub(crate) fn peer<T>(self: &Arc<Self>, req: &Request<T>) -> Result<Peer, Status> {
        let certs =
            req.peer_certs().ok_or_else(|| Status::unauthenticated("no client certificate on this connection"))?;
        let leaf = certs.first().ok_or_else(|| Status::unauthenticated("no client certificate on this connection"))?;
        let identity = Identity::from_cert(leaf, &self.trust_domain).map_err(|e| {
            tracing::warn!(error = %e, peer = ?req.remote_addr(), "refusing xDS stream");
            Status::permission_denied(e.to_string())
        })?;
        Ok(Peer { identity, trust: self.clone() })
    }

    /// What a proxy of `namespace` may see.
    pub fn visibility(&self, namespace: &str) -> Visibility {
        if self.shared_namespaces.iter().any(|n| n == "*") {
            return Visibility::All;
        }
        let mut set: BTreeSet<String> = self.shared_namespaces.iter().cloned().collect();
        set.insert(namespace.to_string());
        Visibility::Namespaces(set)
    }
}

impl Peer {
    /// Checks the node against the certificate and scopes what the proxy sees. `stated` is the namespace the node
    /// claims and where it says so; a node that claims none takes the certificate's.
    pub(crate) fn admit(&self, proxy: &mut ProxyInfo, stated: Option<(String, &'static str)>) -> Result<(), Status> {
        let ns = &self.identity.namespace;
        match stated {
            Some((claimed, from)) if claimed != *ns => {
                return Err(Status::permission_denied(format!(
                    "node `{}` claims namespace `{claimed}` ({from}), but its client certificate is {} (namespace `{ns}`)",
                    proxy.id, self.identity
                )));
            }
            _ => proxy.namespace = ns.clone(),
        }
        proxy.visibility = self.trust.visibility(ns);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(shared: &[&str]) -> Peer {
        let trust =
            Trust { trust_domain: "td".into(), shared_namespaces: shared.iter().map(|s| s.to_string()).collect() };
        let identity = Identity::parse("spiffe://td/ns/a/sa/web", "td").unwrap();
        Peer { identity, trust: Arc::new(trust) }
    }

    #[test]
    fn a_node_claiming_another_namespace_is_refused_by_name() {
        let mut p = ProxyInfo::listening("p1", "b", "127.0.0.1:1".parse().unwrap());
        let err = peer(&[]).admit(&mut p, Some(("b".into(), "node.metadata.NAMESPACE"))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("claims namespace `b` (node.metadata.NAMESPACE)"), "{}", err.message());
        assert!(err.message().contains("spiffe://td/ns/a/sa/web"), "{}", err.message());
    }

    #[test]
    fn visibility_is_own_namespace_plus_shared() {
        let mut p = ProxyInfo::listening("p1", "default", "127.0.0.1:1".parse().unwrap());
        peer(&["common"]).admit(&mut p, None).unwrap();
        assert_eq!(p.namespace, "a", "a node that states no namespace takes the certificate's");
        assert!(p.visibility.sees("a") && p.visibility.sees("common") && !p.visibility.sees("b"));
        peer(&["*"]).admit(&mut p, Some(("a".into(), "node.metadata.NAMESPACE"))).unwrap();
        assert_eq!(p.visibility, Visibility::All);
    }
}
