//! Sluice's certificate authority: the signing certificate and key (a self-signed root it creates, or an
//! intermediate an operator plugs in), and the certificates it signs. Pure given the key material and the clock
//! (`now` is passed in); where the CA is kept is [`source`]'s business (the state directory, a Secret in
//! Kubernetes, or Istio's `cacerts` directory), who may ask is [`authn`]'s, and the gRPC shell is [`service`].
//!
//! ```text
//!  Ca::generate(name, now, valid) ─▶ root (PEM cert + PKCS#8 key) ─▶ stored by the caller
//!  Ca::from_pem(cert, key) ◀── read back ──┘       Ca::plugged(cacerts files) ─▶ an intermediate under a root
//!  Ca::serving(dns names, now, valid) ─▶ Leaf (the injection webhook's and the mTLS port's serving certificate)
//!  workload::sign(ca, CSR, identity, now, ttl) ─▶ chain PEMs: leaf, intermediates, root
//!
//!  bearer token ─authn (TokenReview | token file)─▶ identity ─┐
//!  CSR (only its public key is used) ─────────────────────────┴─▶ service: CreateCertificate ─▶ cert_chain
//! ```

pub mod args;
pub mod authn;
#[cfg(feature = "kube")]
pub mod kube;
pub mod ledger;
pub mod service;
pub mod serving;
pub mod source;
pub mod workload;

pub use args::{CaArgs, CaOptions};
pub use service::CaServer;
pub use source::Authority;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use std::time::{Duration, SystemTime};

/// A signing certificate (a root, or an intermediate under one) and the key it signs with.
pub struct Ca {
    /// The certificate that signs (the root itself when self-signed).
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificates between `cert_pem` and the root (empty for a root, or an intermediate the root signed).
    pub intermediates: Vec<String>,
    /// The trust anchor every certificate this CA signs chains to.
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Never prints the key.
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("intermediates", &self.intermediates.len())
            .field("root_not_after", &self.root_not_after())
            .finish_non_exhaustive()
    }
}

/// A signed certificate (leaf first, then the root) and its key, in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA certificate: {0}")]
    Cert(String),
    #[error("the CA key: {0}")]
    Key(String),
    #[error("signing: {0}")]
    Sign(String),
    #[error("the root certificate: {0}")]
    Root(String),
}

/// How far before `now` a certificate is valid from: clocks in a cluster differ a little.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

fn window(params: &mut CertificateParams, now: SystemTime, valid: Duration) {
    params.not_before = time::OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
    params.not_after = time::OffsetDateTime::from(now + valid);
}

impl Ca {
    /// A new self-signed root (ECDSA P-256) named `common_name`, valid from `now` for `valid`.
    pub fn generate(common_name: &str, now: SystemTime, valid: Duration) -> Result<Ca, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| CaError::Sign(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "sluice");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        window(&mut params, now, valid);
        let key = KeyPair::generate().map_err(|e| CaError::Key(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| CaError::Sign(e.to_string()))?;
        let key_pem = key.serialize_pem();
        let cert_pem = cert.pem();
        Ok(Ca {
            root_pem: cert_pem.clone(),
            cert_pem,
            key_pem,
            intermediates: vec![],
            issuer: Issuer::new(params, key),
        })
    }

