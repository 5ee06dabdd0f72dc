//! The injection webhook's certificate in a cluster (`serve --kube --inject`). The first replica creates the CA and
//! a serving certificate and stores them in a Secret; every other replica (and every restart) reads them back, so
//! the cluster trusts one CA. The Lease holder keeps the `caBundle` of each webhook in the
//! MutatingWebhookConfiguration equal to that CA (a `kubectl apply -f deploy/` empties it; it comes back within
//! [`CA_BUNDLE_TICK`]).
//!
//! ```text
//!  GET Secret ─absent─▶ Ca::generate + serving ─▶ POST Secret ─409 (another replica won)─▶ GET again
//!      └present─▶ the serving certificate covers the names and lasts 30 more days? use it : sign anew, PATCH
//!  leader, every 10 s: GET MutatingWebhookConfiguration ─▶ a caBundle differs? merge PATCH `webhooks`
//! ```

use super::{MUTATING_WEBHOOKS, SECRETS};
use crate::ca::{self, Ca};
use crate::inject::certs::{CA_VALIDITY, SERVING_VALIDITY};
use crate::inject::webhook::WebhookTls;
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// How often the leader checks the webhook configuration's `caBundle`.
pub const CA_BUNDLE_TICK: Duration = Duration::from_secs(10);
/// A stored serving certificate closer than this to its end is signed anew at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// The serving certificate (and the CA's PEM) from the Secret `namespace/name`, created when absent.
pub async fn certs(client: &Client, secret: &str, names: &[String]) -> anyhow::Result<(WebhookTls, String)> {
    debug_assert_eq!(SECRETS.resource, "secrets");
    let (namespace, name) =
        secret.split_once('/').ok_or_else(|| anyhow::anyhow!("--inject-secret {secret}: expected namespace/name"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        if let Some(existing) = get_opt(&api, name).await.map_err(|e| anyhow::anyhow!("GET Secret {secret}: {e}"))? {
            return reuse(&api, secret, &existing, names).await;
        }
        let now = SystemTime::now();
        let ca = Ca::generate("sluice-webhook-ca", now, CA_VALIDITY)?;
        let leaf = ca.serving(names, now, SERVING_VALIDITY)?;
        let object = managed_secret(namespace, name, data(&ca.cert_pem, &ca.key_pem, &leaf.chain_pem, &leaf.key_pem));
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(%secret, "created the injection webhook's CA and serving certificate");
                return Ok((
                    WebhookTls::from_pem(&leaf.chain_pem, &leaf.key_pem).map_err(anyhow::Error::msg)?,
                    ca.cert_pem,
                ));
            }
            // Another replica created it first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => anyhow::bail!("POST Secret {secret}: {e}"),
        }
    }
    anyhow::bail!("Secret {secret}: created and gone again five times")
}

async fn reuse(api: &Api<Secret>, secret: &str, s: &Secret, names: &[String]) -> anyhow::Result<(WebhookTls, String)> {
    let field = |key: &str| -> anyhow::Result<String> {
        let bytes =
            s.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| anyhow::anyhow!("Secret {secret}: no {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| anyhow::anyhow!("Secret {secret}: {key} is not PEM text"))
    };
    let (ca_pem, ca_key) = (field(CA_CERT)?, field(CA_KEY)?);
    let ca = Ca::from_pem(&ca_pem, &ca_key).map_err(|e| anyhow::anyhow!("Secret {secret}: {e}"))?;
    let (chain, key) = (field(TLS_CERT).unwrap_or_default(), field(TLS_KEY).unwrap_or_default());
    let usable = ca::describe(&chain).is_some_and(|(have, until)| {
        names.iter().all(|n| have.contains(n)) && until > SystemTime::now() + RENEW_BEFORE
    });
    if usable && let Ok(tls) = WebhookTls::from_pem(&chain, &key) {
        tracing::info!(%secret, "using the injection webhook certificate stored by a replica");
        return Ok((tls, ca_pem));
    }
    let leaf = ca.serving(names, SystemTime::now(), SERVING_VALIDITY)?;
    let patch = serde_json::json!({"data": {
        TLS_CERT: base64::engine::general_purpose::STANDARD.encode(&leaf.chain_pem),
        TLS_KEY: base64::engine::general_purpose::STANDARD.encode(&leaf.key_pem),
    }});
    let name = s.metadata.name.as_deref().unwrap_or_default();
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("PATCH Secret {secret}: {e}"))?;
    tracing::info!(%secret, "signed a new injection webhook serving certificate with the stored CA");
    Ok((WebhookTls::from_pem(&leaf.chain_pem, &leaf.key_pem).map_err(anyhow::Error::msg)?, ca_pem))
}

/// An Opaque Secret `namespace/name` holding `data`, labelled as Sluice's (`app.kubernetes.io/managed-by`).
pub fn managed_secret(namespace: &str, name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".into(), "sluice".into())])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// `GET`, with any 404 as absent (`Api::get_opt` wants the reason `NotFound` too, which not every server sends).
async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(k) => Ok(Some(k)),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

fn data(ca_cert: &str, ca_key: &str, chain: &str, key: &str) -> BTreeMap<String, ByteString> {
    [(CA_CERT, ca_cert), (CA_KEY, ca_key), (TLS_CERT, chain), (TLS_KEY, key)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// While this replica leads, keeps every webhook of the configuration `name` trusting `ca_pem`, until `stop`.
pub async fn keep_ca_bundle(
    client: Client,
    name: String,
    ca_pem: String,
    mut leader: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    debug_assert_eq!(MUTATING_WEBHOOKS.resource, "mutatingwebhookconfigurations");
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let bundle = ByteString(ca_pem.into_bytes());
    let mut reported: Option<String> = None;
    loop {
        if *leader.borrow_and_update() {
            let outcome = patch_bundle(&api, &name, &bundle).await;
            let text = match &outcome {
                Ok(true) => {
                    tracing::info!(config = %name, "set the injection webhook's caBundle");
                    None
                }
                Ok(false) => None,
                Err(e) => Some(e.clone()),
            };
            if text != reported {
                if let Some(e) = &text {
                    tracing::warn!(config = %name, error = %e, "cannot set the injection webhook's caBundle (retrying)");
                }
                reported = text;
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(CA_BUNDLE_TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `Ok(true)`: patched; `Ok(false)`: already right.
async fn patch_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &ByteString,
) -> Result<bool, String> {
    let config = get_opt(api, name).await.map_err(|e| format!("GET: {e}"))?.ok_or("not found (not applied yet?)")?;
    let mut webhooks = config.webhooks.unwrap_or_default();
    if webhooks.iter().all(|w| w.client_config.ca_bundle.as_ref() == Some(bundle)) {
        return Ok(false);
    }
    for w in &mut webhooks {
        w.client_config.ca_bundle = Some(bundle.clone());
    }
    // A merge patch replaces the list whole: every webhook as read, with the bundle set.
    let patch = serde_json::json!({ "webhooks": webhooks });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| format!("PATCH: {e}"))?;
    Ok(true)
}
