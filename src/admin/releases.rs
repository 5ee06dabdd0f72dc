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
//!
//! Mutations run on a blocking thread: the controller writes and fsyncs the state file before it answers.

use super::AdminState;
use crate::model::FieldError;
use crate::release::api::{self, PolicyDocument};
use crate::release::{ReleaseError, Verb};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/releases", get(list_all))
        .route("/api/v1/namespaces/{ns}/releases", get(list))
        .route("/api/v1/namespaces/{ns}/releases/{name}", get(read).put(put).delete(delete))
        .route("/api/v1/namespaces/{ns}/releases/{name}/weight", post(weight))
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
}

/// The one place a [`ReleaseError`] becomes an HTTP status and body.
impl From<ReleaseError> for ApiError {
    fn from(e: ReleaseError) -> Self {
        let message = e.to_string();
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
        };
        Self { status, message, field, leader }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ReleaseError::Invalid(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
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

async fn put(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>, body: Bytes) -> Answer {
    let key = api::key(&ns, &name)?;
    let spec = PolicyDocument::from_json(&body)?.into_spec(&key)?;
    ok(s.releases.blocking(move |c| c.apply(&key, spec)).await?)
}

async fn delete(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>) -> Answer {
    let key = api::key(&ns, &name)?;
    s.releases.blocking(move |c| c.delete(&key)).await?;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WeightBody {
    canary_weight: u32,
}

async fn weight(State(s): State<AdminState>, Path((ns, name)): Path<(String, String)>, body: Bytes) -> Answer {
    let key = api::key(&ns, &name)?;
    let WeightBody { canary_weight } = api::from_json(&body)?;
    ok(s.releases.blocking(move |c| c.set_weight(&key, canary_weight)).await?)
}

async fn act(State(s): State<AdminState>, Path((ns, name, verb)): Path<(String, String, String)>) -> Answer {
    let Some(verb) = Verb::parse(&verb) else {
        let verbs: Vec<&str> = Verb::ALL.iter().map(|v| v.name()).collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no action `{verb}`: POST weight or one of {}", verbs.join(", ")),
            field: None,
            leader: None,
        });
    };
    let key = api::key(&ns, &name)?;
    ok(s.releases.blocking(move |c| c.act(&key, verb)).await?)
}
