//! Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate` on the mTLS port: the IO shell around
//! [`authn`](super::authn) and [`workload::sign`](super::workload::sign).
//!
//! ```text
//!  request ─▶ authorization: Bearer TOKEN ─authenticate─▶ NS/SA ─▶ spiffe://TD/ns/NS/sa/SA
//!          ─▶ metadata.ImpersonatedIdentity (if any) must be that identity
//!          ─▶ workload::sign(current CA, csr, identity, now, Ttl::pick(validity_duration)) ─▶ cert_chain
//! ```
//! Every refusal is a gRPC status naming why, counted by bounded reason, and issues nothing. [`status`] is the one
//! place refusals become statuses.

use super::authn::{Authenticate, Refusal, bearer};
use super::workload::{SignError, Ttl, sign};
use super::{Authority, Ca};
use crate::proto::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::proto::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use crate::telemetry::names;
use crate::tls::Identity;
use std::sync::Arc;
use std::time::SystemTime;
use tonic::{Request, Response, Status};

/// The request metadata key Istio uses to ask for another identity (trusted callers only, in istiod).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
/// Largest request accepted: a CSR is a few KB.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The certificate service; cheap to clone.
#[derive(Clone)]
pub struct CaServer {
    inner: Arc<Inner>,
}

struct Inner {
    authority: Authority,
    authn: Arc<dyn Authenticate>,
    ttl: Ttl,
    trust_domain: String,
    /// What was issued to which address (`/debug/syncz`, `sluice proxy-status`).
    ledger: super::ledger::Ledger,
}

impl std::fmt::Debug for CaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaServer")
            .field("authority", &self.inner.authority)
            .field("ttl", &self.inner.ttl)
            .field("trust_domain", &self.inner.trust_domain)
            .finish()
    }
}

/// Why a request got no certificate.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Authn(#[from] Refusal),
    #[error(
        "the request's metadata asks to impersonate `{asked}`, but the token authenticates `{identity}`; Sluice \
         issues certificates for the caller's own identity only"
    )]
    Impersonation { asked: String, identity: String },
    #[error("{0}")]
    Sign(#[from] SignError),
}

impl Refused {
    /// The `reason` label of `sluice_ca_requests_refused_total` (a closed set).
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Authn(r) => r.reason(),
            Refused::Impersonation { .. } => "impersonation",
            Refused::Sign(SignError::OtherIdentity { .. }) => "other-identity",
            Refused::Sign(SignError::NotACsr(_) | SignError::BadSignature) => "bad-csr",
            Refused::Sign(SignError::Sign(_)) => "signing-failed",
        }
    }
}

/// The one mapping of a refusal to a gRPC status.
pub fn status(r: &Refused) -> Status {
    let message = r.to_string();
    match r {
        Refused::Authn(Refusal::Unavailable(_)) => Status::unavailable(message),
        Refused::Authn(_) => Status::unauthenticated(message),
        Refused::Impersonation { .. } | Refused::Sign(SignError::OtherIdentity { .. }) => {
            Status::permission_denied(message)
        }
        Refused::Sign(SignError::NotACsr(_) | SignError::BadSignature) => Status::invalid_argument(message),
        Refused::Sign(SignError::Sign(_)) => Status::internal(message),
    }
}

impl CaServer {
    pub fn new(authority: Authority, authn: Arc<dyn Authenticate>, ttl: Ttl, trust_domain: String) -> Self {
        let ledger = super::ledger::Ledger::default();
        Self { inner: Arc::new(Inner { authority, authn, ttl, trust_domain, ledger }) }
    }

    /// What this CA issued, by the address that asked.
    pub fn ledger(&self) -> super::ledger::Ledger {
        self.inner.ledger.clone()
    }

    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The tonic service to add to the mTLS port's routes.
    pub fn service(&self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Authenticates and signs; `authorization` is the request's metadata value.
    pub async fn issue(
        &self,
        authorization: Option<&str>,
        request: &IstioCertificateRequest,
        now: SystemTime,
    ) -> Result<super::workload::Issued, Refused> {
        let token = bearer(authorization)?;
        let caller = self.inner.authn.authenticate(token).await?;
        let identity = Identity {
            trust_domain: self.inner.trust_domain.clone(),
            namespace: caller.namespace,
            service_account: caller.service_account,
        };
        if let Some(asked) = impersonated(request)
            && asked != identity.to_string()
        {
            return Err(Refused::Impersonation { asked, identity: identity.to_string() });
        }
        let ttl = self.inner.ttl.pick(request.validity_duration);
        let ca = self.inner.authority.current();
        let issued = sign(&ca, &request.csr, &identity, now, ttl)?;
        set_root_expiry(&ca, now);
        Ok(issued)
    }
}

/// `metadata.ImpersonatedIdentity`, when the request carries one (any kind of value counts as asking).
fn impersonated(request: &IstioCertificateRequest) -> Option<String> {
    use prost_types::value::Kind;
    let value = request.metadata.as_ref()?.fields.get(IMPERSONATED_IDENTITY)?;
    Some(match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    })
}

