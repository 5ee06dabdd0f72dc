//! One xDS stream's protocol state, shared by the SotW and Delta adapters.
//!
//! Per type the session tracks the subscription, what the proxy holds (ACKed), the one response in flight, and
//! what it was last sent. Each push computes, per type in order CDS → EDS → LDS → RDS, the *desired* set:
//!
//! ```text
//!  target(kind)  = the snapshot view ∩ the subscription
//!  desired(CDS)  = target ∪ clusters still named by routes/listeners the proxy holds or is being sent (break last)
//!  desired(EDS)  = target ∪ assignments of those retained clusters
//!  desired(LDS|RDS): each resource whose clusters the proxy has ACKed with their endpoints; otherwise the version
//!                    last sent, or nothing yet (make first)
//! ```
//! Ordering applies to streams that take CDS by wildcard (Envoy); see [`Session::orders_clusters`].
//! At most one response per type is in flight: the next waits for the ACK or NACK, which also coalesces bursts and
//! bounds what a proxy that stops reading can make Sluice hold. A NACK keeps the proxy's last good set and is never
//! answered by re-sending the same content: only a new snapshot (different content) sends again.
//!
//! Metrics: a NACK counts in `pilot_total_xds_rejects{type}`; when the proxy comes to hold a changed config in full
//! (every type ACKed), the time since the change counts in `pilot_proxy_convergence_time` (from the earliest change
//! it had not yet converged on; the config a proxy gets when it connects is not a change).

use super::contain::Containment;
use super::registry::{Nack, StreamGuard, TypeStatus};
use super::resource::{Resource, ResourceSet, TypeKind};
use super::snapshot::{Snapshot, View};
use super::sorted;
use crate::model::ProxyInfo;
use imbl::ordmap::DiffItem;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;
use sync::{Follows, NamedBy};

#[path = "session_sync.rs"]
mod sync;

/// Longest NACK reason kept per type.
const MAX_NACK_REASON: usize = 4096;

#[derive(Debug)]
pub(crate) struct Inflight {
    pub nonce: String,
    pub version: String,
    /// What the proxy will hold once it ACKs: the desired set the response was computed from (an O(1) clone that
    /// shares structure with the snapshot, so held and sent sets cost memory only where they differ).
    pub set: ResourceSet,
}

#[derive(Debug, Default)]
pub(crate) struct TypeState {
    pub subscribed: bool,
    pub wildcard: bool,
    /// The stream named resources at some point (so an empty list now means "none", not wildcard).
    pub ever_named: bool,
    /// Shared with the registry's report and, through `names::intern`, with every stream naming the same set (copied
    /// on write).
    pub names: Arc<BTreeSet<String>>,
    /// Bumped whenever `names` changes (keys the cache of names a named subscription leaves out).
    pub names_gen: u64,
    /// ACKed: what the proxy has applied. Shared with the registry only weakly, so updating it never copies.
    pub held: Arc<ResourceSet>,
    pub inflight: Option<Inflight>,
    /// The latest nonce sent; a request naming another one is stale.
    pub last_nonce: Option<String>,
    /// The last set sent (SotW: the last response; Delta: everything the proxy was sent and still has, so what
    /// it holds or will hold: a NACKed resource stays here and is not sent again until it changes).
    pub sent: ResourceSet,
    pub acked_version: Option<String>,
    pub sent_version: Option<String>,
    /// When the proxy last ACKed this type; when it was last sent a response.
    pub acked_at: Option<SystemTime>,
    pub sent_at: Option<SystemTime>,
    pub last_nack: Option<Nack>,
    /// SotW: a newly named resource must be (re)sent even if unchanged.
    pub force: bool,
    /// SotW: the version a reconnecting proxy says it holds; not re-sent if it is still current.
    pub resume_version: Option<String>,
    /// Delta: name → version a reconnecting proxy said it holds (`initial_resource_versions`), until each is
    /// confirmed current or replaced; what it was sent since is in `sent`.
    pub initial: BTreeMap<String, String>,
    /// Delta: subscribed names already reported absent in `removed_resources`.
    pub absent_told: BTreeSet<String>,
    /// Delta: the `names_gen` of the last push. After a push every subscribed name is sent, reconnect-held
    /// (`initial`) or told absent, and only a subscription change can break that, so while `names_gen` stays the
    /// same the push need not walk the names (O(subscription)) looking for newly absent ones.
    pub names_checked: Option<u64>,
    /// What this proxy refused and what is on trial (see `xds::contain`); empty unless it NACKed.
    pub contain: std::cell::RefCell<Containment>,
}

