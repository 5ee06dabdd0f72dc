//! A release change sent to a follower replica, forwarded to the leader (Kubernetes mode), exactly once.
//!
//! ```text
//!  REST / gRPC on any replica ─▶ run(local) ─▶ Ok / refusal ─────────────────────────────▶ answered here
//!                                   │ NotLeader (and the request was not forwarded to us)
//!                                   ▼
//!                    Shared::leader_api_url() ─ none yet ──────────────┐ wait, re-resolve, try again
//!                                   │                                  │ (until `2 × lease`: then 503 NoLeader)
//!                                   ▼                                  │
//!        POST/PUT/DELETE <leader>/api/v1/… + Authorization + x-sluice-forwarded-by: <us>
//!                   ├─ not connected (refused, unreachable) ───────────┤  certainly not applied
//!                   ├─ 409 reason NotLeader (leadership moved) ────────┘
//!                   ├─ any other answer ───────────────────────────────────────────▶ relayed as is
//!                   └─ sent, then reset or no answer in time ──────────────────────▶ 502 / 504: may have applied
//! ```
//! **Exactly once**: a request is sent again only when it certainly was not applied: it never reached a server,
//! or the server refused it as a follower (a follower refuses before it changes anything). Once it may have been
//! delivered, the answer says the change may or may not have applied and how to check. **Loops**: a forwarded
//! request carries [`FORWARDED_BY`]; a replica that receives one and does not lead answers 409 NotLeader itself,
//! never forwarding twice (the first follower re-resolves the leader and retries).
//!
//! The follower has already passed the request through its own guard (`admin::guard`, or `ApiAuth` for gRPC). The
//! leader checks it again: `Authorization` is forwarded as is (replicas share `--api-token-file`'s token), while
//! `Origin`, `Sec-Fetch-*` and `Host` are not (they describe the browser's view of the follower). Without a token
//! the leader takes changes from loopback peers only, so replicas on several hosts need `--api-token-file`.

use super::{ReleaseController, ReleaseError};
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

/// The header marking a forwarded request: the forwarding replica's identity.
pub const FORWARDED_BY: &str = "x-sluice-forwarded-by";
/// How long a leader gets to answer a forwarded change (it waits up to [`super::STORE_WAIT`] for the cluster).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(15);
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A change request as the leader's REST API takes it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// Path and query, e.g. `/api/v1/namespaces/default/releases/reviews/weight`.
    pub path: String,
    pub body: Bytes,
    /// The caller's `Authorization` value, forwarded as is.
    pub authorization: Option<String>,
    /// The [`FORWARDED_BY`] value the request arrived with: such a request is never forwarded again.
    pub forwarded_by: Option<String>,
}

/// The leader's answer, relayed to the caller.
#[derive(Clone, Debug)]
pub struct Relayed {
    pub status: StatusCode,
    /// JSON: a release view, `{}`, or `{"error", "reason", ...}`.
    pub body: Bytes,
    /// The leader that answered.
    pub leader: String,
}

impl Relayed {
    /// The `reason` of an error answer (see [`ReleaseError::reason`]).
    pub fn reason(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("reason")?.as_str().map(str::to_string)
    }

    fn is_not_leader(&self) -> bool {
        self.status == StatusCode::CONFLICT && self.reason().as_deref() == Some("NotLeader")
    }
}

/// Where a request ended: here (applied or refused by this replica's controller) or at the leader.
#[derive(Debug)]
pub enum Answer<T> {
    Here(Result<T, ReleaseError>),
    There(Relayed),
}

/// Why a forwarded change has no answer from the leader.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Certainly not applied: no leader was known, reachable or leading for the whole wait.
    #[error(
        "no leading replica took the change within {} ms (this replica does not lead; last: {last}); it was not \
         applied: send it again",
        .waited.as_millis()
    )]
    NoLeader { waited: Duration, last: String },
    /// Sent to the leader, then the connection broke before its answer.
    #[error(
        "forwarded to the leading replica {leader} ({url}), whose answer was lost ({cause}): the change may or may \
         not have applied; check with `sluice release get` before sending it again"
    )]
    Lost { leader: String, url: String, cause: String },
    /// Sent to the leader, which did not answer in time.
    #[error(
        "forwarded to the leading replica {leader} ({url}), which did not answer within {} s: the change may or \
         may not have applied; check with `sluice release get` before sending it again",
        ANSWER_WITHIN.as_secs()
    )]
    TimedOut { leader: String, url: String },
}

