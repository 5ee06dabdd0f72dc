//! Workload certificates: a CSR and an authenticated identity in, a signed chain out. Pure (the clock is passed in).
//!
//! ```text
//!  CSR (PEM) ─rcgen parse + self-signature check─▶ its public key ─┐   (subject, SANs, extensions: not copied)
//!  identity (from the caller's token) ──────────────────────────────┼─▶ leaf: one URI SAN = identity,
//!  now, ttl (Ttl::pick: default, capped by the max) ────────────────┘   digitalSignature + keyEncipherment,
//!                                                                       serverAuth + clientAuth, not a CA,
//!                                                                       now − 5 min .. now + ttl, random serial
//!  ─▶ [leaf, signing CA (when not the root), intermediates…, root]
//! ```
//! The CSR's SANs are read only to refuse one that asks for another SPIFFE identity than the token's: a mismatch is
//! a misconfigured or hostile caller, and refusing it (rather than silently issuing the token's identity) tells
//! the operator so. Whatever the CSR says, the issued identity is the token's.

use super::{CLOCK_SKEW, Ca};
use crate::tls::Identity;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use std::time::{Duration, SystemTime};

/// How long workload certificates last: `default` when the request names no lifetime, never more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ttl {
    pub default: Duration,
    pub max: Duration,
}

impl Default for Ttl {
    fn default() -> Self {
        Self { default: Duration::from_secs(24 * 3600), max: Duration::from_secs(7 * 24 * 3600) }
    }
}

impl Ttl {
    /// The lifetime for a request's `validity_duration` (seconds; 0 or less: the default), capped at the max.
    pub fn pick(&self, requested_secs: i64) -> Duration {
        let asked = u64::try_from(requested_secs).ok().filter(|s| *s > 0).map(Duration::from_secs);
        asked.unwrap_or(self.default).min(self.max)
    }
}

/// Why no certificate was signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("csr: not a PEM certificate signing request ({0})")]
    NotACsr(String),
    #[error("csr: its signature does not verify with its own public key")]
    BadSignature,
    #[error(
        "csr: asks for `{asked}`, but the token authenticates `{identity}`; Sluice issues certificates for the \
         token's identity only"
    )]
    OtherIdentity { asked: String, identity: String },
    #[error("signing: {0}")]
    Sign(String),
}

/// A signed workload certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// One PEM certificate per entry: the leaf, then intermediates, then the root.
    pub chain: Vec<String>,
    /// The leaf's serial number, hex.
    pub serial: String,
    pub not_after: SystemTime,
}