impl TypeState {
    /// Whether the subscription covers `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// VHDS: the proxy dropped (or subscribes anew to) route configuration `config`, and with it every virtual
    /// host it was sent under it: none counts as sent or held any more.
    pub fn forget_namespace(&mut self, config: &str) {
        let under = |set: &ResourceSet| -> Vec<String> { in_config(set, config).map(|(n, _)| n.clone()).collect() };
        for name in under(&self.sent) {
            self.sent.remove(&name);
        }
        let held = under(&self.held);
        if !held.is_empty() {
            let set = Arc::make_mut(&mut self.held);
            for name in held {
                set.remove(&name);
            }
        }
        self.initial.retain(|n, _| crate::translate::vhds::namespace_of(n) != config);
    }
}

/// The names of a view set that a named subscription does not cover. Valid while the subscription is the same and
/// the view's key set is (an endpoint change updates values only, which a structural diff finds in O(change)).
struct Excluded {
    names_gen: u64,
    view: ResourceSet,
    names: Vec<String>,
}

/// The virtual hosts of the route configurations a VHDS subscription names (Envoy subscribes by configuration:
/// every resource `<configuration>/…` belongs to it). The usual subscription names every configuration the view
/// has, and then the whole set is the answer, shared with the snapshot (diffs stay O(change)).
fn vhds_target(all: &ResourceSet, configs: &ResourceSet, names: &BTreeSet<String>) -> ResourceSet {
    if configs.keys().all(|c| names.contains(c)) {
        return all.clone();
    }
    let mut set = ResourceSet::new();
    for config in names.iter().filter(|c| configs.contains_key(*c)) {
        set.extend(in_config(all, config).map(|(n, r)| (n.clone(), r.clone())));
    }
    set
}

/// The VHDS resources of `set` filed under route configuration `config` (names `config/…`, the last `/` theirs):
/// one range of the sorted set.
fn in_config<'a>(set: &'a ResourceSet, config: &'a str) -> impl Iterator<Item = (&'a String, &'a Arc<Resource>)> + 'a {
    let prefix = format!("{config}/");
    let range = set.range(prefix.clone()..).take_while(move |(n, _)| n.starts_with(&prefix));
    range.filter(move |(n, _)| crate::translate::vhds::namespace_of(n) == config)
}

pub(crate) struct Session {
    pub proxy: ProxyInfo,
    pub types: [TypeState; 5],
    /// Set on the per-type (non-aggregated) services: one type only, and no cross-type ordering.
    pub only: Option<TypeKind>,
    pub snapshot: Option<Arc<Snapshot>>,
    view: Option<View>,
    /// Types whose desired set may have changed since their last push (new view, a request, an ACK).
    dirty: [bool; 5],
    /// Per type: the view's names a named subscription leaves out, with what they were computed from.
    excluded: [std::cell::RefCell<Option<Excluded>>; 5],
    follows_eds: std::cell::RefCell<Option<Follows>>,
    /// The route configurations the held listeners name (RDS), for the listener set they were read from.
    listener_routes: NamedBy,
    /// The clusters the held route configurations name, for the route set they were read from.
    route_clusters: NamedBy,
    nonce: u64,
    guard: StreamGuard,
    /// The earliest config change (published while connected) the proxy does not hold in full yet.
    unconverged_since: Option<std::time::Instant>,
}

impl Session {
    pub fn new(proxy: ProxyInfo, only: Option<TypeKind>, guard: StreamGuard) -> Self {
        Self {
            proxy,
            types: Default::default(),
            only,
            snapshot: None,
            view: None,
            dirty: [true; 5],
            excluded: Default::default(),
            follows_eds: Default::default(),
            listener_routes: Default::default(),
            route_clusters: Default::default(),
            nonce: 0,
            guard,
            unconverged_since: None,
        }
    }

