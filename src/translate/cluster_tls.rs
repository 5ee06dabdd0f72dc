//! The TLS of one outbound cluster: which DestinationRule `tls` applies to it (see
//! `model::mesh::TrafficPolicy::tls_for`), or auto mTLS, as istiod's `buildUpstreamTLSSettings` decides.
//!
//! ```text
//!  rule tls        proxy with workload mTLS                     any other proxy
//!  (none)          auto mTLS, unless the destination's          nothing
//!                  namespace is DISABLE (istiod's inference)
//!  ISTIO_MUTUAL    mesh TLS to every endpoint (no plaintext)     nothing: it has no mesh identity
//!  SIMPLE/MUTUAL   TLS from the rule's files                    TLS from the rule's files
//!  DISABLE         nothing                                       nothing
//! ```
//! SANs of mesh TLS: the rule's `subjectAltNames`, else the SPIFFE ids of the service accounts of the Service's
//! endpoints on that port (all subsets, as istiod's `ServiceAccounts[host][port]`); SNI: the rule's `sni`, else
//! `outbound_.PORT_.SUBSET_.FQDN`.

use super::cluster::EdsCluster;
use super::{naming, tls};
use crate::model::mesh::{ClientTlsMode, MtlsMode};
use crate::model::{Model, ObjectKey, Service};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use std::collections::{BTreeMap, BTreeSet};

/// The SPIFFE ids of a Service's endpoints, per service port.
pub(super) struct Accounts(BTreeMap<u16, Vec<String>>);

impl Accounts {
    pub fn of(model: &Model, key: &ObjectKey) -> Self {
        let mut per_port: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
        for e in model.endpoints_of(key) {
            let Some(sa) = e.service_account.as_deref() else { continue };
            for port in e.ports.keys() {
                per_port.entry(*port).or_default().insert(model.settings.spiffe_id(&key.namespace, sa));
            }
        }
        Self(per_port.into_iter().map(|(p, ids)| (p, ids.into_iter().collect())).collect())
    }

    fn on(&self, port: u16) -> &[String] {
        self.0.get(&port).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Sets the cluster's transport socket (or socket matches) for `c`; `mesh`: the proxy takes part in workload mTLS.
pub(super) fn apply(
    model: &Model,
    key: &ObjectKey,
    svc: &Service,
    c: &EdsCluster<'_>,
    accounts: &Accounts,
    mesh: bool,
    cluster: &mut Cluster,
) {
    let port = c.port.port;
    let http2 = c.port.is_http2();
    let fqdn = naming::service_fqdn(&svc.namespace, &svc.name);
    let mesh_tls = |sans: &[String], sni: Option<&str>| {
        let sni = sni.filter(|s| !s.is_empty()).map(String::from);
        let sni = sni.unwrap_or_else(|| tls::mesh_sni(port, &c.subset_name, &fqdn));
        tls::upstream_socket(&tls::istio_mutual(&sni, sans, http2))
    };
    match c.policy.as_ref().and_then(|p| p.tls_for(port)) {
        Some(t) => match t.mode {
            ClientTlsMode::Disable => {}
            ClientTlsMode::IstioMutual if mesh => {
                let sans = if t.subject_alt_names.is_empty() { accounts.on(port) } else { &t.subject_alt_names };
                cluster.transport_socket = Some(mesh_tls(sans, t.sni.as_deref()));
            }
            ClientTlsMode::IstioMutual => {}
            ClientTlsMode::Simple | ClientTlsMode::Mutual => {
                cluster.transport_socket = Some(tls::upstream_socket(&tls::from_files(t, &fqdn, http2)));
            }
        },
        None if mesh && model.namespace_mtls_mode(&key.namespace) != MtlsMode::Disable => {
            cluster.transport_socket_matches = tls::auto_mtls(mesh_tls(accounts.on(port), None));
        }
        None => {}
    }
}
