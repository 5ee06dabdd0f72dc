//! The SPIFFE identity in a client certificate: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a verified client certificate names (Istio's SPIFFE ID form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// Why a certificate names no usable identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the client certificate does not parse: {0}")]
    Parse(String),
    #[error("the client certificate has no URI SAN (want spiffe://{0}/ns/NS/sa/SA)")]
    NoUri(String),
    #[error("the client certificate has {0} URI SANs; a SPIFFE certificate has exactly one")]
    SeveralUris(usize),
    #[error("the client certificate's URI SAN `{0}` is not spiffe://TRUST_DOMAIN/ns/NS/sa/SA")]
    Malformed(String),
    #[error("the client certificate's trust domain `{got}` is not this mesh's `{want}` (--trust-domain)")]
    TrustDomain { got: String, want: String },
}

impl Identity {
    /// Reads the SPIFFE ID out of a certificate (DER) that rustls has already verified.
    pub fn from_cert(der: &[u8], trust_domain: &str) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let san = cert.subject_alternative_name().map_err(|e| IdentityError::Parse(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|s| s.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::NoUri(trust_domain.to_string())),
            [uri] => Self::parse(uri, trust_domain),
            more => Err(IdentityError::SeveralUris(more.len())),
        }
    }

    /// Parses `spiffe://TD/ns/NS/sa/SA` and checks the trust domain.
    pub fn parse(uri: &str, trust_domain: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed(uri.to_string());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts.as_slice() else { return Err(malformed()) };
        if [td, ns, sa].iter().any(|p| p.is_empty()) {
            return Err(malformed());
        }
        if *td != trust_domain {
            return Err(IdentityError::TrustDomain { got: td.to_string(), want: trust_domain.to_string() });
        }
        Ok(Self { trust_domain: td.to_string(), namespace: ns.to_string(), service_account: sa.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_and_name_what_is_wrong() {
        let id = Identity::parse("spiffe://cluster.local/ns/shop/sa/cart", "cluster.local").unwrap();
        assert_eq!((id.namespace.as_str(), id.service_account.as_str()), ("shop", "cart"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        let other = Identity::parse("spiffe://evil.org/ns/shop/sa/cart", "cluster.local").unwrap_err();
        assert!(other.to_string().contains("`evil.org` is not this mesh's `cluster.local`"), "{other}");
        for bad in ["https://x/ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/c"] {
            assert_eq!(Identity::parse(bad, "td"), Err(IdentityError::Malformed(bad.into())), "{bad}");
        }
    }
}
