//! The workload certificate, agent side (istio-agent's part): a key made in the pod that never leaves it, a CSR for
//! the pod's SPIFFE identity, Sluice's `IstioCertificateService/CreateCertificate` over TLS with the pod's token,
//! and renewal at half the lifetime left when it arrived (minus up to 5% jitter, so a fleet started together does
//! not renew together).
//!
//! ```text
//!  KeyPair::generate (P-256) ─▶ CSR (URI SAN spiffe://TD/ns/NS/sa/SA) ─▶ CreateCertificate (authorization: Bearer
//!  TOKEN, read from its file each time) ─▶ chain (leaf first, root last) ─▶ Issued ─▶ watch channel (SDS pushes it)
//!  renew at not_before + lifetime × (0.5 − jitter); a failure retries after 1 s doubling to 30 s
//! ```

use crate::proto::istio_ca::IstioCertificateRequest;
use crate::proto::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Where and how the agent asks for its certificate.
#[derive(Clone, Debug)]
pub struct CaClient {
    /// `host:port` of Sluice's mTLS port.
    pub addr: String,
    /// The name Sluice's certificate must carry (SNI and verification).
    pub server_name: String,
    /// The PEM roots that Sluice's certificate chains to.
    pub root: Root,
    /// The pod's token (a projected service-account token, or the file-mode credential).
    pub token_file: PathBuf,
    /// Requested lifetime.
    pub ttl: Duration,
}

/// Where the agent finds the mesh root.
#[derive(Clone, Debug)]
pub enum Root {
    Pem(String),
    File(PathBuf),
}

impl Root {
    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Root::Pem(pem) => Ok(pem.clone().into_bytes()),
            Root::File(f) => std::fs::read(f).map_err(|e| format!("the CA root {}: {e}", f.display())),
        }
    }
}

/// A certificate and key the pod holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The leaf's chain (leaf, intermediates), PEM, without the root.
    pub chain_pem: String,
    pub key_pem: String,
    /// The trust bundle (the chain's last certificate: the mesh root).
    pub root_pem: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A fresh key and a CSR for `identity`: (key PEM, CSR PEM).
pub fn key_and_csr(identity: &str) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| format!("generating the key: {e}"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let uri = identity.try_into().map_err(|e| format!("{identity}: not an IA5 string: {e}"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).map_err(|e| format!("the CSR: {e}"))?;
    Ok((key.serialize_pem(), csr.pem().map_err(|e| format!("the CSR: {e}"))?))
}

/// Reads the chain Sluice answered (leaf first, root last) into what the pod holds.
pub fn issued(key_pem: String, chain: &[String]) -> Result<Issued, String> {
    let pems: Vec<&str> = chain.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect();
    let (root, leaf_chain) = match pems.as_slice() {
        [] => return Err("the CA answered an empty chain".into()),
        [only] => (*only, vec![*only]),
        [init @ .., root] => (*root, init.to_vec()),
    };
    let leaf = CertificateDer::from_pem_slice(leaf_chain[0].as_bytes()).map_err(|e| format!("the leaf: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| format!("the leaf: {e}"))?;
    let time =
        |t: x509_parser::time::ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    Ok(Issued {
        chain_pem: leaf_chain.iter().map(|c| format!("{c}\n")).collect(),
        key_pem,
        root_pem: format!("{root}\n"),
        serial: cert.raw_serial_as_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// When to renew a certificate held from `not_before` (or from when it arrived) until `not_after`: half that
/// time, less `jitter` (0..=1, scaled to 5% of it).
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let early = lifetime.mul_f64(0.05 * jitter.clamp(0.0, 1.0));
    not_before + lifetime / 2 - early
}

/// A number in 0..1 that differs per process and call (std's randomly seeded hasher; no crate needed).
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl CaClient {
    /// One certificate for `identity`: a new key and CSR, sent with the token.
    pub async fn request(&self, identity: &str) -> Result<Issued, String> {
        let (key_pem, csr) = key_and_csr(identity)?;
        let root = self.root.read()?;
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("the token {}: {e}", self.token_file.display()))?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(root)).domain_name(&self.server_name);
        let endpoint = Endpoint::from_shared(format!("https://{}", self.addr))
            .map_err(|e| format!("{}: {e}", self.addr))?
            .tls_config(tls)
            .map_err(|e| format!("TLS: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        let channel =
            endpoint.connect().await.map_err(|e| format!("connecting to {}: {}", self.addr, crate::error_chain(&e)))?;
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.ttl.as_secs() as i64,
            metadata: None,
        });
        let bearer = format!("Bearer {}", token.trim());
        let value = bearer.parse().map_err(|_| "the token is not a valid header value".to_string())?;
        request.metadata_mut().insert("authorization", value);
        let answer = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(|s| format!("CreateCertificate: {}: {}", s.code(), s.message()))?;
        issued(key_pem, &answer.into_inner().cert_chain)
    }

    /// Keeps `tx` holding a valid certificate for `identity`: the first as soon as the CA answers, then a new one
    /// at each renewal time. Runs until `tx` has no receivers.
    pub async fn keep(self, identity: String, tx: tokio::sync::watch::Sender<Option<std::sync::Arc<Issued>>>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let wait = match self.request(&identity).await {
                Ok(cert) => {
                    backoff = Duration::from_secs(1);
                    // From when it arrived: CAs backdate not_before for clock skew (Sluice's by 5 min), which would
                    // make a short certificate look half spent already.
                    let received = SystemTime::now().max(cert.not_before);
                    let at = renew_at(received, cert.not_after, jitter());
                    let wait = at.duration_since(SystemTime::now()).unwrap_or(Duration::from_secs(1));
                    tracing::info!(%identity, serial = %cert.serial, renew_in_s = wait.as_secs(), "workload certificate");
                    if tx.send(Some(std::sync::Arc::new(cert))).is_err() {
                        return;
                    }
                    wait
                }
                Err(e) => {
                    tracing::warn!(%identity, error = %e, retry_in_ms = backoff.as_millis() as u64, "no workload certificate");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_names_the_identity_and_its_key_stays_here() {
        let id = spiffe_id("cluster.local", "default", "bookinfo-reviews");
        assert_eq!(id, "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
        let (key, csr) = key_and_csr(&id).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(!csr.contains("PRIVATE"), "the CSR carries no key");
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let sans: Vec<String> = params
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::URI(u) => u.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, [id]);
    }

    #[test]
    fn renewal_is_at_half_the_lifetime_at_most_five_percent_early() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(60);
        assert_eq!(renew_at(start, end, 0.0), start + Duration::from_secs(30));
        assert_eq!(renew_at(start, end, 1.0), start + Duration::from_secs(27));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn an_issued_chain_is_split_into_the_pods_chain_and_the_root() {
        let now = SystemTime::now();
        let ca = crate::ca::Ca::generate("root", now, Duration::from_secs(3600)).unwrap();
        let leaf = ca.serving(&["x.test".into()], now, Duration::from_secs(60)).unwrap();
        let pems: Vec<String> = leaf.chain_pem.split_inclusive("-----END CERTIFICATE-----").map(String::from).collect();
        let got = issued(leaf.key_pem.clone(), &pems).unwrap();
        assert_eq!(got.root_pem.trim(), ca.cert_pem.trim());
        assert_eq!(got.chain_pem.matches("BEGIN CERTIFICATE").count(), 1);
        let life = got.not_after.duration_since(got.not_before).unwrap();
        assert!(life >= Duration::from_secs(60), "{life:?}");
        assert!(issued(String::new(), &[]).is_err());
    }
}
