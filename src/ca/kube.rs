//! The CA in a cluster: the root kept in a Secret every replica shares, and tokens checked by the API server.
//!
//! ```text
//!  GET Secret --ca-secret ─absent─▶ Ca::generate ─▶ POST ─409 (another replica won)─▶ GET again ─▶ its root
//!        └present─▶ Ca::from_pem(ca-cert.pem, ca-key.pem)
//!  bearer token ─▶ POST authentication.k8s.io/v1 TokenReview {token, audiences: --ca-audiences}
//!                   status.authenticated, status.audiences ∩ ours, status.user.username = system:serviceaccount:NS:SA
//! ```
//! The Secret's keys are istiod's (`ca-cert.pem`, `ca-key.pem`, as in `istio-ca-secret`). Who can read it holds
//! the mesh's root key: the Role in `deploy/` lets only Sluice's service account read Secrets of `sluice-system`.

use super::authn::{Authenticate, Caller, Refusal, service_account};
use super::source::{ROOT_NAME, ROOT_VALIDITY};
use crate::ca::Ca;
use crate::source::kube::{SECRETS, TOKEN_REVIEWS};
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::SystemTime;

const CERT_KEY: &str = "ca-cert.pem";
const KEY_KEY: &str = "ca-key.pem";

/// The mesh root from the Secret `namespace/name`, created when absent (the first replica wins; the others and
/// every restart read it back).
pub async fn from_secret(client: &Client, secret: &str) -> anyhow::Result<Ca> {
    debug_assert!(SECRETS.verbs.contains(&"create"));
    let (namespace, name) =
        secret.split_once('/').ok_or_else(|| anyhow::anyhow!("--ca-secret {secret}: expected namespace/name"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        match api.get(name).await {
            Ok(existing) => return read(secret, &existing),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => anyhow::bail!("GET Secret {secret}: {e}"),
        }
        let ca = Ca::generate(ROOT_NAME, SystemTime::now(), ROOT_VALIDITY)?;
        let data = [(CERT_KEY, &ca.cert_pem), (KEY_KEY, &ca.key_pem)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let object = crate::source::kube::webhook::managed_secret(namespace, name, data);
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(%secret, "created the mesh CA's root");
                return Ok(ca);
            }
            // Another replica created it first: use theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => anyhow::bail!("POST Secret {secret}: {e}"),
        }
    }
    anyhow::bail!("Secret {secret}: created and gone again five times")
}

fn read(secret: &str, s: &Secret) -> anyhow::Result<Ca> {
    let field = |key: &str| -> anyhow::Result<String> {
        let bytes =
            s.data.as_ref().and_then(|d| d.get(key)).ok_or_else(|| anyhow::anyhow!("Secret {secret}: no {key}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| anyhow::anyhow!("Secret {secret}: {key} is not PEM text"))
    };
    let ca = Ca::from_pem(&field(CERT_KEY)?, &field(KEY_KEY)?).map_err(|e| anyhow::anyhow!("Secret {secret}: {e}"))?;
    tracing::info!(%secret, "using the mesh CA root stored in the Secret");
    Ok(ca)
}

/// Kubernetes mode's authenticator: the API server reviews each token for `audiences`.
pub struct TokenReviewer {
    client: Client,
    audiences: Vec<String>,
}

impl TokenReviewer {
    pub fn new(client: Client, audiences: Vec<String>) -> Self {
        debug_assert_eq!(TOKEN_REVIEWS.resource, "tokenreviews");
        Self { client, audiences }
    }

    async fn review(&self, token: &str) -> Result<Caller, Refusal> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(self.audiences.clone()) },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await.map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            Refusal::Unavailable(format!("POST TokenReview: {e}"))
        })?;
        judge(answer.status.unwrap_or_default(), &self.audiences)
    }
}

/// The API server's verdict on a token, as this CA reads it (pure).
pub fn judge(
    status: k8s_openapi::api::authentication::v1::TokenReviewStatus,
    want: &[String],
) -> Result<Caller, Refusal> {
    if status.authenticated != Some(true) {
        let why = status.error.unwrap_or_else(|| "the API server did not authenticate it".into());
        return Err(match why.to_ascii_lowercase().contains("expired") {
            true => Refusal::Expired(why),
            false => Refusal::Invalid(why),
        });
    }
    // With spec.audiences the API server answers the ones the token is valid for; none in common (or none
    // answered) is refused: a token minted for another service must not get a mesh identity.
    let got = status.audiences.unwrap_or_default();
    if !got.iter().any(|a| want.contains(a)) {
        return Err(Refusal::Audience { got, want: want.to_vec() });
    }
    let username = status.user.and_then(|u| u.username).unwrap_or_default();
    service_account(&username)
}

impl Authenticate for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Refusal>> {
        Box::pin(self.review(token))
    }
}

#[cfg(test)]
#[path = "kube_tests.rs"]
mod tests;