/// Signs a certificate for `identity` over the public key of `csr_pem`, valid from `now − 5 min` for `ttl` (and
/// never past the signing certificate's own end).
pub fn sign(ca: &Ca, csr_pem: &str, identity: &Identity, now: SystemTime, ttl: Duration) -> Result<Issued, SignError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => SignError::BadSignature,
        other => SignError::NotACsr(other.to_string()),
    })?;
    let id = identity.to_string();
    for san in &csr.params.subject_alt_names {
        if let SanType::URI(uri) = san
            && uri.as_str() != id
        {
            return Err(SignError::OtherIdentity { asked: uri.as_str().to_string(), identity: id });
        }
    }
    let mut params = CertificateParams::default();
    // Istio's workload certificates have an empty subject (the SAN is then critical, as rcgen writes it).
    params.distinguished_name = DistinguishedName::new();
    let uri = id.as_str().try_into().map_err(|e| SignError::Sign(format!("{id}: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let serial = random_serial()?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let mut not_after = now + ttl;
    if let Some((_, ca_end)) = super::describe(&ca.cert_pem) {
        not_after = not_after.min(ca_end);
    }
    params.not_before = time::OffsetDateTime::from(now.checked_sub(CLOCK_SKEW).unwrap_or(now));
    params.not_after = time::OffsetDateTime::from(not_after);
    let cert = params.signed_by(&csr.public_key, ca.issuer()).map_err(|e| SignError::Sign(e.to_string()))?;
    let mut chain = vec![cert.pem()];
    chain.extend(ca.chain_after_leaf());
    Ok(Issued { chain, serial: hex(&serial), not_after })
}

/// 16 random bytes, the first bit clear (a positive integer, as RFC 5280 wants): each certificate gets its own
/// serial even when a workload asks twice with one key (rcgen's default derives it from the key).
fn random_serial() -> Result<[u8; 16], SignError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| SignError::Sign("no randomness".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn id(ns: &str, sa: &str) -> Identity {
        Identity::parse(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"), "cluster.local").unwrap()
    }

    fn csr(sans: Vec<SanType>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn the_leaf_names_the_token_identity_only_and_chains_to_the_root() {
        let now = SystemTime::now();
        let ca = Ca::generate("mesh", now, Duration::from_secs(86400 * 30)).unwrap();
        let dns = SanType::DnsName("evil.example".try_into().unwrap());
        let issued = sign(&ca, &csr(vec![dns]), &id("shop", "cart"), now, Duration::from_secs(3600)).unwrap();
        assert_eq!(issued.chain.len(), 2);
        assert_eq!(issued.chain[1], ca.root_pem);
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(issued.chain[0].as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        assert_eq!(sans, [r#"URI("spiffe://cluster.local/ns/shop/sa/cart")"#], "the CSR's DNS name is not copied");
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let from = cert.validity().not_before.timestamp();
        let to = cert.validity().not_after.timestamp();
        let now_s = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!((now_s - from - 300).abs() <= 1 && (to - now_s - 3600).abs() <= 1, "{from} {to} {now_s}");
        assert_eq!(cert.raw_serial_as_string().replace(':', ""), issued.serial);
        let again = sign(&ca, &csr(vec![]), &id("shop", "cart"), now, Duration::from_secs(3600)).unwrap();
        assert_ne!(again.serial, issued.serial);
    }

    #[test]
    fn a_csr_for_another_identity_or_not_a_csr_is_refused() {
        let now = SystemTime::now();
        let ca = Ca::generate("mesh", now, Duration::from_secs(86400)).unwrap();
        let other = SanType::URI("spiffe://cluster.local/ns/kube-system/sa/admin".try_into().unwrap());
        let err = sign(&ca, &csr(vec![other]), &id("shop", "cart"), now, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, SignError::OtherIdentity { .. }), "{err}");
        assert!(err.to_string().contains("ns/kube-system/sa/admin"), "{err}");
        let same = SanType::URI("spiffe://cluster.local/ns/shop/sa/cart".try_into().unwrap());
        assert!(sign(&ca, &csr(vec![same]), &id("shop", "cart"), now, Duration::from_secs(60)).is_ok());
        let err = sign(&ca, "hello", &id("a", "b"), now, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, SignError::NotACsr(_)), "{err}");
        let err = sign(&ca, &ca.root_pem, &id("a", "b"), now, Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, SignError::NotACsr(_)), "a certificate is not a CSR: {err}");
    }

    #[test]
    fn a_tampered_csr_fails_its_signature_check() {
        use base64::Engine;
        let pem = csr(vec![]);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let tampered = format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
        let ca = Ca::generate("mesh", SystemTime::now(), Duration::from_secs(86400)).unwrap();
        let err = sign(&ca, &tampered, &id("a", "b"), SystemTime::now(), Duration::from_secs(60)).unwrap_err();
        assert_eq!(err, SignError::BadSignature);
    }

    #[test]
    fn lifetimes_default_and_are_capped() {
        let ttl = Ttl { default: Duration::from_secs(100), max: Duration::from_secs(500) };
        assert_eq!(ttl.pick(0), Duration::from_secs(100));
        assert_eq!(ttl.pick(-5), Duration::from_secs(100));
        assert_eq!(ttl.pick(200), Duration::from_secs(200));
        assert_eq!(ttl.pick(i64::MAX), Duration::from_secs(500));
    }
}
