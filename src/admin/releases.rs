//! The Release API as REST JSON on the admin port. Views are Kubernetes-shaped (`apiVersion`, `kind`,
//! `metadata`, `spec`, `status`); errors are `{"error": "...", "field": "spec.traffic.canaryWeight"}`. A verb on a
//! Kubernetes release sent to a replica that does not lead is refused with 409 and `"leader": "<Lease holder>"`.
//!
//! | request | does |
//! |---|---|
//! | `GET /api/v1/releases` | every release, all namespaces |
//! | `GET /api/v1/namespaces/{ns}/releases` | the namespace's releases |
//! | `GET .../releases/{name}` | one release |
//! | `PUT .../releases/{name}` | create or replace (body: a ReleasePolicy; only `spec` is required) |
//! | `DELETE .../releases/{name}` | remove an API-created release; `{}` |
//! | `POST .../releases/{name}/weight` | `{"canaryWeight": 2000}` (basis points) |
//! | `POST .../releases/{name}/{verb}` | pause, resume, promote, abort, finalize |
//! | `PUT .../releases/{name}?dryRun=All` | every check of a PUT; answers the release it would make, stores nothing |
//! | `POST .../releases/{name}/{verb}?dryRun=All` | what the verb would do ([`Plan`]), or why it would be refused |
//! | `GET .../releases/{name}/rollout` | Kubernetes mode: the policy's `status.rollout` (the canary Deployment's replicas) |
//! | `GET /api/v1/inventory` | namespaces, Services, ports and versions a release can name ([`inventory`]) |
//!
//! Mutations run on a blocking thread: the controller writes and fsyncs the state file before it answers; a
//! Kubernetes release's weight or verb is answered once its record is in the ReleasePolicy status
//! ([`ReleaseController::change`](crate::release::ReleaseController::change)). Sent to a replica that does not lead, a mutation is forwarded to the leader and
//! its answer relayed ([`forward`]). Every error carries a `reason` (`NotLeader`, `Refused`, `NotStored`, ...).

use super::{AdminState, inventory};
use crate::model::FieldError;
#[cfg(doc)]
use crate::release::Plan;
use crate::release::api::{self, PolicyDocument};
use crate::release::forward::{self, Answer as Forwarded, ForwardError};
use crate::release::{Change, ReleaseError, Verb};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/releases", get(list_all))
        .route("/api/v1/inventory", get(inventory::inventory))
        .route("/api/v1/namespaces/{ns}/releases", get(list))
        .route("/api/v1/namespaces/{ns}/releases/{name}", get(read).put(put).delete(delete))
        .route("/api/v1/namespaces/{ns}/releases/{name}/weight", post(weight))
        .route("/api/v1/namespaces/{ns}/releases/{name}/rollout", get(rollout))
        .route("/api/v1/namespaces/{ns}/releases/{name}/{verb}", post(act))
}

/// An error answer: status, message, and the refused field when one is known.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    /// The Lease holder, when a follower refuses a verb.
    leader: Option<String>,
    /// The kind of error ([`ReleaseError::reason`]), for clients and forwarding replicas.
    reason: &'static str,
}

/// The one place a [`ReleaseError`] becomes an HTTP status and body.
impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        let (message, reason) = (e.to_string(), e.reason());
        let leader = match &e {
            ReleaseError::NotLeader { leader, .. } => leader.clone(),
            _ => None,
        };
        let (status, field) = match e {
            ReleaseError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            ReleaseError::Invalid(f) => (StatusCode::BAD_REQUEST, Some(f.path)),
            ReleaseError::Conflict(_) | ReleaseError::Refused(_) | ReleaseError::NotLeader { .. } => {
                (StatusCode::CONFLICT, None)
            }
            ReleaseError::Persist(_) | ReleaseError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
            ReleaseError::NotStored { .. } | ReleaseError::NotSeen { .. } => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        Self { status, message, field, leader, reason }
    }
}

impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> Self {
        Self { status: e.status(), message: e.to_string(), field: None, leader: None, reason: e.reason() }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ReleaseError::Invalid(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message, "reason": self.reason });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        if let Some(leader) = self.leader {
            body["leader"] = leader.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

type Answer = Result<Response, ApiError>;

/// A mutation's query: `dryRun=All` (Kubernetes' spelling) checks and answers without changing anything.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    #[serde(default)]
    dry_run: Option<String>,
}

