//! The stream driver: one task per Envoy stream, generic over the wire protocol (SotW or Delta).
//!
//! ```text
//!  requests ──▶ P::handle (subscriptions, ACK/NACK) ─┐
//!                                                    ├─▶ P::push per type, CDS → EDS → LDS → RDS ──▶ send queue
//!  snapshot watch (new config) ──▶ session.view ─────┘                 └─▶ registry (syncz, ACK waits)
//! ```
//! No config is sent before the first snapshot exists, and the first snapshot waits for every source to load.
//! The task runs inside an `xds` span (`proxy`, `protocol`), so every line it logs names the proxy; per-type lines
//! add `type`. Each response sent counts in `pilot_xds_pushes`, `pilot_xds_push_time`, `pilot_xds_config_size_bytes`.
//! The task never waits on the proxy: a full send queue (see `queue`) leaves types dirty until the proxy reads.

use super::gate::{SyncGate, Turn};
use super::limits::{Limits, SlotGuard, StreamSlots};
use super::node;
use super::queue::SendQueue;
use super::registry::Registry;
use super::resource::TypeKind;
use super::response::{CHUNK, Chunks, Response};
use super::session::Session;
use super::snapshot::Snapshot;
use super::trust::Peer;
use super::wire::Requests;
use envoy_types::pb::envoy::config::core::v3::Node;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tonic::Status;
use tracing::Instrument;

/// What every stream task needs; cheap to clone.
#[derive(Clone)]
pub struct StreamCtx {
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    pub registry: Registry,
    pub limits: Limits,
    pub slots: StreamSlots,
    /// Places for streams receiving their first config.
    pub syncs: SyncGate,
    /// Delta Envoys take their sidecar routes' virtual hosts over VHDS (`serve --no-vhds` turns it off).
    pub vhds: bool,
    /// Turns true when the server stops: every stream ends, so proxies reconnect (to another replica or the
    /// restarted server) instead of holding the shutdown open.
    pub stop: watch::Receiver<bool>,
}

/// One wire protocol's request handling and response building.
pub(crate) trait Protocol: Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: prost::Message + Default + Send + 'static;
    const NAME: &'static str;
    /// Envoy takes VHDS on this protocol (Delta only: it refuses a route configuration naming VHDS on SotW).
    const VHDS: bool;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn name_count(req: &Self::Req) -> usize;
    /// Every resource name the request carries (for the length limit).
    fn names(req: &Self::Req) -> impl Iterator<Item = &str>;
    /// Applies one request: subscription changes, ACK or NACK.
    fn handle(session: &mut Session, kind: TypeKind, req: Self::Req);
    /// The response to send for `kind` now, if any (its wire form is `Self::Resp`).
    fn push(session: &mut Session, kind: TypeKind) -> Option<Response>;
}

