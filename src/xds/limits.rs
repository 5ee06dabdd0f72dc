//! Explicit bounds on what one proxy may ask of Sluice, each a `sluice serve` flag, each refused with a gRPC status
//! that names the limit (never a crash, never unbounded memory).
//!
//! ```text
//!  new connection ─▶ conn::Budget (--max-connections), first bytes within --handshake-timeout-ms, at most
//!                    --max-streams-per-connection HTTP/2 streams at once
//!  new stream ──▶ StreamSlots (open streams; per peer)     ── ResourceExhausted "N streams open; the limit is M"
//!  each message ─▶ tonic decode limit (request bytes)      ── OutOfRange "decoded message length too large"
//!  each request ─▶ check_name_lengths; check_request (names Sluice does not serve the proxy)
//!                                                          ── InvalidArgument / ResourceExhausted
//!  after apply ──▶ check_subscription (unserved names per type) ── ResourceExhausted
//!  each response ▶ max_response_bytes, then the send queue (see `queue`): a full queue coalesces, never grows
//!  first config ─▶ max_initial_syncs (see `gate`): the rest wait their turn, each place held 5 s at most
//! ```

use super::resource::TypeKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tonic::Status;

/// Explicit bounds on streams, requests and responses.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Limits {
    /// xDS streams open at once, over every connection and service.
    pub max_streams: usize,
    /// Largest request message Sluice decodes.
    pub max_request_bytes: usize,
    /// Largest response message Sluice sends (one type's whole SotW set).
    pub max_response_bytes: usize,
    /// Resource names in one request (subscribe + unsubscribe + initial versions), and in one stream's
    /// subscription to one type.
    pub max_names_per_request: usize,
    /// Longest resource name in a request.
    pub max_name_bytes: usize,
    /// Responses queued on one stream that the proxy has not read yet.
    pub send_queue: usize,
    /// Bytes of responses queued on one stream that the proxy has not read yet.
    pub send_queue_bytes: usize,
    /// Streams receiving their first config at once; the others wait their turn (see `gate`). 0: no bound.
    pub max_initial_syncs: usize,
    /// xDS and stats-sink streams one peer may hold open: one source IP on the plaintext port (loopback exempt:
    /// the host's own harnesses run many proxies), one certificate identity on the mTLS port.
    pub max_streams_per_peer: usize,
    /// HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// Connections open at once, over every port (see `conn`); past it, new ones wait in the kernel's queue.
    pub max_connections: usize,
    /// Longest a new connection may take to send its first request (the TLS handshake, the HTTP/2 preface, the
    /// HTTP/1 request head).
    #[serde(with = "millis")]
    pub handshake_timeout: std::time::Duration,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 256 * 1024 * 1024,
            max_names_per_request: 20_000,
            max_name_bytes: 1024,
            send_queue: 4,
            send_queue_bytes: 64 * 1024 * 1024,
            max_initial_syncs: 128,
            max_streams_per_peer: 100,
            max_streams_per_connection: 100,
            max_connections: crate::conn::Budget::default_max(),
            handshake_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// Refuses a request naming too many resources Sluice does not serve the proxy (`unknown`).
    pub(crate) fn check_request(&self, unknown: usize) -> Result<(), Status> {
        if unknown > self.max_names_per_request {
            return Err(Status::resource_exhausted(format!(
                "the request names {unknown} resources Sluice does not serve; the limit is {} \
                 (--max-names-per-request)",
                self.max_names_per_request
            )));
        }
        Ok(())
    }

    /// Refuses a name that is too long.
    pub(crate) fn check_name_lengths<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> Result<(), Status> {
        if let Some(long) = names.find(|n| n.len() > self.max_name_bytes) {
            let head: String = long.chars().take(64).collect();
            return Err(Status::invalid_argument(format!(
                "resource name `{head}...` is {} bytes; the limit is {} (--max-name-bytes)",
                long.len(),
                self.max_name_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a subscription that grew past the names limit in names Sluice does not serve (Delta subscriptions
    /// accumulate over requests).
    pub(crate) fn check_subscription(&self, kind: TypeKind, unknown: usize) -> Result<(), Status> {
        if unknown > self.max_names_per_request {
            return Err(Status::resource_exhausted(format!(
                "the {} subscription names {unknown} resources Sluice does not serve; the limit is {} \
                 (--max-names-per-request)",
                kind.short(),
                self.max_names_per_request
            )));
        }
        Ok(())
    }

    /// Refuses a response too large to send.
    pub(crate) fn check_response(&self, kind: TypeKind, bytes: usize) -> Result<(), Status> {
        if bytes > self.max_response_bytes {
            return Err(Status::resource_exhausted(format!(
                "the {} response is {bytes} bytes; the limit is {} (--max-response-bytes)",
                kind.short(),
                self.max_response_bytes
            )));
        }
        Ok(())
    }
}

/// What a mesh's config asks of the limits: the largest SotW response of each type a proxy that sees
/// everything gets, and the EDS request a proxy sends naming every assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigSize {
    pub cds_bytes: usize,
    pub eds_bytes: usize,
    pub rds_bytes: usize,
    pub lds_bytes: usize,
    pub eds_request_bytes: usize,
}

/// Bytes of framing per resource in a response (the `Any` wrapper and its type URL; a Delta `Resource` adds
/// its name and version): an upper bound, so the check errs on the side of warning.
const PER_RESOURCE: usize = 160;
/// Bytes of framing per name in a request.
const PER_NAME: usize = 4;

impl ConfigSize {
    /// The sizes of `snapshot` as a proxy that sees every namespace (listen mode) gets it.
    pub fn of(snapshot: &super::snapshot::Snapshot) -> Self {
        let proxy = crate::model::ProxyInfo::listening("size", "default", ([127, 0, 0, 1], 1).into());
        let view = snapshot.view(&proxy);
        Self {
            rds_bytes: bytes(view.get(TypeKind::Route)),
            lds_bytes: bytes(view.get(TypeKind::Listener)),
            ..Self::shared(snapshot)
        }
    }

    /// The sizes of what every proxy shares (clusters and assignments): cheap, no proxy's view is translated.
    pub fn shared(snapshot: &super::snapshot::Snapshot) -> Self {
        Self {
            cds_bytes: bytes(snapshot.clusters()),
            eds_bytes: bytes(snapshot.endpoints()),
            eds_request_bytes: snapshot.endpoints().keys().map(|n| n.len() + PER_NAME).sum(),
            ..Self::default()
        }
    }
}

fn bytes(set: &super::resource::ResourceSet) -> usize {
    set.values().map(|r| r.body.len() + PER_RESOURCE).sum()
}

impl Limits {
    /// What in a config of `size` passes a limit of these: a proxy could not get or ask for all of it.
    pub fn check_size(&self, size: &ConfigSize) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, bytes) in
            [("CDS", size.cds_bytes), ("EDS", size.eds_bytes), ("RDS", size.rds_bytes), ("LDS", size.lds_bytes)]
        {
            if bytes > self.max_response_bytes {
                out.push(format!(
                    "a State-of-the-World {kind} response would be about {bytes} bytes, past --max-response-bytes \
                     ({}): raise it, or use Delta xDS",
                    self.max_response_bytes
                ));
            }
        }
        if size.eds_request_bytes > self.max_request_bytes {
            out.push(format!(
                "an EDS request naming every cluster would be about {} bytes, past --max-request-bytes ({}): \
                 raise it",
                size.eds_request_bytes, self.max_request_bytes
            ));
        }
        out
    }
}

/// Counts open xDS and stats-sink streams against [`Limits::max_streams`], and per peer against
/// [`Limits::max_streams_per_peer`].
#[derive(Clone, Debug, Default)]
pub struct StreamSlots {
    open: Arc<AtomicUsize>,
    per_peer: Arc<std::sync::Mutex<std::collections::HashMap<Peer, usize>>>,
}

/// Who holds streams: a certificate identity (mTLS port) or a source IP (plaintext).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Identity(String),
    Ip(std::net::IpAddr),
}

impl Peer {
    /// The peer of a stream: its certificate identity if it has one, else its source IP; `None` (not counted per
    /// peer) for a loopback client or an unknown address.
    pub fn of(identity: Option<&str>, addr: Option<std::net::SocketAddr>) -> Option<Peer> {
        match (identity, addr) {
            (Some(id), _) => Some(Peer::Identity(id.to_string())),
            (None, Some(a)) if !a.ip().is_loopback() => Some(Peer::Ip(a.ip())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Identity(id) => f.write_str(id),
            Peer::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl StreamSlots {
    /// Takes a slot for a new stream of `peer`, or refuses it; the slot frees when the guard drops (the stream
    /// ends).
    pub fn acquire(&self, limits: &Limits, peer: Option<Peer>) -> Result<SlotGuard, Status> {
        let max = limits.max_streams;
        let taken = self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        if let Err(n) = taken {
            return Err(Status::resource_exhausted(format!(
                "{n} xDS streams are open; the limit is {max} (--max-streams)"
            )));
        }
        let mut guard = SlotGuard { open: self.open.clone(), peer: None };
        if let Some(peer) = peer {
            let mut per_peer = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
            let held = per_peer.entry(peer.clone()).or_default();
            if *held >= limits.max_streams_per_peer {
                return Err(Status::resource_exhausted(format!(
                    "{peer} holds {held} streams; the limit per peer is {} (--max-streams-per-peer)",
                    limits.max_streams_per_peer
                )));
            }
            *held += 1;
            guard.peer = Some((peer, self.per_peer.clone()));
        }
        Ok(guard)
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// A peer's stream counts, shared by the slots and their guards.
type PeerCounts = Arc<std::sync::Mutex<std::collections::HashMap<Peer, usize>>>;

/// One open stream's slot.
#[derive(Debug)]
pub struct SlotGuard {
    open: Arc<AtomicUsize>,
    peer: Option<(Peer, PeerCounts)>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some((peer, counts)) = self.peer.take() {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_past_the_limit_and_free_on_drop() {
        let slots = StreamSlots::default();
        let limits = Limits { max_streams: 2, ..Limits::default() };
        let a = slots.acquire(&limits, None).unwrap();
        let _b = slots.acquire(&limits, None).unwrap();
        let err = slots.acquire(&limits, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("2 xDS streams are open; the limit is 2"), "{}", err.message());
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.acquire(&limits, None).is_ok());
    }

    #[test]
    fn config_sizes_past_a_limit_are_named() {
        let size = ConfigSize { cds_bytes: 300, eds_request_bytes: 50, ..Default::default() };
        let limits = Limits { max_response_bytes: 200, max_request_bytes: 40, ..Limits::default() };
        let said = limits.check_size(&size);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("CDS response would be about 300 bytes, past --max-response-bytes (200)"));
        assert!(said[1].contains("--max-request-bytes (40)"));
        assert!(Limits::default().check_size(&size).is_empty());
    }

    #[test]
    fn one_peer_cannot_take_every_slot() {
        let slots = StreamSlots::default();
        let limits = Limits { max_streams: 10, max_streams_per_peer: 2, ..Limits::default() };
        let remote = |last: u8| Peer::of(None, Some(std::net::SocketAddr::from(([10, 0, 0, last], 5000))));
        let (a, _b) = (slots.acquire(&limits, remote(1)).unwrap(), slots.acquire(&limits, remote(1)).unwrap());
        let err = slots.acquire(&limits, remote(1)).unwrap_err();
        assert!(err.message().contains("10.0.0.1 holds 2 streams; the limit per peer is 2"), "{}", err.message());
        assert!(slots.acquire(&limits, remote(2)).is_ok(), "another peer still connects");
        let loopback = Peer::of(None, Some(std::net::SocketAddr::from(([127, 0, 0, 1], 5000))));
        assert_eq!(loopback, None, "the host's own clients are not counted per peer");
        drop(a);
        assert!(slots.acquire(&limits, remote(1)).is_ok(), "a closed stream gives its place back");
        let id = Peer::of(Some("spiffe://cluster.local/ns/a/sa/b"), None);
        assert_eq!(id, Some(Peer::Identity("spiffe://cluster.local/ns/a/sa/b".into())));
    }

    #[test]
    fn requests_name_their_count_and_long_names() {
        let limits = Limits { max_names_per_request: 2, max_name_bytes: 4, ..Limits::default() };
        let err = limits.check_request(3).unwrap_err();
        assert!(err.message().contains("names 3 resources Sluice does not serve; the limit is 2"), "{}", err.message());
        let err = limits.check_name_lengths(["abcdef"].into_iter()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("6 bytes; the limit is 4"), "{}", err.message());
        assert!(limits.check_request(2).is_ok() && limits.check_name_lengths(["abcd", "x"].into_iter()).is_ok());
    }
}
