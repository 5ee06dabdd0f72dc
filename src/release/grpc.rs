//! The Release API over gRPC (`sluice.v1.ReleaseService`), served on the xDS port beside ADS.
//!
//! ```text
//!  gRPC client ──▶ ReleaseApi ──ReleaseController::blocking──▶ ReleaseController (persists before it answers)
//!                     └─ ReleaseError ──status()──▶ tonic::Status   (the one mapping)
//! ```
//! The spec travels as JSON (`spec_json`), so gRPC, REST and config files share one schema and one validator.
//! A weight or verb sent to a replica that does not lead is forwarded to the leader as the equivalent REST call
//! (the `authorization` metadata as its header; see [`super::forward`]), and the leader's answer mapped back: a
//! release view becomes the proto, an error its `reason`'s status (the same as [`status`] gives).
//! Mutations pass [`ApiAuth`] (`authorization: Bearer <token>` metadata, or a loopback client without a token
//! file), as on the admin port: a proxy certificate on the mTLS port is no licence to change releases.

use super::api::{self, API_VERSION};
use super::forward::{self, Answer, Relayed};
use super::{Change, ReleaseController, ReleaseError, ReleaseView, Verb};
use crate::auth::ApiAuth;
use crate::model::ObjectKey;
use crate::proto;
use crate::proto::release_service_server::{ReleaseService, ReleaseServiceServer};
use tonic::{Code, Request, Response, Status};

/// The gRPC front end of the release controller.
#[derive(Clone)]
pub struct ReleaseApi {
    controller: ReleaseController,
    auth: ApiAuth,
}

impl ReleaseApi {
    pub fn server(controller: ReleaseController, auth: ApiAuth) -> ReleaseServiceServer<Self> {
        ReleaseServiceServer::new(Self { controller, auth })
    }

    /// A weight or verb, here or (from a follower) at the leader.
    async fn change<T>(&self, request: &Request<T>, key: ObjectKey, change: Change) -> Result<proto::Release, Status> {
        let (action, body) = match change {
            Change::Weight(w) => ("weight", serde_json::json!({ "canaryWeight": w }).to_string()),
            Change::Act(verb) => (verb.name(), String::new()),
        };
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let forwardable = forward::Request {
            method: http::Method::POST,
            path: format!("/api/v1/namespaces/{}/releases/{}/{action}", key.namespace, key.name),
            body: body.into(),
            authorization: authorization.map(str::to_string),
            forwarded_by: None,
        };
        match forward::run(&self.controller, &forwardable, || self.controller.change(key.clone(), change)).await {
            Ok(Answer::Here(result)) => to_proto(&result.map_err(status)?),
            Ok(Answer::There(r)) => relayed(r),
            Err(e) => Err(Status::new(code(e.reason()), e.to_string())),
        }
    }

    /// Refuses a mutation without the token (or, with no token file, from a client that is not loopback).
    fn allow<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        self.auth.check(authorization, request.remote_addr().map(|a| a.ip())).map_err(|e| {
            tracing::warn!(peer = ?request.remote_addr(), error = %e, "release API call refused");
            Status::unauthenticated(e.to_string())
        })
    }
}

/// The one place a [`ReleaseError`] becomes a gRPC status.
pub fn status(e: ReleaseError) -> Status {
    Status::new(code(e.reason()), e.to_string())
}

