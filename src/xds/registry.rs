//! The registry of connected proxies: what each was sent, what it ACKed, its last NACK. Streams write it; the
//! admin port (`/debug/syncz`, config dumps), CSDS, release status and test harnesses read it.
//! Connecting and dropping a stream moves the `pilot_xds{protocol}` gauge.

use super::resource::{ResourceSet, TypeKind};
use crate::model::ProxyInfo;
use envoy_types::pb::envoy::config::core::v3::Node;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The sync state of one type on one stream.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    /// Version of the last response sent (SotW `version_info`; Delta: the snapshot version).
    pub sent: Option<String>,
    /// Version the proxy last accepted.
    pub acked: Option<String>,
    /// A response is waiting for the proxy's ACK or NACK.
    pub pending: bool,
    pub last_nack: Option<Nack>,
    /// How many resources of this type the proxy holds.
    pub resources: usize,
    /// Parts of its config the proxy refused, each held back at its last good content until it changes
    /// (`xds::contain`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<super::contain::Refused>,
    /// What the proxy holds (ACKed), while the stream lives; see [`TypeStatus::held`].
    #[serde(skip)]
    pub held: std::sync::Weak<ResourceSet>,
    /// What the proxy was last sent (SotW: the last response; Delta: everything sent that it still has), including
    /// a response in flight or NACKed. An O(1) clone sharing structure with the stream's own set.
    #[serde(skip)]
    pub sent_set: ResourceSet,
    /// The subscription: everything of the type, or these names (shared; rebuilt only when the names change).
    #[serde(skip)]
    pub wildcard: bool,
    #[serde(skip)]
    pub names: Arc<BTreeSet<String>>,
    /// When the proxy last ACKed this type, and when it was last sent a response.
    #[serde(skip)]
    pub acked_at: Option<SystemTime>,
    #[serde(skip)]
    pub sent_at: Option<SystemTime>,
}

/// A rejected response, kept until a later response of that type is accepted.
#[derive(Clone, Debug, Serialize)]
pub struct Nack {
    pub version: String,
    pub reason: String,
    #[serde(with = "unix_secs")]
    pub at: SystemTime,
}

/// One connected stream (a proxy may have one per type on the non-aggregated services).
#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub node_id: String,
    pub stream: u64,
    pub protocol: &'static str,
    #[serde(with = "unix_secs")]
    pub connected_since: SystemTime,
    pub types: BTreeMap<TypeKind, TypeStatus>,
    /// The snapshot version this proxy holds in full right now (every type it needs ACKed, nothing held back);
    /// `None` while it catches up.
    pub synced_version: Option<u64>,
    /// The snapshot version this proxy holds in full but for the parts it refused (which it keeps at their last
    /// good content): equal to `synced_version` unless it refused something.
    pub settled_version: Option<u64>,
    /// The node as the proxy sent it (CSDS echoes it and matches on it).
    #[serde(skip)]
    pub node: Arc<Node>,
    /// What the snapshot's view of this proxy is computed from.
    #[serde(skip)]
    pub proxy: Arc<ProxyInfo>,
}

impl ProxyStatus {
    /// Whether a part of the config this proxy refused concerns the Service with FQDN `service`: one of its
    /// virtual hosts (`fqdn:port`) or clusters (`outbound|port|subset|fqdn`), or a virtual host routing to it
    /// (a gateway's `HOST:PORT`, a VirtualService's host).
    pub fn refuses(&self, service: &str) -> bool {
        self.types.values().flat_map(|t| &t.refused).any(|r| r.concerns(service))
    }

    /// Every part this proxy refused, by type.
    pub fn refused(&self) -> impl Iterator<Item = (TypeKind, &super::contain::Refused)> {
        self.types.iter().flat_map(|(k, t)| t.refused.iter().map(move |r| (*k, r)))
    }
}

