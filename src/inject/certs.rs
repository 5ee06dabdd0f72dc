//! The webhook's serving certificate outside Kubernetes: files given with `--inject-tls-cert`/`--inject-tls-key`
//! (re-read when they change), or signed at start by a CA Sluice keeps in `--state-dir` (`webhook-ca.pem`, which
//! an operator puts in the webhook configuration's `caBundle`, and `webhook-ca-key.pem`, mode 0600). In a cluster
//! the Secret plays the state directory's part (`source::kube::webhook`).

use super::webhook::WebhookTls;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The CA's lifetime, and the serving certificate's (signed anew at every start).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
pub const CA_FILE: &str = "webhook-ca.pem";
pub const CA_KEY_FILE: &str = "webhook-ca-key.pem";

/// The CA in `dir`, created when absent; a serving certificate for `names` signed by it. Returns the TLS config
/// and the CA certificate (PEM).
pub fn from_state_dir(dir: &Path, names: &[String]) -> Result<(WebhookTls, String), String> {
    let now = SystemTime::now();
    let (ca, created) =
        crate::ca::source::load_or_create(dir, CA_FILE, CA_KEY_FILE, "sluice-webhook-ca", CA_VALIDITY, now)
            .map_err(|e| e.to_string())?;
    if created {
        tracing::info!(ca = %dir.join(CA_FILE).display(), "created the injection webhook's CA");
    }
    let leaf = ca.serving(names, now, SERVING_VALIDITY).map_err(|e| e.to_string())?;
    Ok((WebhookTls::from_pem(&leaf.chain_pem, &leaf.key_pem)?, ca.cert_pem))
}

/// The pair of files, loaded now; [`watch_files`] keeps them current.
pub fn from_files(cert: &Path, key: &Path) -> Result<WebhookTls, String> {
    let (c, k) = read_pair(cert, key)?;
    WebhookTls::from_pem(&c, &k)
}

fn read_pair(cert: &Path, key: &Path) -> Result<(String, String), String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok((read(cert)?, read(key)?))
}

/// Re-reads the files every `interval`; a changed pair that loads replaces the served one (a broken one is logged
/// and the last good pair keeps serving).
pub async fn watch_files(tls: WebhookTls, cert: PathBuf, key: PathBuf, interval: Duration) {
    let mut last = read_pair(&cert, &key).ok();
    loop {
        tokio::time::sleep(interval).await;
        let now = read_pair(&cert, &key);
        match now {
            Ok(pair) if Some(&pair) != last.as_ref() => match tls.replace(&pair.0, &pair.1) {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "injection webhook certificate reloaded");
                    last = Some(pair);
                }
                Err(e) => {
                    tracing::error!(error = %e, "injection webhook certificate refused; the last good one serves")
                }
            },
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "injection webhook certificate unreadable; the last good one serves"),
        }
    }
}
