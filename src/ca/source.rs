//! Where the mesh CA comes from, and the one handle every user of it reads ([`Authority`]).
//!
//! ```text
//!  --ca-dir D (Istio's cacerts: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem) ─┐ polled every 5 s;
//!  --state-dir D: mesh-ca.pem + mesh-ca-key.pem (0600), created once, reused on restart ──┼▶ Authority (watch of
//!  --kube: the Secret --ca-secret, created once, 409 → read back (ca::kube) ─────────────┘  Arc<Ca>)
//!                                                ├─▶ service: signs with the current CA
//!                                                └─▶ ca::serving: the mTLS port's certificate follows it
//! ```
//! A plugged-in set is checked before use (the key fits the certificate; a probe leaf signed with it verifies
//! against `root-cert.pem` through `cert-chain.pem`); a bad or half-written set is logged naming the file and the
//! last good CA keeps signing.

use super::{Ca, CaError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Istio's `cacerts` file names.
pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
/// File mode: the root Sluice creates in `--state-dir`.
pub const STATE_CERT: &str = "mesh-ca.pem";
pub const STATE_KEY: &str = "mesh-ca-key.pem";
/// A root Sluice creates lasts ten years (as istiod's self-signed root).
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How often `--ca-dir` is read for changes (and the root-expiry gauge set).
pub const POLL: Duration = Duration::from_secs(5);
/// The common name of the root Sluice creates.
pub const ROOT_NAME: &str = "sluice-mesh-ca";

/// A CA that cannot be used, naming the file (or Secret key) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct SourceError {
    pub path: PathBuf,
    pub message: String,
}

fn error(path: &Path, message: impl std::fmt::Display) -> SourceError {
    SourceError { path: path.to_path_buf(), message: message.to_string() }
}

/// The current mesh CA; cheap to clone. Readers take an `Arc<Ca>` and sign with it; a reload swaps it whole.
#[derive(Clone)]
pub struct Authority {
    current: Arc<watch::Sender<Arc<Ca>>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("root_not_after", &self.current().root_not_after()).finish()
    }
}

impl Authority {
    pub fn new(ca: Ca) -> Self {
        Self { current: Arc::new(watch::channel(Arc::new(ca)).0) }
    }

    pub fn current(&self) -> Arc<Ca> {
        self.current.borrow().clone()
    }

    /// Changes of the CA (a new plugged-in set).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ca>> {
        self.current.subscribe()
    }

    fn replace(&self, ca: Ca) {
        self.current.send_replace(Arc::new(ca));
    }

    /// Sets `sluice_ca_root_expiry_seconds` every [`POLL`] and, with `dir` (`--ca-dir`), re-reads the cacerts
    /// files: a set that changed, read the same twice in a row and checks out replaces the CA. Until `stop`.
    pub async fn watch(self, dir: Option<PathBuf>, stop: impl std::future::Future<Output = ()>) {
        let mut applied = dir.as_deref().and_then(|d| read_dir_files(d).ok());
        let mut previous = None;
        let mut reported: Option<String> = None;
        let poll = async {
            loop {
                super::service::set_root_expiry(&self.current(), SystemTime::now());
                tokio::time::sleep(POLL).await;
                let Some(dir) = dir.as_deref() else { continue };
                let now = match read_dir_files(dir) {
                    Ok(now) => now,
                    Err(e) => {
                        report(&mut reported, e.to_string());
                        previous = None;
                        continue;
                    }
                };
                if previous.as_ref() == Some(&now) && applied.as_ref() != Some(&now) {
                    match check_plugged(dir, &now, SystemTime::now()) {
                        Ok(ca) => {
                            self.replace(ca);
                            tracing::info!(dir = %dir.display(), "mesh CA reloaded from the cacerts files");
                            applied = Some(now.clone());
                            reported = None;
                        }
                        Err(e) => report(&mut reported, e.to_string()),
                    }
                }
                previous = Some(now);
            }
        };
        tokio::select! { _ = poll => {}, _ = stop => {} }
    }
}

