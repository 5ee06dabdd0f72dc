//! Sluice's certificate authority: a self-signed root it creates (or reads back from where it stored it) and the
//! certificates it signs. Pure given the key material and the clock (`now` is passed in); where the root is kept
//! is the caller's business (the state directory in file mode, a Secret in Kubernetes).
//!
//! ```text
//!  Ca::generate(name, now, valid) ─▶ root (PEM cert + PKCS#8 key) ─▶ stored by the caller
//!  Ca::from_pem(cert, key) ◀── read back ──┘
//!  Ca::serving(dns names, now, valid) ─▶ Leaf (the injection webhook's serving certificate)
//! ```

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use std::time::{Duration, SystemTime};

/// A root certificate and the key it signs with.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
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
        Ok(Ca { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The root a previous [`Ca::generate`] wrote out.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CaError::Cert(e.to_string()))?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    /// A TLS server certificate for `dns_names` (the first is also its common name), valid from `now` for `valid`.
    pub fn serving(&self, dns_names: &[String], now: SystemTime, valid: Duration) -> Result<Leaf, CaError> {
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
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        window(&mut params, now, valid);
        let key = KeyPair::generate().map_err(|e| CaError::Key(e.to_string()))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Leaf { chain_pem: format!("{}{}", cert.pem(), self.cert_pem), key_pem: key.serialize_pem() })
    }
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
