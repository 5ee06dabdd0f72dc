//! A throwaway PKI for the mTLS tests: a CA minted with rcgen, a server certificate for Sluice (DNS `sluice.test`
//! and IP 127.0.0.1) and proxy certificates carrying SPIFFE IDs, written as PEM files into a tempdir.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use std::path::{Path, PathBuf};

/// The DNS name in Sluice's test certificate.
pub const SERVER_NAME: &str = "sluice.test";

pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn issue(&self, common_name: &str, sans: Vec<SanType>) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Sluice's serving certificate; `common_name` tells two of them apart.
    pub fn server(&self, common_name: &str) -> Leaf {
        let sans = vec![SanType::DnsName(SERVER_NAME.try_into().unwrap()), SanType::IpAddress([127, 0, 0, 1].into())];
        self.issue(common_name, sans)
    }

    /// A web server's certificate for DNS names `hosts` (an ingress gateway's).
    pub fn host(&self, hosts: &[&str]) -> Leaf {
        let sans = hosts.iter().map(|h| SanType::DnsName((*h).try_into().unwrap())).collect();
        self.issue(hosts.first().copied().unwrap_or("host"), sans)
    }

    /// A proxy certificate with `spiffe://cluster.local/ns/NS/sa/SA`.
    pub fn proxy(&self, namespace: &str, service_account: &str) -> Leaf {
        self.proxy_uri(&format!("spiffe://cluster.local/ns/{namespace}/sa/{service_account}"))
    }

    /// A proxy certificate with any URI SAN.
    pub fn proxy_uri(&self, uri: &str) -> Leaf {
        self.issue("proxy", vec![SanType::URI(uri.try_into().unwrap())])
    }
}

impl Leaf {
    /// Writes `NAME.pem` and `NAME-key.pem` into `dir`; returns (cert, key) paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// Writes the CA certificate as `NAME.pem` into `dir`.
pub fn write_ca(ca: &Ca, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, &ca.cert_pem).unwrap();
    path
}