fn report(reported: &mut Option<String>, error: String) {
    if reported.as_deref() != Some(error.as_str()) {
        tracing::error!(%error, "mesh CA reload refused; the last good CA keeps signing");
        *reported = Some(error);
    }
}

/// The four files' text (cert-chain.pem may be absent: an intermediate directly under the root).
type DirFiles = [String; 4];

fn read_dir_files(dir: &Path) -> Result<DirFiles, SourceError> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| error(&p, e))
    };
    let chain = match read(CERT_CHAIN) {
        Err(e) if !dir.join(CERT_CHAIN).exists() => {
            drop(e);
            String::new()
        }
        other => other?,
    };
    Ok([read(CA_CERT)?, read(CA_KEY)?, chain, read(ROOT_CERT)?])
}

/// The plugged-in CA in `dir` (Istio's cacerts layout), checked at `now`.
pub fn from_cacerts_dir(dir: &Path, now: SystemTime) -> Result<Ca, SourceError> {
    check_plugged(dir, &read_dir_files(dir)?, now)
}

fn check_plugged(dir: &Path, files: &DirFiles, now: SystemTime) -> Result<Ca, SourceError> {
    let [cert, key, chain, root] = files;
    let ca = Ca::plugged(cert, key, chain, root).map_err(|e| match e {
        CaError::Key(m) => error(&dir.join(CA_KEY), m),
        CaError::Root(m) => error(&dir.join(ROOT_CERT), m),
        CaError::Cert(m) | CaError::Sign(m) => error(&dir.join(CA_CERT), m),
    })?;
    verify_chain(&ca, now).map_err(|m| {
        error(&dir.join(CERT_CHAIN), format!("{CA_CERT} does not chain to {ROOT_CERT} through {CERT_CHAIN}: {m}"))
    })?;
    Ok(ca)
}

/// Signs a probe workload certificate and verifies it as a client certificate against the root, through the
/// chain the CA hands out: what every peer will do with the certificates this CA signs.
pub fn verify_chain(ca: &Ca, now: SystemTime) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, UnixTime};
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let probe = crate::tls::Identity::parse("spiffe://probe/ns/probe/sa/probe", "probe").map_err(|e| e.to_string())?;
    let issued = super::workload::sign(ca, &csr, &probe, now, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string());
    let chain = issued.chain.iter().map(|p| der(p)).collect::<Result<Vec<_>, _>>()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(&ca.root_pem)?).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let at = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default());
    let (leaf, rest) = chain.split_first().ok_or("empty chain")?;
    verifier.verify_client_cert(leaf, rest, at).map(|_| ()).map_err(|e| e.to_string())
}

/// File mode: the root in `dir` (`mesh-ca.pem`, `mesh-ca-key.pem`), created when absent and reused after.
pub fn from_state_dir(dir: &Path, now: SystemTime) -> Result<Ca, SourceError> {
    let (ca, created) = load_or_create(dir, STATE_CERT, STATE_KEY, ROOT_NAME, ROOT_VALIDITY, now)?;
    if created {
        tracing::info!(root = %dir.join(STATE_CERT).display(), "created the mesh CA's root");
    }
    Ok(ca)
}

/// A root kept as two PEM files in `dir` (`cert_file`, `key_file`): read when either exists, else generated
/// (`common_name`, valid from `now` for `validity`) and written, the key at 0600. `true`: it was created now.
/// The mesh CA and the injection webhook's CA both live this way in `--state-dir`.
pub fn load_or_create(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    common_name: &str,
    validity: std::time::Duration,
    now: SystemTime,
) -> Result<(Ca, bool), SourceError> {
    let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
    if cert_path.exists() || key_path.exists() {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| error(p, e));
        let (cert, key) = (read(&cert_path)?, read(&key_path)?);
        let ca = Ca::from_pem(&cert, &key).map_err(|e| match e {
            CaError::Key(m) => error(&key_path, m),
            other => error(&cert_path, other),
        })?;
        return Ok((ca, false));
    }
    let ca = Ca::generate(common_name, now, validity).map_err(|e| error(dir, e))?;
    std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
    write_private(&key_path, &ca.key_pem)?;
    std::fs::write(&cert_path, &ca.cert_pem).map_err(|e| error(&cert_path, e))?;
    Ok((ca, true))
}

