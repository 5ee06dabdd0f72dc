//! The mTLS port's own certificate when `--ca` is on and no `--tls-cert` is given: signed by the mesh CA for
//! `--ca-dns-names` (and Sluice's SPIFFE identity), with the mesh root as the client CA, so a sidecar holding a
//! workload certificate can also speak mTLS xDS. Clients without a certificate finish the handshake (a workload
//! asks for its first certificate with a token alone); every other service on the port checks for one itself.
//!
//! ```text
//!  Authority ─(start, a CA change, half the serving lifetime)─▶ Ca::serving_with_uri ─▶ ServerTls::replace
//! ```

use super::{Authority, Ca};
use crate::tls::{ServerTls, TlsError, config_from_pem};
use std::time::{Duration, SystemTime};

/// How long the serving certificate lasts; it is signed anew at half of it.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the serving certificate names.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Serving {
    pub dns_names: Vec<String>,
    pub trust_domain: String,
}

impl Serving {
    /// Sluice's own identity: `spiffe://TD/ns/sluice-system/sa/sluice`.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{}/ns/sluice-system/sa/sluice", self.trust_domain)
    }

    fn config(&self, ca: &Ca, now: SystemTime) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
        let leaf = ca
            .serving_with_uri(&self.dns_names, Some(&self.spiffe_id()), now, SERVING_VALIDITY)
            .map_err(|e| TlsError::Config(format!("the mesh CA's serving certificate: {e}")))?;
        config_from_pem(&leaf.chain_pem, &leaf.key_pem, &ca.root_pem, true)
    }

    /// The port's TLS, signed now by the current CA.
    pub fn server_tls(&self, authority: &Authority) -> Result<ServerTls, TlsError> {
        Ok(ServerTls::fixed(self.config(&authority.current(), SystemTime::now())?))
    }

    /// Re-signs when the CA changes and at half the serving lifetime, until `stop`. A failure is logged and
    /// retried in a minute; the last good certificate keeps serving.
    pub async fn keep(self, authority: Authority, tls: ServerTls, stop: impl std::future::Future<Output = ()>) {
        let mut changes = authority.subscribe();
        let work = async {
            let mut wait = SERVING_VALIDITY / 2;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = changes.changed() => if changed.is_err() { return },
                }
                match self.config(&authority.current(), SystemTime::now()) {
                    Ok(config) => {
                        tls.replace(config);
                        tracing::info!("signed a new serving certificate for the mTLS port with the mesh CA");
                        wait = SERVING_VALIDITY / 2;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign the mTLS port's certificate; retrying in 60 s");
                        wait = Duration::from_secs(60);
                    }
                }
            }
        };
        tokio::select! { _ = work => {}, _ = stop => {} }
    }
}