impl Params {
    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(FieldError::new("dryRun", format!("must be `All` (as in Kubernetes), not `{v}`")).into()),
        }
    }
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(axum::Json(value).into_response())
}

async fn list_all(State(s): State<AdminState>) -> Answer {
    ok(json!({ "items": s.releases.list(None) }))
}

async fn list(State(s): State<AdminState>, Path(ns): Path<String>) -> Answer {
    ok(json!({ "items": s.releases.list(Some(&ns)) }))
}

async fn read(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>) -> Answer {
    let key = api::key(&ns, &name)?;
    ok(s.releases.get(&key)?)
}

/// A mutation as the leader's API takes it, should this replica have to forward it (its body is added by the
/// handler, which reads it anyway).
struct Forwardable(forward::Request);

impl<S: Send + Sync> FromRequestParts<S> for Forwardable {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let text = |h: &str| parts.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let uri = &parts.uri;
        Ok(Self(forward::Request {
            method: parts.method.clone(),
            path: uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string()),
            body: Bytes::new(),
            authorization: text(header::AUTHORIZATION.as_str()),
            forwarded_by: text(forward::FORWARDED_BY),
        }))
    }
}

/// Runs a mutation here, or at the leader when this replica does not lead (see [`forward`]).
async fn mutation<T, F, Fut>(s: &AdminState, request: forward::Request, local: F) -> Answer
where
    T: serde::Serialize,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReleaseError>>,
{
    match forward::run(&s.releases, &request, local).await? {
        Forwarded::Here(result) => ok(result?),
        Forwarded::There(relayed) => {
            tracing::debug!(path = %request.path, leader = %relayed.leader, status = %relayed.status, "forwarded");
            Ok((relayed.status, [(header::CONTENT_TYPE, "application/json")], relayed.body).into_response())
        }
    }
}

async fn put(
    State(s): State<AdminState>,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<Params>,
    f: Forwardable,
    body: Bytes,
) -> Answer {
    let key = api::key(&ns, &name)?;
    let spec = PolicyDocument::from_json(&body)?.into_spec(&key)?;
    if params.dry_run()? {
        return ok(s.releases.apply_dry_run(&key, spec)?);
    }
    if s.releases.in_cluster(&ns) {
        // Written to the cluster, which every replica reads: no forwarding to the leader.
        return ok(s.releases.put(key, spec).await?);
    }
    let request = forward::Request { body, ..f.0 };
    let apply = || {
        let (key, spec) = (key.clone(), spec.clone());
        s.releases.blocking(move |c| c.apply(&key, spec))
    };
    mutation(&s, request, apply).await
}

async fn rollout(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>) -> Answer {
    let key = api::key(&ns, &name)?;
    ok(json!({ "rollout": s.releases.rollout(&key).await? }))
}

async fn delete(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>, f: Forwardable) -> Answer {
    let key = api::key(&ns, &name)?;
    let delete = || {
        let key = key.clone();
        s.releases.blocking(move |c| c.delete(&key).map(|()| json!({})))
    };
    mutation(&s, f.0, delete).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WeightBody {
    canary_weight: u32,
}

async fn weight(
    State(s): State<AdminState>,
    Path((ns, name)): Path<(String, String)>,
    f: Forwardable,
    body: Bytes,
) -> Answer {
    let key = api::key(&ns, &name)?;
    let WeightBody { canary_weight } = api::from_json(&body)?;
    let request = forward::Request { body, ..f.0 };
    mutation(&s, request, || s.releases.change(key.clone(), Change::Weight(canary_weight))).await
}

async fn act(
    State(s): State<AdminState>,
    Path((ns, name, verb)): Path<(String, String, String)>,
    Query(params): Query<Params>,
    f: Forwardable,
) -> Answer {
    let Some(verb) = Verb::parse(&verb) else {
        let verbs: Vec<&str> = Verb::ALL.iter().map(|v| v.name()).collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no action `{verb}`: POST weight or one of {}", verbs.join(", ")),
            field: None,
            leader: None,
            reason: "NotFound",
        });
    };
    let key = api::key(&ns, &name)?;
    if params.dry_run()? {
        return ok(s.releases.plan(&key, verb)?);
    }
    mutation(&s, f.0, || s.releases.change(key.clone(), Change::Act(verb))).await
}
