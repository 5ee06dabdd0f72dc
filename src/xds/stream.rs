//! The stream driver: one task per Envoy stream, generic over the wire protocol (SotW or Delta).
//!
//! ```text
//!  requests ──▶ P::handle (subscriptions, ACK/NACK) ─┐
//!                                                    ├─▶ P::push per type, CDS → EDS → LDS → RDS ──▶ responses
//!  snapshot watch (new config) ──▶ session.view ─────┘                 └─▶ registry (syncz, ACK waits)
//! ```
//! No config is sent before the first snapshot exists, and the first snapshot waits for every source to load.
//! The task runs inside an `xds` span (`proxy`, `protocol`), so every line it logs names the proxy; per-type lines
//! add `type`. Each response sent counts in `pilot_xds_pushes`, `pilot_xds_push_time`, `pilot_xds_config_size_bytes`.

use super::node;
use super::registry::Registry;
use super::resource::TypeKind;
use super::session::Session;
use super::snapshot::Snapshot;
use super::trust::Peer;
use envoy_types::pb::envoy::config::core::v3::Node;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};
use tracing::Instrument;

/// What every stream task needs; cheap to clone.
#[derive(Clone)]
pub struct StreamCtx {
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    pub registry: Registry,
    pub limits: Limits,
    /// Turns true when the server stops: every stream ends, so proxies reconnect (to another replica or the
    /// restarted server) instead of holding the shutdown open.
    pub stop: watch::Receiver<bool>,
}

/// Explicit bounds on what one request may ask.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Limits {
    /// Resource names in one request (subscribe + unsubscribe + initial versions).
    pub max_names_per_request: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_names_per_request: 20_000 }
    }
}

/// One wire protocol's request handling and response building.
pub(crate) trait Protocol: Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: Send + 'static;
    const NAME: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn name_count(req: &Self::Req) -> usize;
    /// Applies one request: subscription changes, ACK or NACK.
    fn handle(session: &mut Session, kind: TypeKind, req: Self::Req);
    /// The response to send for `kind` now, if any.
    fn push(session: &mut Session, kind: TypeKind) -> Option<Self::Resp>;
    /// Resource bytes a response carries (for `pilot_xds_config_size_bytes`).
    fn resource_bytes(resp: &Self::Resp) -> usize;
}

/// Runs one stream to its end. `only` restricts it to one type (the per-type services).
pub(crate) async fn run<P: Protocol>(
    ctx: StreamCtx,
    mut inbound: Streaming<P::Req>,
    tx: mpsc::Sender<Result<P::Resp, Status>>,
    only: Option<TypeKind>,
    peer: Option<Peer>,
) {
    let first = match inbound.next().await {
        Some(Ok(req)) => req,
        Some(Err(status)) => return tracing::debug!(%status, "stream ended before its first request"),
        None => return,
    };
    let mut proxy = match node::proxy_info(P::node(&first)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "refusing stream");
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    if let Some(peer) = &peer {
        let stated = P::node(&first).and_then(node::stated_namespace);
        if let Err(status) = peer.admit(&mut proxy, stated) {
            tracing::warn!(proxy = %proxy.id, error = %status.message(), "refusing stream");
            let _ = tx.send(Err(status)).await;
            return;
        }
    }
    let span = tracing::info_span!("xds", proxy = %proxy.id, protocol = P::NAME);
    if let Some(p) = &peer {
        span.in_scope(|| tracing::info!(identity = %p.identity, "mTLS identity accepted"));
    }
    let node = P::node(&first).cloned().unwrap_or_default();
    serve::<P>(ctx, inbound, tx, only, first, node, proxy).instrument(span).await
}

/// The stream after its node was accepted: requests in, pushes out, until either side ends it.
async fn serve<P: Protocol>(
    mut ctx: StreamCtx,
    mut inbound: Streaming<P::Req>,
    tx: mpsc::Sender<Result<P::Resp, Status>>,
    only: Option<TypeKind>,
    first: P::Req,
    node: Node,
    proxy: crate::model::ProxyInfo,
) {
    tracing::info!(namespace = %proxy.namespace, mode = ?proxy.mode, "connected");
    let guard = ctx.registry.connect(node, proxy.clone(), P::NAME);
    let mut session = Session::new(proxy, only, guard);
    if let Some(s) = ctx.snapshots.borrow_and_update().clone() {
        session.set_snapshot(s);
    }
    let metrics = crate::telemetry::xds::get();
    let mut next = Some(first);
    loop {
        if let Some(req) = next.take()
            && let Err(status) = apply::<P>(&mut session, &ctx.limits, req)
        {
            let _ = tx.send(Err(status)).await;
            return;
        }
        for kind in TypeKind::ALL {
            if !session.take_dirty(kind) {
                continue;
            }
            let started = Instant::now();
            if let Some(resp) = P::push(&mut session, kind) {
                let bytes = P::resource_bytes(&resp);
                tracing::debug!(type = kind.short(), bytes, "push");
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
                metrics.pushed(kind, bytes, started.elapsed());
                session.state(kind).sent_at = Some(std::time::SystemTime::now());
            }
        }
        session.report();
        tokio::select! {
            msg = inbound.next() => match msg {
                Some(Ok(req)) => next = Some(req),
                Some(Err(status)) => return tracing::info!(%status, "stream closed"),
                None => return tracing::info!("stream closed by proxy"),
            },
            _ = ctx.stop.wait_for(|stop| *stop) => return tracing::info!("server stopping; stream closed"),
            changed = ctx.snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                if let Some(s) = ctx.snapshots.borrow_and_update().clone() {
                    session.set_snapshot(s);
                }
            }
        }
    }
}

fn apply<P: Protocol>(session: &mut Session, limits: &Limits, req: P::Req) -> Result<(), Status> {
    if P::name_count(&req) > limits.max_names_per_request {
        return Err(Status::resource_exhausted(format!(
            "request names {} resources; the limit is {} (--max-names-per-request)",
            P::name_count(&req),
            limits.max_names_per_request
        )));
    }
    let url = P::type_url(&req);
    let kind = match (TypeKind::from_type_url(url), session.only) {
        (Some(k), Some(only)) if k != only => {
            return Err(Status::invalid_argument(format!("type_url {url} on the {} service", only.short())));
        }
        (Some(k), _) => k,
        (None, Some(only)) if url.is_empty() => only,
        (None, _) => {
            tracing::debug!(type_url = %url, "ignoring a type Sluice does not serve");
            return Ok(());
        }
    };
    P::handle(session, kind, req);
    session.touch(kind);
    Ok(())
}