#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The workload certificates the CA issued (when Sluice runs one), for the status views.
    certificates: Mutex<Option<crate::ca::ledger::Ledger>>,
    streams: Mutex<BTreeMap<u64, ProxyStatus>>,
    changed: watch::Sender<u64>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the CA records what it issues (`serve --ca`).
    pub fn set_certificates(&self, ledger: crate::ca::ledger::Ledger) {
        *self.inner.certificates.lock().unwrap_or_else(|e| e.into_inner()) = Some(ledger);
    }

    /// The workload certificate the CA last issued to `node_id`'s address, when Sluice runs the CA.
    pub fn certificate(&self, node_id: &str) -> Option<crate::ca::ledger::Entry> {
        self.inner.certificates.lock().unwrap_or_else(|e| e.into_inner()).as_ref()?.for_node(node_id)
    }

    /// Registers a stream; it is removed when the returned guard drops.
    pub fn connect(&self, node: Node, proxy: ProxyInfo, protocol: &'static str) -> StreamGuard {
        let id = self.inner.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let status = ProxyStatus {
            node_id: proxy.id.clone(),
            stream: id,
            protocol,
            connected_since: SystemTime::now(),
            types: BTreeMap::new(),
            synced_version: None,
            settled_version: None,
            node: Arc::new(node),
            proxy: Arc::new(proxy),
        };
        self.lock().insert(id, status);
        self.bump();
        crate::telemetry::xds::get().connected(protocol, 1.0);
        StreamGuard { registry: self.clone(), id, protocol }
    }

    /// Every connected stream's status, ordered by node id then stream.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<ProxyStatus> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| (&a.node_id, a.stream).cmp(&(&b.node_id, b.stream)));
        all
    }

    /// The streams of one node.
    pub fn get(&self, node_id: &str) -> Vec<ProxyStatus> {
        self.lock().values().filter(|s| s.node_id == node_id).cloned().collect()
    }

    /// How many streams are connected.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Connected streams and, of those, how many hold snapshot `version` (or newer) in full.
    pub fn acked_count(&self, version: u64) -> (usize, usize) {
        let streams = self.lock();
        let total = streams.len();
        let acked = streams.values().filter(|s| s.synced_version.is_some_and(|v| v >= version)).count();
        (acked, total)
    }

    /// Connected streams and, of those, how many hold snapshot `version` (or newer) as far as the Service with
    /// FQDN `service` goes: in full, or in full but for refused parts that are not that Service's.
    pub fn acked_count_for(&self, version: u64, service: &str) -> (usize, usize) {
        let (acked, total, _) = self.holding(version, service, 0);
        (acked, total)
    }

    /// As [`Registry::acked_count_for`], with the node ids of up to `name` proxies that do not hold it.
    pub fn holding(&self, version: u64, service: &str, name: usize) -> (usize, usize, Vec<String>) {
        let streams = self.lock();
        let total = streams.len();
        let holds = |s: &ProxyStatus| {
            s.synced_version.is_some_and(|v| v >= version)
                || (s.settled_version.is_some_and(|v| v >= version) && !s.refuses(service))
        };
        let acked = streams.values().filter(|s| holds(s)).count();
        let pending = streams.values().filter(|s| !holds(s)).take(name).map(|s| s.node_id.clone()).collect();
        (acked, total, pending)
    }

    /// What connected proxies refused of the Service with FQDN `service`: `proxy: part: reason`, at most 10.
    pub fn refusals_of(&self, service: &str) -> Vec<String> {
        let streams = self.lock();
        let mut out = Vec::new();
        for s in streams.values() {
            for (kind, r) in s.refused().filter(|(_, r)| r.concerns(service)) {
                out.push(format!("{} ({}): {}: {}", s.node_id, kind.short(), r.unit, r.reason));
            }
        }
        out.truncate(10);
        out
    }

    /// Waits until `node_id` is connected and holds snapshot `version` (or newer) in full.
    pub async fn wait_synced(&self, node_id: &str, version: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.inner.changed.subscribe();
        let check = |reg: &Registry| reg.get(node_id).iter().any(|s| s.synced_version.is_some_and(|v| v >= version));
        tokio::time::timeout(timeout, async {
            loop {
                if check(self) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .map_err(|_| WaitError { node_id: node_id.to_string(), version, state: self.get(node_id) })
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }
}

/// A proxy did not reach a version in time; carries what it did have.
#[derive(Debug, thiserror::Error)]
#[error("proxy {node_id} did not ACK snapshot {version} in time; its streams: {state:?}")]
pub struct WaitError {
    pub node_id: String,
    pub version: u64,
    pub state: Vec<ProxyStatus>,
}

/// Owned by a stream task: updates its entry, removes it on drop.
pub struct StreamGuard {
    registry: Registry,
    id: u64,
    protocol: &'static str,
}

impl StreamGuard {
    pub fn update(&self, edit: impl FnOnce(&mut ProxyStatus)) {
        if let Some(s) = self.registry.lock().get_mut(&self.id) {
            edit(s);
        }
        self.registry.bump();
    }

    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.bump();
        crate::telemetry::xds::get().connected(self.protocol, -1.0);
    }
}

mod unix_secs {
    use serde::Serializer;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        s.serialize_f64(secs)
    }
}