    /// Takes a new snapshot; only types whose shared set changed need a push (an endpoint change touches EDS only).
    pub fn set_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        let view = snapshot.view(&self.proxy);
        let mut changed = false;
        for k in TypeKind::ALL {
            let same = self.view.as_ref().is_some_and(|old| Arc::ptr_eq(old.arc(k), view.arc(k)));
            self.dirty[k.index()] |= !same;
            changed |= !same && self.types[k.index()].subscribed;
        }
        self.view = Some(view);
        // A change to this proxy's config (not its first config, nor a change it does not see) starts the clock.
        if self.snapshot.is_some() && changed {
            self.unconverged_since.get_or_insert(snapshot.changed_at);
        }
        self.snapshot = Some(snapshot);
    }

    /// A request of `kind` arrived (subscription, ACK or NACK): it and the types whose desired set reads what the
    /// proxy holds of `kind` may change. CDS and EDS holdings decide which clusters are ready (LDS, RDS) and which
    /// assignments must be kept (EDS, via the clusters held); LDS and RDS holdings decide what CDS and EDS retain.
    pub fn touch(&mut self, kind: TypeKind) {
        let dependents: &[TypeKind] = match kind {
            TypeKind::Cluster => &TypeKind::ALL,
            TypeKind::Endpoint => &[TypeKind::Endpoint, TypeKind::Listener, TypeKind::Route, TypeKind::VirtualHost],
            TypeKind::Listener | TypeKind::Route | TypeKind::VirtualHost => {
                &[kind, TypeKind::Cluster, TypeKind::Endpoint]
            }
        };
        for d in dependents {
            self.dirty[d.index()] = true;
        }
    }

    /// Whether the snapshot serves this proxy a resource of `kind` named `name` (or it holds or was sent one).
    /// Before the first snapshot every name counts as known (the request size limit still bounds them).
    pub fn knows(&self, kind: TypeKind, name: &str) -> bool {
        if kind == TypeKind::VirtualHost && !name.contains('/') {
            // A VHDS subscription names a route configuration (the namespace of its virtual hosts).
            return self.knows(TypeKind::Route, name);
        }
        let st = &self.types[kind.index()];
        self.view.as_ref().is_none_or(|v| v.get(kind).contains_key(name))
            || st.held.contains_key(name)
            || st.sent.contains_key(name)
    }

    /// Whether `kind` needs a push computed now; clears the mark.
    pub fn take_dirty(&mut self, kind: TypeKind) -> bool {
        std::mem::take(&mut self.dirty[kind.index()])
    }

    /// Whether any type waits for a push.
    pub fn any_dirty(&self) -> bool {
        self.dirty.iter().any(|d| *d)
    }

    pub fn state(&mut self, kind: TypeKind) -> &mut TypeState {
        &mut self.types[kind.index()]
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// The view ∩ the subscription, before ordering holds anything back. Built from the view's set (removing what
    /// is not subscribed), so it shares structure with the snapshot and diffs against it skip what did not change.
    pub fn target(&self, kind: TypeKind) -> ResourceSet {
        let (Some(view), st) = (&self.view, &self.types[kind.index()]) else { return ResourceSet::new() };
        let all = view.get(kind);
        if st.wildcard {
            return all.clone();
        }
        if kind == TypeKind::VirtualHost {
            return vhds_target(all, view.get(TypeKind::Route), &st.names);
        }
        if st.names.len() * 2 < all.len() {
            return st.names.iter().filter_map(|n| all.get(n).map(|r| (n.clone(), r.clone()))).collect();
        }
        let mut set = all.clone();
        for name in self.excluded_names(kind, all) {
            set.remove(&name);
        }
        set
    }

    /// The view's names the subscription leaves out, recomputed only when the subscription or the key set changed.
    fn excluded_names(&self, kind: TypeKind, all: &ResourceSet) -> Vec<String> {
        let st = &self.types[kind.index()];
        let mut cache = self.excluded[kind.index()].borrow_mut();
        if let Some(c) = cache.as_mut()
            && c.names_gen == st.names_gen
            && c.view.diff(all).all(|d| matches!(d, DiffItem::Update { .. }))
        {
            c.view = all.clone();
            return c.names.clone();
        }
        let subscribed = st.names.iter().map(String::as_str);
        let names: Vec<String> =
            sorted::missing(all.keys().map(String::as_str), subscribed).map(String::from).collect();
        *cache = Some(Excluded { names_gen: st.names_gen, view: all.clone(), names: names.clone() });
        names
    }

    /// What to offer the proxy now, with make-before-break applied (see the module doc).
    pub fn desired(&self, kind: TypeKind) -> ResourceSet {
        let mut set = self.contained_target(kind);
        if !self.orders_clusters() {
            return set;
        }
        match kind {
            TypeKind::Cluster | TypeKind::Endpoint => {
                let retained = self.retained_clusters();
                let st = &self.types[kind.index()];
                let names: Vec<String> = match kind {
                    TypeKind::Cluster => retained.into_iter().collect(),
                    _ => self.cluster_eds_names(&retained),
                };
                for name in names.into_iter().filter(|n| st.wants(n)) {
                    if let Some(old) = st.sent.get(&name).or_else(|| st.held.get(&name))
                        && !set.contains_key(&name)
                    {
                        set.insert(name, old.clone());
                    }
                }
            }
            TypeKind::Listener | TypeKind::Route | TypeKind::VirtualHost => {
                // Only resources the proxy was not already given at this version need their clusters checked: those
                // the set adds or changes against what was sent (a diff of sets sharing structure: O(change), where
                // a walk of the set would be O(set) per push: 1,000 virtual hosts per proxy over VHDS).
                let st = &self.types[kind.index()];
                let given = |n: &str| st.sent.get(n).or_else(|| st.held.get(n));
                let new: Vec<String> = st
                    .sent
                    .diff(&set)
                    .filter_map(|d| match d {
                        DiffItem::Add(n, r) | DiffItem::Update { new: (n, r), .. } => Some((n, r)),
                        DiffItem::Remove(..) => None,
                    })
                    .filter(|(n, r)| !r.refs.is_empty() && given(n).is_none_or(|o| o.version != r.version))
                    .map(|(n, _)| n.clone())
                    .collect();
                // Usually every cluster they name is held already (a first VHDS push names the whole mesh's):
                // one merge pass over all their clusters then stands for a lookup pass per resource.
                if new.len() > 1 {
                    let mut all: Vec<String> =
                        new.iter().filter_map(|n| set.get(n)).flat_map(|r| r.refs.iter().cloned()).collect();
                    all.sort_unstable();
                    all.dedup();
                    if self.ready(&all) {
                        return set;
                    }
                }
                for name in new {
                    if set.get(&name).is_some_and(|r| self.ready(&r.refs)) {
                        continue;
                    }
                    match given(&name) {
                        Some(old) => set.insert(name, old.clone()),
                        None => set.remove(&name),
                    };
                }
            }
        }
        set
    }

    /// The target with what the proxy refused (and suspects not on trial) at the content it holds.
    fn contained_target(&self, kind: TypeKind) -> ResourceSet {
        let st = &self.types[kind.index()];
        let target = self.target(kind);
        if st.contain.borrow().is_empty() {
            return target;
        }
        st.contain.borrow_mut().apply(kind, target, &st.held)
    }

    /// Make-before-break applies when this stream sees every type and takes clusters by wildcard, as Envoy does.
    /// A client that asks clusters by name (proxyless gRPC) asks for them only after it reads the route naming
    /// them: holding that route back would deadlock, and such a client orders the switch itself.
    fn orders_clusters(&self) -> bool {
        self.only.is_none() && self.types[TypeKind::Cluster.index()].wildcard
    }

    /// Whether the proxy may route to every cluster of `clusters` (ascending): it holds each (ACKed) and, for an
    /// EDS cluster, its assignment. Merge passes over the held sets (see `xds::sorted`).
    fn ready(&self, clusters: &[String]) -> bool {
        let Some(held) = sorted::lookup_all(clusters, &self.types[TypeKind::Cluster.index()].held) else {
            return false;
        };
        let assignments = sorted::refs_of(held.into_iter());
        sorted::all_in(&assignments, &self.types[TypeKind::Endpoint.index()].held)
    }

    /// Clusters not in the new set that a held or in-flight route or listener still names.
    fn retained_clusters(&self) -> BTreeSet<String> {
        // Ordering applies to wildcard CDS only (`orders_clusters`), so the CDS target is the view's set.
        let Some(view) = &self.view else { return BTreeSet::new() };
        let clusters = view.get(TypeKind::Cluster);
        // Only clusters the proxy holds or was sent that left the view can need keeping: a diff of sets that
        // share structure finds them in O(change), so the usual push (nothing removed) looks at no route.
        let cds = &self.types[TypeKind::Cluster.index()];
        let gone: BTreeSet<&String> = cds
            .sent
            .diff(clusters)
            .chain(cds.held.diff(clusters))
            .filter_map(|d| match d {
                DiffItem::Remove(name, _) => Some(name),
                _ => None,
            })
            .collect();
        if gone.is_empty() {
            return BTreeSet::new();
        }
        let mut out = BTreeSet::new();
        for kind in [TypeKind::Listener, TypeKind::Route, TypeKind::VirtualHost] {
            let st = &self.types[kind.index()];
            let inflight = st.inflight.iter().flat_map(|i| i.set.values());
            for r in st.held.values().chain(inflight) {
                out.extend(r.refs.iter().filter(|c| gone.contains(c)).cloned());
            }
        }
        out
    }

    /// The assignment names of the given clusters (from what the proxy was sent).
    fn cluster_eds_names(&self, clusters: &BTreeSet<String>) -> Vec<String> {
        let st = &self.types[TypeKind::Cluster.index()];
        clusters
            .iter()
            .filter_map(|c| st.sent.get(c).or_else(|| st.held.get(c)))
            .flat_map(|c| c.refs.iter().cloned())
            .collect()
    }

    /// The proxy accepted the response with `nonce`.
    pub fn ack(&mut self, kind: TypeKind) {
        let st = self.state(kind);
        if let Some(inflight) = st.inflight.take() {
            st.held = Arc::new(inflight.set);
            st.acked_version = Some(inflight.version);
            st.acked_at = Some(SystemTime::now());
            st.contain.get_mut().ack(kind, &st.held);
            if st.contain.get_mut().refused().next().is_none() {
                st.last_nack = None;
            }
            tracing::debug!(type = kind.short(), version = %st.acked_version.as_deref().unwrap_or(""), "ACK");
        }
    }

    /// The proxy rejected the response in flight; it keeps its last good set, and we do not re-send this content.
    pub fn nack(&mut self, kind: TypeKind, mut reason: String) {
        if reason.len() > MAX_NACK_REASON {
            // Kept for /debug/syncz; the request size limit bounds it, this keeps each held reason small.
            let cut = (0..=MAX_NACK_REASON).rev().find(|i| reason.is_char_boundary(*i)).unwrap_or(0);
            reason.truncate(cut);
            reason.push_str("...");
        }
        let st = self.state(kind);
        if let Some(inflight) = st.inflight.take() {
            // The stream's span names the proxy.
            tracing::warn!(type = kind.short(), version = %inflight.version, %reason, "NACK");
            // Find what it refuses: the next push offers everything else (see `xds::contain`).
            for unit in st.contain.get_mut().nack(kind, &inflight.set, &st.held, &inflight.version, &reason) {
                tracing::warn!(type = kind.short(), %unit, %reason, "refused: held back at the proxy's last good \
                    config until it changes; every other change goes on");
                crate::telemetry::xds::get().contained(kind);
            }
            st.last_nack = Some(Nack { version: inflight.version, reason, at: SystemTime::now() });
            crate::telemetry::xds::get().rejected(kind);
            self.dirty[kind.index()] = true;
        }
    }

    /// Publishes this stream's state to the registry; true when the proxy is synced.
    pub fn report(&mut self) -> bool {
        let version = self.snapshot.as_ref().map(|s| s.version);
        let synced = self.synced().then_some(version).flatten();
        let contained = self.types.iter().any(|st| !st.contain.borrow().is_empty());
        let settled = if contained { self.settled().then_some(version).flatten() } else { synced };
        if synced.is_some()
            && let Some(since) = self.unconverged_since.take()
        {
            crate::telemetry::xds::get().converged(since.elapsed());
        }
        let types: BTreeMap<TypeKind, TypeStatus> = TypeKind::ALL
            .into_iter()
            .filter(|k| self.types[k.index()].subscribed)
            .map(|k| {
                let st = &self.types[k.index()];
                let status = TypeStatus {
                    sent: st.sent_version.clone(),
                    acked: st.acked_version.clone(),
                    pending: st.inflight.is_some(),
                    last_nack: st.last_nack.clone(),
                    resources: st.held.len(),
                    refused: st.contain.borrow().refused().cloned().collect(),
                    held: Arc::downgrade(&st.held),
                    sent_set: st.sent.clone(),
                    wildcard: st.wildcard,
                    names: st.names.clone(),
                    acked_at: st.acked_at,
                    sent_at: st.sent_at,
                };
                (k, status)
            })
            .collect();
        self.guard.update(|s| {
            s.types = types;
            s.synced_version = synced;
            s.settled_version = settled;
        });
        synced.is_some()
    }
}