/// `sluice_ca_root_expiry_seconds`: seconds until the root ends (negative once it has).
pub fn set_root_expiry(ca: &Ca, now: SystemTime) {
    if let Some(end) = ca.root_not_after() {
        let left = match end.duration_since(now) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        metrics::gauge!(names::CA_ROOT_EXPIRY).set(left);
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaServer {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr();
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        match self.issue(authorization.as_deref(), request.get_ref(), SystemTime::now()).await {
            Ok(issued) => {
                metrics::counter!(names::CA_ISSUED).increment(1);
                let not_after = time::OffsetDateTime::from(issued.not_after);
                let identity = spiffe_of(&issued.chain[0]).unwrap_or_default();
                tracing::info!(%identity, serial = %issued.serial, %not_after, ?peer, "issued a workload certificate");
                if let Some(peer) = peer {
                    let entry = super::ledger::entry(identity, issued.serial.clone(), issued.not_after);
                    self.inner.ledger.record(peer.ip(), entry);
                }
                Ok(Response::new(IstioCertificateResponse { cert_chain: issued.chain }))
            }
            Err(refused) => {
                metrics::counter!(names::CA_REFUSED, "reason" => refused.reason()).increment(1);
                tracing::warn!(reason = refused.reason(), error = %refused, ?peer, "certificate request refused");
                Err(status(&refused))
            }
        }
    }
}

/// The URI SAN of a PEM certificate (for the log line).
fn spiffe_of(pem: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::*;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some(u.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::authn::{TokenFile, digest_hex};
    use prost_types::{Struct, Value, value::Kind};
    use std::time::Duration;

    fn server(dir: &std::path::Path) -> CaServer {
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("shop/cart {}\n", digest_hex("cart-token"))).unwrap();
        let ca = Ca::generate("mesh", SystemTime::now(), Duration::from_secs(86400)).unwrap();
        let ttl = Ttl { default: Duration::from_secs(3600), max: Duration::from_secs(7200) };
        CaServer::new(Authority::new(ca), Arc::new(TokenFile::open(&tokens).unwrap()), ttl, "td".into())
    }

    fn csr() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap().pem().unwrap()
    }

    fn request(metadata: Option<(&str, &str)>) -> IstioCertificateRequest {
        let metadata = metadata.map(|(k, v)| Struct {
            fields: [(k.to_string(), Value { kind: Some(Kind::StringValue(v.into())) })].into_iter().collect(),
        });
        IstioCertificateRequest { csr: csr(), validity_duration: 0, metadata }
    }

    #[tokio::test]
    async fn each_refusal_names_why_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let ca = server(dir.path());
        let now = SystemTime::now();
        let refused = |r: Result<_, Refused>| {
            let r = r.unwrap_err();
            (status(&r).code(), r.reason())
        };
        let ok = ca.issue(Some("Bearer cart-token"), &request(None), now).await.unwrap();
        assert_eq!(spiffe_of(&ok.chain[0]).unwrap(), "spiffe://td/ns/shop/sa/cart");
        let same = request(Some((IMPERSONATED_IDENTITY, "spiffe://td/ns/shop/sa/cart")));
        assert!(ca.issue(Some("Bearer cart-token"), &same, now).await.is_ok(), "asking for oneself is fine");
        use tonic::Code::*;
        assert_eq!(refused(ca.issue(None, &request(None), now).await), (Unauthenticated, "no-token"));
        assert_eq!(refused(ca.issue(Some("Bearer x"), &request(None), now).await), (Unauthenticated, "invalid-token"));
        let other = request(Some((IMPERSONATED_IDENTITY, "spiffe://td/ns/kube-system/sa/admin")));
        let r = ca.issue(Some("Bearer cart-token"), &other, now).await;
        assert_eq!(refused(r), (PermissionDenied, "impersonation"));
        let mut bad = request(None);
        bad.csr = "not a csr".into();
        assert_eq!(refused(ca.issue(Some("Bearer cart-token"), &bad, now).await), (InvalidArgument, "bad-csr"));
    }
}
