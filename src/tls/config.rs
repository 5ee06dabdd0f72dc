//! Loads the server certificate, its key and the client CA into a rustls `ServerConfig`, and reloads them.

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The PEM files mTLS is configured from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA(s) whose client certificates may connect.
    pub client_ca: PathBuf,
}

/// A TLS file that cannot be used, named by path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), message: message.to_string() }
}

/// The three files' bytes, as read together.
#[derive(Clone, PartialEq, Eq)]
struct Contents([Vec<u8>; 3]);

impl TlsFiles {
    fn read(&self) -> Result<Contents, TlsError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| file_error(p, e));
        Ok(Contents([read(&self.cert)?, read(&self.key)?, read(&self.client_ca)?]))
    }

    fn build(&self, c: &Contents, optional_client: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let [cert, key, ca] = &c.0;
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(&self.cert, format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(file_error(&self.cert, "no CERTIFICATE block"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| file_error(&self.key, format!("not a PEM private key: {e}")))?;
        let roots = roots(ca).map_err(|e| file_error(&self.client_ca, e))?;
        assemble(certs, key, roots, optional_client).map_err(|e| match e {
            Part::Roots(e) => file_error(&self.client_ca, e),
            Part::Key(e) => file_error(&self.key, format!("does not fit {}: {e}", self.cert.display())),
            Part::Config(e) => TlsError::Config(e),
        })
    }
}

/// Which part of a server config was refused.
enum Part {
    Roots(String),
    Key(String),
    Config(String),
}

fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots.add(c).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(roots)
}

fn assemble(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    optional_client: bool,
) -> Result<Arc<ServerConfig>, Part> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    // With the CA on this port a workload asks for its first certificate with a token alone; every other service
    // here checks for a verified client certificate itself (`xds::trust`, `ca::service::require_client_cert`).
    let builder = if optional_client { builder.allow_unauthenticated() } else { builder };
    let verifier = builder.build().map_err(|e| Part::Roots(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Part::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Part::Key(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A server config from PEM text held in memory (the mesh CA's serving certificate for the mTLS port): the chain
/// (leaf first), its key, the client CA bundle; `optional_client`: a client without a certificate may connect.
pub fn config_from_pem(
    chain: &str,
    key: &str,
    client_ca: &str,
    optional_client: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Config(format!("the serving certificate: {e}")))?;
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| TlsError::Config(format!("the serving key: {e}")))?;
    let roots = roots(client_ca.as_bytes()).map_err(|e| TlsError::Config(format!("the client CA: {e}")))?;
    assemble(certs, key, roots, optional_client).map_err(|e| match e {
        Part::Roots(e) | Part::Key(e) | Part::Config(e) => TlsError::Config(e),
    })
}

/// The current server config; [`ServerTls::watch`] swaps it when the files change.
/// Without files ([`ServerTls::fixed`]) the owner swaps it with [`ServerTls::replace`].
#[derive(Clone)]
pub struct ServerTls {
    files: Option<TlsFiles>,
    /// A client without a certificate may finish the handshake (the CA is served on this port).
    optional_client: bool,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Loads the files once; any error is fatal at startup.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        Self::load_with(files, false)
    }

    /// As [`ServerTls::load`]; `optional_client`: clients without a certificate finish the handshake too.
    pub fn load_with(files: TlsFiles, optional_client: bool) -> Result<Self, TlsError> {
        let config = files.build(&files.read()?, optional_client)?;
        Ok(Self { files: Some(files), optional_client, current: Arc::new(RwLock::new(config)) })
    }

    /// A config its owner keeps current with [`ServerTls::replace`] (no files to watch).
    pub fn fixed(config: Arc<ServerConfig>) -> Self {
        Self { files: None, optional_client: false, current: Arc::new(RwLock::new(config)) }
    }

    /// Swaps the config new connections handshake with; open connections keep theirs.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The config a new connection handshakes with.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls the files every `interval` until `stop`. A change applies once two reads in a row agree (a writer
    /// replacing cert and key one after the other is not caught halfway) and the result loads; a bad change is
    /// logged once and the last good config keeps serving.
    pub async fn watch(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        let Some(files) = self.files.clone() else { return stop.await };
        let mut applied = files.read().ok();
        let mut previous: Option<Contents> = None;
        let mut reported: Option<String> = None;
        let mut report = |error: String| {
            if reported.as_deref() != Some(error.as_str()) {
                tracing::error!(%error, "TLS reload refused; the last good certificates keep serving");
                reported = Some(error);
            }
        };
        let poll = async {
            loop {
                tokio::time::sleep(interval).await;
                let now = match files.read() {
                    Ok(now) => now,
                    Err(e) => {
                        report(e.to_string());
                        previous = None;
                        continue;
                    }
                };
                if previous.as_ref() == Some(&now) && applied.as_ref() != Some(&now) {
                    match files.build(&now, self.optional_client) {
                        Ok(config) => {
                            self.replace(config);
                            tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded");
                            applied = Some(now.clone());
                        }
                        Err(e) => report(e.to_string()),
                    }
                }
                previous = Some(now);
            }
        };
        tokio::select! { _ = poll => {}, _ = stop => {} }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["sluice.test".to_string()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn bad_files_are_named_and_a_foreign_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf(dir.path(), "one");
        let (_, other_key) = leaf(dir.path(), "two");
        let files = |key: &Path| TlsFiles { cert: cert.clone(), key: key.to_path_buf(), client_ca: cert.clone() };
        assert!(ServerTls::load(files(&key)).is_ok());
        let err = ServerTls::load(files(&other_key)).err().unwrap().to_string();
        assert!(err.contains("two-key.pem") && err.contains("does not fit"), "{err}");
        let err = ServerTls::load(files(&dir.path().join("missing.pem"))).err().unwrap().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