impl ForwardError {
    /// The HTTP status of this answer: 503 when not applied, 502 / 504 when it may have been.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoLeader { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Lost { .. } => StatusCode::BAD_GATEWAY,
            ForwardError::TimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A stable name beside the message, as [`ReleaseError::reason`].
    pub fn reason(&self) -> &'static str {
        match self {
            ForwardError::NoLeader { .. } => "NoLeader",
            ForwardError::Lost { .. } => "ForwardedAnswerLost",
            ForwardError::TimedOut { .. } => "ForwardedTimedOut",
        }
    }
}

/// Runs `local` on this replica; where it answers NotLeader, forwards `request` to the leader (see the module
/// docs for when it retries). `local` runs again before each retry: this replica may have become the leader.
pub async fn run<T, F, Fut>(
    controller: &ReleaseController,
    request: &Request,
    mut local: F,
) -> Result<Answer<T>, ForwardError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReleaseError>>,
{
    let started = Instant::now();
    loop {
        let here = local().await;
        let shared = match (&here, controller.shared()) {
            (Err(ReleaseError::NotLeader { .. }), Some(s)) if request.forwarded_by.is_none() => s,
            _ => return Ok(Answer::Here(here)),
        };
        let budget = (2 * shared.lease).max(Duration::from_secs(2));
        let last = match (shared.holder(), shared.leader_api_url()) {
            (Some(leader), Some(url)) if leader != shared.identity => {
                match send(&url, request, &shared.identity, ANSWER_WITHIN).await {
                    Ok((status, body)) => {
                        let relayed = Relayed { status, body, leader };
                        if !relayed.is_not_leader() {
                            return Ok(Answer::There(relayed));
                        }
                        format!("{} ({url}) no longer leads", relayed.leader)
                    }
                    Err(SendError::Unsent(cause)) => format!("{leader} ({url}) not reached: {cause}"),
                    Err(SendError::Lost(cause)) => return Err(ForwardError::Lost { leader, url, cause }),
                    Err(SendError::TimedOut) => return Err(ForwardError::TimedOut { leader, url }),
                }
            }
            (Some(leader), None) => format!("the leader {leader} reported no Release API address yet"),
            (Some(_), Some(_)) => "this replica holds the Lease but does not lead yet".to_string(),
            (None, _) => "no replica holds the Lease".to_string(),
        };
        let waited = started.elapsed();
        if waited >= budget {
            return Err(ForwardError::NoLeader { waited, last });
        }
        tracing::debug!(path = %request.path, %last, "release change not forwarded yet; retrying");
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Why one attempt has no answer.
enum SendError {
    /// Never delivered: no connection was made (safe to send again).
    Unsent(String),
    /// Sent, then the connection broke before the whole answer: it may have applied.
    Lost(String),
    /// Sent, and no answer in time ([`ANSWER_WITHIN`]): it may have applied.
    TimedOut,
}

/// One attempt, on a fresh connection (no pooled connection that the server might close under the request).
async fn send(
    base: &str,
    request: &Request,
    identity: &str,
    within: Duration,
) -> Result<(StatusCode, Bytes), SendError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_WITHIN));
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(format!("{}{}", base.trim_end_matches('/'), request.path))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(FORWARDED_BY, identity);
    if let Some(a) = &request.authorization {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    let req = builder.body(Full::new(request.body.clone())).map_err(|e| SendError::Unsent(e.to_string()))?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| match e.is_connect() {
            true => SendError::Unsent(crate::error_chain(&e)),
            false => SendError::Lost(crate::error_chain(&e)),
        })?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| SendError::Lost(crate::error_chain(&e)))?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(within, exchange).await.unwrap_or(Err(SendError::TimedOut))
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