/// Runs one stream to its end. `only` restricts it to one type (the per-type services); `_slot` is its place in
/// the stream limit, held until it ends.
pub(crate) async fn run<P: Protocol>(
    ctx: StreamCtx,
    mut inbound: Requests<P::Req>,
    tx: SendQueue<Chunks>,
    only: Option<TypeKind>,
    peer: Option<Peer>,
    _slot: SlotGuard,
) {
    let first = match inbound.next().await {
        Some(Ok(req)) => req,
        Some(Err(status)) => {
            tracing::debug!(%status, "stream ended before its first request");
            return tx.fail(with_flag(status));
        }
        None => return,
    };
    let mut proxy = match node::proxy_info(P::node(&first)) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "refusing stream");
            return tx.fail(Status::invalid_argument(e.to_string()));
        }
    };
    if let Some(peer) = &peer {
        let stated = P::node(&first).and_then(node::stated_namespace);
        if let Err(status) = peer.admit(&mut proxy, stated) {
            tracing::warn!(proxy = %proxy.id, error = %status.message(), "refusing stream");
            return tx.fail(status);
        }
    }
    // VHDS on the aggregated stream only: the per-type services have no VirtualHost type.
    proxy.vhds &= ctx.vhds && P::VHDS && only.is_none();
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
    mut inbound: Requests<P::Req>,
    tx: SendQueue<Chunks>,
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
    let mut next = Some(first);
    let mut turn = Turn::Waiting;
    loop {
        if let Some(req) = next.take()
            && let Err(status) = apply::<P>(&mut session, &ctx.limits, req)
        {
            tracing::warn!(%status, "refusing request; stream closed");
            return tx.fail(status);
        }
        // The first config waits for a place in the gate (see `gate`); requests meanwhile wait unread.
        if matches!(turn, Turn::Waiting) && session.snapshot.is_some() {
            tokio::select! {
                place = ctx.syncs.enter() => turn = Turn::Holding(place),
                _ = ctx.stop.wait_for(|stop| *stop) => return tracing::info!("server stopping; stream closed"),
            }
        }
        if !matches!(turn, Turn::Waiting)
            && let Err(status) = push_dirty::<P>(&mut session, &ctx.limits, &tx)
        {
            return tx.fail(status);
        }
        if session.report() && matches!(turn, Turn::Holding(_)) {
            turn = Turn::Done;
        }
        let hold_until = match &turn {
            Turn::Holding(place) => Some(place.until),
            _ => None,
        };
        // The proxy is not reading: its dirty types wait (coalescing to the latest state) until it drains.
        let stalled = !tx.has_room() && session.any_dirty();
        tokio::select! {
            _ = sleep_until(hold_until), if hold_until.is_some() => turn = Turn::Done,
            msg = inbound.next() => match msg {
                Some(Ok(req)) => next = Some(req),
                Some(Err(status)) => {
                    tracing::info!(%status, "stream closed");
                    return tx.fail(with_flag(status));
                }
                None => return tracing::info!("stream closed by proxy"),
            },
            _ = tx.drained(), if stalled => {}
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

/// Sleeps until `at` (never, for `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Names the flag behind tonic's decode limit, so the proxy's log says what to raise.
fn with_flag(status: Status) -> Status {
    match status.code() {
        tonic::Code::OutOfRange if status.message().contains("too large") => {
            Status::out_of_range(format!("{} (--max-request-bytes)", status.message()))
        }
        _ => status,
    }
}

/// Pushes every dirty type, CDS → EDS → LDS → RDS, while the send queue has room; the rest stay dirty. `Err`: a
/// response past the size limit, or the proxy is gone.
pub(crate) fn push_dirty<P: Protocol>(
    session: &mut Session,
    limits: &Limits,
    tx: &SendQueue<Chunks>,
) -> Result<(), Status> {
    for kind in TypeKind::ALL {
        if !tx.has_room() {
            break;
        }
        if !session.take_dirty(kind) {
            continue;
        }
        let started = Instant::now();
        if let Some(resp) = P::push(session, kind) {
            let bytes = resp.encoded_len();
            limits.check_response(kind, bytes)?;
            let resource_bytes = resp.resource_bytes();
            tracing::debug!(type = kind.short(), bytes, "push");
            // Encoded chunk by chunk as HTTP/2 sends it (see `response`).
            tx.push(Chunks::new(resp, bytes, CHUNK), bytes).map_err(|_| Status::cancelled("the proxy is gone"))?;
            crate::telemetry::xds::get().pushed(kind, resource_bytes, started.elapsed());
            session.state(kind).sent_at = Some(std::time::SystemTime::now());
        }
    }
    Ok(())
}

pub(crate) fn apply<P: Protocol>(session: &mut Session, limits: &Limits, req: P::Req) -> Result<(), Status> {
    limits.check_name_lengths(P::names(&req))?;
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
    // Names of resources Sluice serves this proxy never count: a proxy may always name what it was sent (an EDS
    // request for every cluster of a large mesh, a reconnect's initial versions); the limit is for the rest.
    if P::name_count(&req) > limits.max_names_per_request {
        let unknown = P::names(&req).filter(|n| !session.knows(kind, n)).count();
        limits.check_request(unknown)?;
    }
    P::handle(session, kind, req);
    let subscribed = &session.types[kind.index()].names;
    if subscribed.len() > limits.max_names_per_request {
        let unknown = subscribed.iter().filter(|n| !session.knows(kind, n)).count();
        limits.check_subscription(kind, unknown)?;
    }
    session.touch(kind);
    Ok(())
}