/// The gRPC code of an error's `reason` ([`ReleaseError::reason`], [`forward::ForwardError::reason`]): for this
/// replica's errors and for those a leader answered a forwarded change with.
fn code(reason: &str) -> Code {
    match reason {
        "Invalid" => Code::InvalidArgument,
        "NotFound" => Code::NotFound,
        // Not UNAVAILABLE: a retry to the same replica would be refused again; the message names the leader.
        "Conflict" | "Refused" | "NotLeader" => Code::FailedPrecondition,
        "Persist" | "Internal" => Code::Internal,
        // Applied, or maybe applied: DEADLINE_EXCEEDED says the call may have completed (a blind retry of a verb
        // could apply it twice); the message says how to check.
        "NotStored" | "NotSeen" | "ForwardedTimedOut" => Code::DeadlineExceeded,
        "ForwardedAnswerLost" => Code::Unknown,
        // Certainly not applied.
        "NoLeader" => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A leader's REST answer to a forwarded change, as this API answers.
fn relayed(r: Relayed) -> Result<proto::Release, Status> {
    if r.status.is_success() {
        let view: ReleaseView = serde_json::from_slice(&r.body)
            .map_err(|e| Status::internal(format!("the leader {} answered an unreadable release: {e}", r.leader)))?;
        return to_proto(&view);
    }
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let message = body["error"].as_str().map_or_else(|| format!("HTTP {}", r.status), str::to_string);
    let message = format!("forwarded to the leading replica {}: {message}", r.leader);
    let code = match (body["reason"].as_str(), r.status.as_u16()) {
        (Some(reason), _) => code(reason),
        // The leader's own guard (`admin::guard`): its token check, or what it refuses outright.
        (None, 401) => Code::Unauthenticated,
        (None, 403) => Code::PermissionDenied,
        (None, _) => Code::Unknown,
    };
    Err(Status::new(code, message))
}

fn key_of(r: Option<proto::ReleaseRef>) -> Result<ObjectKey, Status> {
    let r = r.unwrap_or_default();
    key(&r.namespace, &r.name)
}

fn key(namespace: &str, name: &str) -> Result<ObjectKey, Status> {
    let namespace = if namespace.is_empty() { "default" } else { namespace };
    api::key(namespace, name).map_err(status)
}

fn verb(v: i32) -> Result<Verb, Status> {
    match proto::Verb::try_from(v) {
        Ok(proto::Verb::Pause) => Ok(Verb::Pause),
        Ok(proto::Verb::Resume) => Ok(Verb::Resume),
        Ok(proto::Verb::Promote) => Ok(Verb::Promote),
        Ok(proto::Verb::Abort) => Ok(Verb::Abort),
        Ok(proto::Verb::Finalize) => Ok(Verb::Finalize),
        _ => Err(Status::invalid_argument("verb: must be one of pause, resume, promote, abort, finalize")),
    }
}

/// The REST view as the proto message.
pub fn to_proto(v: &ReleaseView) -> Result<proto::Release, Status> {
    let spec_json = serde_json::to_string(&v.spec).map_err(|e| Status::internal(format!("encoding spec: {e}")))?;
    let s = &v.status;
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let status = proto::ReleaseStatus {
        phase: format!("{:?}", s.phase),
        canary_weight: s.weights.get(&v.spec.canary).copied().unwrap_or_default(),
        step: count(s.step),
        steps: count(s.steps),
        proxies_acked: count(s.proxies.acked),
        proxies_total: count(s.proxies.total),
        versions: s
            .versions
            .iter()
            .map(|x| proto::VersionStatus {
                name: x.name.clone(),
                weight: x.weight,
                endpoints: count(x.endpoints),
                ready: count(x.ready),
                rps: x.rps,
                success_rate: x.success_rate,
                latency_p50_ms: x.latency_p50_ms,
                latency_p99_ms: x.latency_p99_ms,
            })
            .collect(),
        conditions: s
            .conditions
            .iter()
            .map(|c| proto::Condition {
                r#type: c.kind.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
            })
            .collect(),
        weights: s.weights.iter().map(|(k, w)| (k.clone(), *w)).collect(),
        source: s.source.clone(),
    };
    debug_assert_eq!(v.api_version, API_VERSION);
    Ok(proto::Release {
        namespace: v.metadata.namespace.clone(),
        name: v.metadata.name.clone(),
        spec_json,
        status: Some(status),
    })
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn list_releases(
        &self,
        request: Request<proto::ListReleasesRequest>,
    ) -> Result<Response<proto::ListReleasesResponse>, Status> {
        let ns = request.into_inner().namespace;
        let views = self.controller.list(Some(ns.as_str()).filter(|n| !n.is_empty()));
        let releases = views.iter().map(to_proto).collect::<Result<_, _>>()?;
        Ok(Response::new(proto::ListReleasesResponse { releases }))
    }

    async fn get_release(&self, request: Request<proto::ReleaseRef>) -> Result<Response<proto::Release>, Status> {
        let key = key_of(Some(request.into_inner()))?;
        let view = self.controller.get(&key).map_err(status)?;
        Ok(Response::new(to_proto(&view)?))
    }

    async fn apply_release(
        &self,
        request: Request<proto::ApplyReleaseRequest>,
    ) -> Result<Response<proto::Release>, Status> {
        self.allow(&request)?;
        let release = request.into_inner().release.unwrap_or_default();
        let key = key(&release.namespace, &release.name)?;
        let spec = api::spec_from_json(release.spec_json.as_bytes()).map_err(|e| status(e.into()))?;
        let view = self.controller.put(key, spec).await.map_err(status)?;
        Ok(Response::new(to_proto(&view)?))
    }

    async fn delete_release(
        &self,
        request: Request<proto::ReleaseRef>,
    ) -> Result<Response<proto::DeleteReleaseResponse>, Status> {
        self.allow(&request)?;
        let key = key_of(Some(request.into_inner()))?;
        self.controller.blocking(move |c| c.delete(&key)).await.map_err(status)?;
        Ok(Response::new(proto::DeleteReleaseResponse {}))
    }

    async fn set_weight(&self, request: Request<proto::SetWeightRequest>) -> Result<Response<proto::Release>, Status> {
        self.allow(&request)?;
        let key = key_of(request.get_ref().r#ref.clone())?;
        let weight = request.get_ref().canary_weight;
        Ok(Response::new(self.change(&request, key, Change::Weight(weight)).await?))
    }

    async fn act(&self, request: Request<proto::ActRequest>) -> Result<Response<proto::Release>, Status> {
        self.allow(&request)?;
        let key = key_of(request.get_ref().r#ref.clone())?;
        let verb = verb(request.get_ref().verb)?;
        Ok(Response::new(self.change(&request, key, Change::Act(verb)).await?))
    }
}
