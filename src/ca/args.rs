//! `sluice serve --ca ...`: the CA's flags and what they assemble into ([`CaOptions`], served by `server`).
//!
//! ```text
//!  CA source:      --ca-dir (plugged-in intermediate) > --kube (Secret --ca-secret) > --state-dir (mesh-ca.pem)
//!  authenticator:  --ca-tokens FILE (file mode) > --kube (TokenReview, --ca-audiences)
//! ```

use super::authn::{Authenticate, TokenFile};
use super::serving::Serving;
use super::workload::Ttl;
use super::{Authority, CaServer, source};
use crate::xds::Trust;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The workload CA (Istio's certificate service on the mTLS port).
#[derive(clap::Args, Debug, Clone, serde::Serialize)]
pub struct CaArgs {
    /// Serve Istio's IstioCertificateService/CreateCertificate on the mTLS xDS port (--xds-tls-addr): workload
    /// certificates for spiffe://TRUST_DOMAIN/ns/NS/sa/SA. Without --tls-cert the port serves a certificate the
    /// mesh CA signs. Needs --ca-dir, --state-dir or --kube (where the CA lives).
    #[arg(long = "ca", env = "SLUICE_CA")]
    pub ca: bool,
    /// A plugged-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem); re-read
    /// every 5 s when the files change (a bad set keeps the last good one).
    #[arg(long = "ca-dir", env = "SLUICE_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// With --kube and no --ca-dir: the Secret (namespace/name) holding the root Sluice creates once.
    #[arg(long = "ca-secret", env = "SLUICE_CA_SECRET", default_value = "sluice-system/sluice-mesh-ca")]
    pub ca_secret: String,
    /// File mode's credentials: lines `NAMESPACE/SERVICEACCOUNT SHA256HEX-OF-TOKEN` (# comments), re-read when it
    /// changes. Without it, --kube checks tokens with a TokenReview.
    #[arg(long = "ca-tokens", env = "SLUICE_CA_TOKENS")]
    pub ca_tokens: Option<PathBuf>,
    /// With --kube: audiences a token must be valid for (one in common suffices).
    #[arg(
        long = "ca-audiences",
        env = "SLUICE_CA_AUDIENCES",
        value_delimiter = ',',
        default_value = "sluice-ca,istio-ca"
    )]
    pub ca_audiences: Vec<String>,
    /// Lifetime of a workload certificate when the request names none, in seconds.
    #[arg(long = "workload-cert-ttl-secs", env = "SLUICE_WORKLOAD_CERT_TTL_SECS", default_value_t = 86400)]
    pub workload_cert_ttl_secs: u64,
    /// Longest lifetime a workload certificate gets, in seconds (longer requests are capped).
    #[arg(long = "max-workload-cert-ttl-secs", env = "SLUICE_MAX_WORKLOAD_CERT_TTL_SECS", default_value_t = 604800)]
    pub max_workload_cert_ttl_secs: u64,
    /// DNS names of the mTLS port's certificate when the mesh CA signs it (no --tls-cert).
    #[arg(
        long = "ca-dns-names",
        env = "SLUICE_CA_DNS_NAMES",
        value_delimiter = ',',
        default_value = "sluice.sluice-system.svc,sluice.sluice-system.svc.cluster.local"
    )]
    pub ca_dns_names: Vec<String>,
}

/// The CA as `server` runs it.
#[derive(Clone, Debug)]
pub struct CaOptions {
    pub server: CaServer,
    /// `--ca-dir`, watched for changes.
    pub dir: Option<PathBuf>,
    /// The mTLS port when no `--tls-cert` is given (then the mesh CA signs its certificate).
    pub addr: SocketAddr,
    pub trust: Trust,
    pub serving: Serving,
}

impl CaArgs {
    /// The lifetimes, checked.
    pub fn ttl(&self) -> anyhow::Result<Ttl> {
        if self.workload_cert_ttl_secs == 0 || self.max_workload_cert_ttl_secs == 0 {
            anyhow::bail!("--workload-cert-ttl-secs and --max-workload-cert-ttl-secs must be more than 0");
        }
        Ok(Ttl {
            default: Duration::from_secs(self.workload_cert_ttl_secs),
            max: Duration::from_secs(self.max_workload_cert_ttl_secs),
        })
    }

    /// Whether the CA can be assembled from these flags, before any IO (an error names the flags).
    pub fn check(&self, state_dir: Option<&Path>, kube: bool) -> anyhow::Result<()> {
        if !self.ca {
            return Ok(());
        }
        if self.ca_dir.is_none() && state_dir.is_none() && !kube {
            anyhow::bail!("--ca needs somewhere to keep its CA: --ca-dir (a plugged-in CA), --state-dir or --kube");
        }
        if self.ca_tokens.is_none() && !kube {
            anyhow::bail!("--ca needs a way to authenticate workloads: --ca-tokens FILE, or --kube (TokenReview)");
        }
        self.ttl().map(|_| ())
    }

    /// The CA, its authenticator and the service (`None` without `--ca`). `kube`: the cluster's client, if any.
    pub async fn options(
        &self,
        state_dir: Option<&Path>,
        #[cfg(feature = "kube")] kube: Option<&::kube::Client>,
        addr: SocketAddr,
        trust: Trust,
    ) -> anyhow::Result<Option<CaOptions>> {
        #[cfg(not(feature = "kube"))]
        let kube: Option<&()> = None;
        if !self.ca {
            return Ok(None);
        }
        self.check(state_dir, kube.is_some())?;
        let now = SystemTime::now();
        let ca = match (&self.ca_dir, kube, state_dir) {
            (Some(dir), _, _) => source::from_cacerts_dir(dir, now).map_err(|e| anyhow::anyhow!("--ca-dir: {e}"))?,
            #[cfg(feature = "kube")]
            (None, Some(client), _) => super::kube::from_secret(client, &self.ca_secret).await?,
            (None, _, Some(dir)) => source::from_state_dir(dir, now).map_err(|e| anyhow::anyhow!("--ca: {e}"))?,
            _ => unreachable!("checked above"),
        };
        let authn: Arc<dyn Authenticate> = match (&self.ca_tokens, kube) {
            (Some(file), _) => Arc::new(TokenFile::open(file).map_err(|e| anyhow::anyhow!("--ca-tokens {e}"))?),
            #[cfg(feature = "kube")]
            (None, Some(client)) => {
                Arc::new(super::kube::TokenReviewer::new(client.clone(), self.ca_audiences.clone()))
            }
            _ => unreachable!("checked above"),
        };
        let serving = Serving { dns_names: self.ca_dns_names.clone(), trust_domain: trust.trust_domain.clone() };
        let server = CaServer::new(Authority::new(ca), authn, self.ttl()?, trust.trust_domain.clone());
        Ok(Some(CaOptions { server, dir: self.ca_dir.clone(), addr, trust, serving }))
    }
}
