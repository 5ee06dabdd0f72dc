//! The injection webhook's HTTPS server (`sluice serve --inject`, port 15017 as istiod's): `POST /inject` with an
//! AdmissionReview. The IO shell around [`review::answer`](super::review::answer):
//!
//! ```text
//!  TLS (serving certificate: files, the state directory's CA, or the cluster's Secret; swapped live)
//!   └▶ POST /inject ─ Content-Type not JSON? 415 ─ empty? 400 ─ over 6 MiB? 413 ─▶ review::answer ─▶ 200
//!                     every answer counted: sluice_inject_requests_total{result}
//! ```

use super::Settings;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest AdmissionReview accepted (a Pod object is at most ~1.5 MiB in etcd; a review carries it and more).
pub const MAX_BODY: usize = 6 * 1024 * 1024;

/// `sluice serve` flags for the webhook.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct WebhookArgs {
    /// Serve the sidecar injection webhook (`POST /inject`, HTTPS) on --inject-addr.
    #[arg(long = "inject", env = "SLUICE_INJECT")]
    pub enabled: bool,
    #[arg(long = "inject-addr", env = "SLUICE_INJECT_ADDR", default_value = "0.0.0.0:15017")]
    pub addr: SocketAddr,
    /// The serving certificate chain (PEM). Without it Sluice signs its own: from a CA it keeps in --state-dir,
    /// or with --kube in the Secret --inject-secret.
    #[arg(long = "inject-tls-cert", env = "SLUICE_INJECT_TLS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The serving certificate's key (PEM).
    #[arg(long = "inject-tls-key", env = "SLUICE_INJECT_TLS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The names the API server calls the webhook by (the Service `clientConfig.service` names), for the
    /// certificate Sluice signs.
    #[arg(
        long = "inject-dns-names",
        env = "SLUICE_INJECT_DNS_NAMES",
        value_delimiter = ',',
        default_value = "sluice.sluice-system.svc,sluice.sluice-system.svc.cluster.local"
    )]
    pub dns_names: Vec<String>,
    /// With --kube: the Secret (`namespace/name`) holding the webhook's CA and serving certificate, created by
    /// the first replica and reused by the others.
    #[arg(long = "inject-secret", env = "SLUICE_INJECT_SECRET", default_value = "sluice-system/sluice-webhook-certs")]
    pub secret: String,
    /// With --kube: the MutatingWebhookConfiguration whose `caBundle` the lease holder keeps set to that CA.
    #[arg(
        long = "inject-webhook-config",
        env = "SLUICE_INJECT_WEBHOOK_CONFIG",
        default_value = "sluice-sidecar-injector"
    )]
    pub webhook_config: String,
    #[command(flatten)]
    pub settings: Settings,
}

/// The serving certificate, swappable while serving (a renewal, or files that changed).
#[derive(Clone)]
pub struct WebhookTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl WebhookTls {
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, String> {
        Ok(WebhookTls { current: Arc::new(RwLock::new(server_config(chain_pem, key_pem)?)) })
    }

    /// Serves `chain_pem` from the next connection on; a bad pair is refused and the old one kept.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), String> {
        let config = server_config(chain_pem, key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the serving certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the serving certificate has no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("the serving key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the serving certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `POST /inject`; anything else is 404 (405 for another method on /inject).
pub fn router(settings: Arc<Settings>) -> axum::Router {
    axum::Router::new()
        .route("/inject", axum::routing::post(inject))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(settings)
}

async fn inject(State(settings): State<Arc<Settings>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        count("unsupported-media-type");
        tracing::warn!(content_type = ?headers.get(header::CONTENT_TYPE), "injection request refused: not application/json");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "sidecar injection: Content-Type must be application/json\n")
            .into_response();
    }
    if body.is_empty() {
        count("empty");
        tracing::warn!("injection request refused: empty body");
        return (StatusCode::BAD_REQUEST, "sidecar injection: empty body\n").into_response();
    }
    let answer = super::review::answer(&body, &settings);
    count(answer.result);
    let request = &answer.body["response"]["uid"];
    match answer.result {
        "injected" => tracing::info!(uid = %request, "sidecar injected"),
        "invalid" | "refused" => {
            tracing::warn!(uid = %request, result = answer.result, reason = %answer.reason, "injection")
        }
        _ => tracing::debug!(uid = %request, result = answer.result, reason = %answer.reason, "not injected"),
    }
    axum::Json(answer.body).into_response()
}

fn count(result: &'static str) {
    metrics::counter!(crate::telemetry::names::INJECT_REQUESTS, "result" => result).increment(1);
}

/// Serves the webhook on `listener` until `shutdown`: each connection's handshake in its own task (bounded by
/// `within`), within the connection `budget`.
pub async fn serve(
    listener: TcpListener,
    tls: WebhookTls,
    settings: Arc<Settings>,
    budget: crate::conn::Budget,
    within: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let app = router(settings);
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(within);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(100);
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let a = tokio::select! {
            a = crate::conn::accept(&listener, &budget, "injection webhook") => a,
            _ = shutdown.as_mut() => break,
        };
        let (peer, acceptor) = (a.peer, tokio_rustls::TlsAcceptor::from(tls.current()));
        let guarded = crate::conn::Guarded::new(a.tcp, a.place, 0, within);
        let state = guarded.state();
        let (app, builder) = (app.clone(), builder.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(within, acceptor.accept(guarded)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "webhook TLS handshake refused"),
                Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
            };
            state.establish();
            let svc = hyper_util::service::TowerToHyperService::new(app);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}