/// Writes a new file readable by its owner only (0600 from the start: never briefly world-readable).
fn write_private(path: &Path, text: &str) -> Result<(), SourceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| error(path, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Istio's cacerts for an intermediate signed by a fresh root, written to `dir`; returns the root.
    pub(crate) fn plug(dir: &Path) -> Ca {
        let now = SystemTime::now();
        let root = Ca::generate("root", now, Duration::from_secs(86400 * 365)).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "intermediate");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, root.issuer()).unwrap();
        std::fs::write(dir.join(CA_CERT), cert.pem()).unwrap();
        std::fs::write(dir.join(CA_KEY), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(CERT_CHAIN), format!("{}{}", cert.pem(), root.cert_pem)).unwrap();
        std::fs::write(dir.join(ROOT_CERT), &root.cert_pem).unwrap();
        root
    }

    #[test]
    fn a_plugged_intermediate_signs_chains_to_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = plug(dir.path());
        let ca = from_cacerts_dir(dir.path(), SystemTime::now()).unwrap();
        assert_eq!(ca.root_pem.trim(), root.cert_pem.trim());
        assert!(ca.intermediates.is_empty(), "ca-cert.pem and the root are not repeated");
        let after = ca.chain_after_leaf();
        assert_eq!(after.len(), 2, "the intermediate, then the root");
        assert_eq!(after[1].trim(), root.cert_pem.trim());
    }

    #[test]
    fn a_bad_set_is_named_by_file() {
        let dir = tempfile::tempdir().unwrap();
        plug(dir.path());
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join(CA_KEY), other.serialize_pem()).unwrap();
        let err = from_cacerts_dir(dir.path(), SystemTime::now()).unwrap_err().to_string();
        assert!(err.contains("ca-key.pem") && err.contains("does not fit"), "{err}");

        plug(dir.path());
        let stranger = Ca::generate("stranger", SystemTime::now(), Duration::from_secs(3600)).unwrap();
        std::fs::write(dir.path().join(ROOT_CERT), &stranger.cert_pem).unwrap();
        let err = from_cacerts_dir(dir.path(), SystemTime::now()).unwrap_err().to_string();
        assert!(err.contains("cert-chain.pem") && err.contains("does not chain"), "{err}");

        std::fs::remove_file(dir.path().join(CA_CERT)).unwrap();
        let err = from_cacerts_dir(dir.path(), SystemTime::now()).unwrap_err().to_string();
        assert!(err.contains("ca-cert.pem"), "{err}");
    }

    #[test]
    fn the_state_dir_root_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = from_state_dir(dir.path(), SystemTime::now()).unwrap();
        let mode = std::fs::metadata(dir.path().join(STATE_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = from_state_dir(dir.path(), SystemTime::now()).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem);
        verify_chain(&again, SystemTime::now()).unwrap();
    }

    #[tokio::test]
    async fn a_changed_cacerts_set_replaces_the_ca_and_a_broken_one_does_not() {
        tokio::time::pause();
        let dir = tempfile::tempdir().unwrap();
        plug(dir.path());
        let authority = Authority::new(from_cacerts_dir(dir.path(), SystemTime::now()).unwrap());
        let first = authority.current().root_pem.clone();
        let task = tokio::spawn(authority.clone().watch(Some(dir.path().to_path_buf()), std::future::pending()));
        std::fs::write(dir.path().join(ROOT_CERT), "garbage").unwrap();
        tokio::time::sleep(POLL * 3).await;
        assert_eq!(authority.current().root_pem, first, "a broken set keeps the last good CA");
        let root = plug(dir.path());
        let changes = authority.subscribe();
        tokio::time::sleep(POLL * 3).await;
        assert!(changes.has_changed().unwrap());
        assert_eq!(authority.current().root_pem.trim(), root.cert_pem.trim());
        task.abort();
    }
}