    /// The root a previous [`Ca::generate`] wrote out.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::Cert(e.to_string()))?;
        let (cert_pem, key_pem) = (cert_pem.to_string(), key_pem.to_string());
        Ok(Ca { root_pem: cert_pem.clone(), cert_pem, key_pem, intermediates: vec![], issuer })
    }

    /// An intermediate CA in Istio's `cacerts` layout: `ca-cert.pem` signs with `ca-key.pem`; `cert-chain.pem`
    /// is its chain (it may start with `ca-cert.pem` itself and end with the root; both are dropped here);
    /// `root-cert.pem` is the trust anchor. The key must fit the certificate (checked: a mismatch would sign
    /// certificates nobody can verify).
    pub fn plugged(ca_cert: &str, ca_key: &str, cert_chain: &str, root_cert: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(ca_key).map_err(|e| CaError::Key(e.to_string()))?;
        let spki = certs(ca_cert).first().map(|c| spki_of(c)).ok_or_else(|| CaError::Cert("no CERTIFICATE".into()))?;
        if spki.as_deref() != Some(key.public_key_raw()) {
            return Err(CaError::Key("does not fit the CA certificate (ca-cert.pem)".into()));
        }
        let issuer = Issuer::from_ca_cert_pem(ca_cert, key).map_err(|e| CaError::Cert(e.to_string()))?;
        let root = certs(root_cert);
        let [root] = root.as_slice() else {
            return Err(CaError::Root(format!("holds {} certificates; want one", root.len())));
        };
        let own = certs(ca_cert);
        let intermediates =
            certs(cert_chain).into_iter().filter(|c| c != root && Some(c) != own.first()).map(|c| pem_of(&c)).collect();
        Ok(Ca { cert_pem: pem_of(&own[0]), key_pem: ca_key.to_string(), intermediates, root_pem: pem_of(root), issuer })
    }

    /// The issuer rcgen signs with.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// What follows a leaf this CA signed, in order: the signing certificate (unless it is the root), the
    /// intermediates, the root. One PEM certificate per entry.
    pub fn chain_after_leaf(&self) -> Vec<String> {
        let mut chain = Vec::new();
        if self.cert_pem.trim() != self.root_pem.trim() {
            chain.push(self.cert_pem.clone());
        }
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.root_pem.clone());
        chain
    }

    /// When the root stops being valid (the trust anchor's end, what `sluice_ca_root_expiry_seconds` counts to).
    pub fn root_not_after(&self) -> Option<SystemTime> {
        describe(&self.root_pem).map(|(_, until)| until)
    }
    /// A TLS server certificate for `dns_names` (the first is also its common name), valid from `now` for `valid`.
    pub fn serving(&self, dns_names: &[String], now: SystemTime, valid: Duration) -> Result<Leaf, CaError> {
        self.serving_with_uri(dns_names, None, now, valid)
    }

    /// As [`Ca::serving`], with a URI SAN too (the mTLS port's certificate carries Sluice's SPIFFE identity).
    pub fn serving_with_uri(
        &self,
        dns_names: &[String],
        uri: Option<&str>,
        now: SystemTime,
        valid: Duration,
    ) -> Result<Leaf, CaError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| CaError::Sign(e.to_string()))?;
        if let Some(first) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = dns_names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.as_str().try_into().map(SanType::DnsName).map_err(|e| CaError::Sign(format!("{n}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(uri) = uri {
            let ia5 = uri.try_into().map_err(|e| CaError::Sign(format!("{uri}: {e}")))?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        window(&mut params, now, valid);
        let key = KeyPair::generate().map_err(|e| CaError::Key(e.to_string()))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.chain_after_leaf().concat()),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DER certificates in `pem` (unparseable blocks dropped: the caller checks the count).
fn certs(pem: &str) -> Vec<Vec<u8>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

/// The raw public key (the SubjectPublicKeyInfo's bit string) of a DER certificate.
fn spki_of(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// The DNS names and the end of validity of the first certificate in `pem`, for deciding whether to sign anew.
pub fn describe(pem: &str) -> Option<(Vec<String>, SystemTime)> {
    use x509_parser::prelude::*;
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let until =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).ok()?);
    Some((names, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_root_signs_certificates_that_chain_to_it() {
        let now = SystemTime::now();
        let ca = Ca::generate("sluice-webhook-ca", now, Duration::from_secs(3600)).unwrap();
        let again = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let names = vec!["sluice.sluice-system.svc".to_string(), "localhost".to_string()];
        let leaf = again.serving(&names, now, Duration::from_secs(600)).unwrap();
        assert!(leaf.chain_pem.ends_with(&ca.cert_pem), "the chain carries the root");
        let (got, until) = describe(&leaf.chain_pem).unwrap();
        assert_eq!(got, names);
        let left = until.duration_since(now).unwrap();
        assert!(left > Duration::from_secs(590) && left <= Duration::from_secs(600), "{left:?}");

        // rustls accepts it as a server certificate for the name, from the root.
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
        let chain: Vec<CertificateDer> =
            CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes()).map(Result::unwrap).collect();
        let name = ServerName::try_from("sluice.sluice-system.svc").unwrap();
        let at = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        use rustls::client::danger::ServerCertVerifier;
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], at).expect("verifies");
        let other = ServerName::try_from("evil.example").unwrap();
        assert!(verifier.verify_server_cert(&chain[0], &chain[1..], &other, &[], at).is_err());
    }

    #[test]
    fn a_broken_store_is_named() {
        assert!(matches!(Ca::from_pem("x", "y"), Err(CaError::Key(_))));
        let ca = Ca::generate("a", SystemTime::now(), Duration::from_secs(60)).unwrap();
        assert!(matches!(Ca::from_pem("not pem", &ca.key_pem), Err(CaError::Cert(_))));
    }
}
