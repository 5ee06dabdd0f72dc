//! When a session counts as holding its view (`Session::synced`, `Session::settled`): every subscribed type holds its
//! target, and the proxy holds what the types before lead it to ask for next. An Envoy subscribes to clusters and
//! listeners by wildcard; a proxyless gRPC client subscribes by name, so it holds the listeners it dials, the route
//! configurations those name, the clusters its routes send calls to (weight above 0) and their assignments.

use super::super::resource::{ResourceSet, TypeKind};
use super::super::snapshot::View;
use super::super::sorted;
use super::Session;
use imbl::ordmap::DiffItem;
use std::sync::Arc;

/// The names a held set leads a proxy to ask for, with the set they were read from.
pub(super) type NamedBy = std::cell::RefCell<Option<(Arc<ResourceSet>, Arc<Vec<String>>)>>;

/// `names(set)` sorted and deduplicated, computed again only when `set` is not the one `cache` was filled from.
fn named_by(
    set: &Arc<ResourceSet>,
    cache: &NamedBy,
    names: impl FnOnce(&ResourceSet) -> Vec<String>,
) -> Arc<Vec<String>> {
    let mut cache = cache.borrow_mut();
    if let Some((from, named)) = cache.as_ref()
        && Arc::ptr_eq(from, set)
    {
        return named.clone();
    }
    let mut named = names(set);
    named.sort_unstable();
    named.dedup();
    let named = Arc::new(named);
    *cache = Some((set.clone(), named.clone()));
    named
}

/// Whether the proxy holds the assignment of every EDS cluster it holds (see [`Session::follows`]), with what it
/// was computed from: it depends on the CDS set held and on the key sets of the EDS set held and the view's EDS
/// set, so an endpoint change (values only) keeps it valid, checked by structural diffs in O(change).
pub(super) struct Follows {
    clusters: Arc<ResourceSet>,
    held: Arc<ResourceSet>,
    view: ResourceSet,
    ok: bool,
}

impl Session {
    /// True when every subscribed type holds its full target, nothing is in flight, and the proxy holds what its
    /// clusters and listeners lead it to ask for next (EDS for its EDS clusters, RDS for its HTTP listeners).
    pub fn synced(&self) -> bool {
        let Some(view) = &self.view else { return false };
        if self.types.iter().any(|st| st.inflight.is_some()) {
            return false;
        }
        TypeKind::ALL.into_iter().all(|k| {
            let st = &self.types[k.index()];
            self.follows(k, view) && (!st.subscribed || self.holds_target(k, view))
        })
    }

    /// The proxy holds exactly the view ∩ its subscription of `kind` (a diff that skips shared structure).
    fn holds_target(&self, kind: TypeKind, _view: &View) -> bool {
        let st = &self.types[kind.index()];
        st.held.diff(&self.target(kind)).next().is_none()
    }

    /// Like [`Session::synced`], with the parts the proxy refused counted at the content it keeps for them.
    pub(super) fn settled(&self) -> bool {
        let Some(view) = &self.view else { return false };
        if self.types.iter().any(|st| st.inflight.is_some()) {
            return false;
        }
        TypeKind::ALL.into_iter().all(|k| {
            let st = &self.types[k.index()];
            let holds = || st.held.diff(&self.contained_target(k)).next().is_none();
            self.follows(k, view) && (!st.subscribed || holds())
        })
    }

    /// The proxy holds what the types before `kind` lead it to ask of `kind`.
    fn follows(&self, kind: TypeKind, view: &View) -> bool {
        let held = &self.types[kind.index()].held;
        match kind {
            TypeKind::Endpoint => self.follows_eds(view.get(kind)),
            TypeKind::Route if !self.types[TypeKind::Listener.index()].held.is_empty() => {
                // The route configurations its listeners name and the view has: a proxyless gRPC client asks for
                // those of the listeners it dials only, not every port's.
                let named = self.listener_routes();
                let view = view.get(kind);
                !sorted::missing(named.iter().map(String::as_str), held.keys().map(String::as_str))
                    .any(|n| view.contains_key(n))
            }
            // A client that asks for clusters by name (proxyless gRPC) holds those its routes name; a wildcard
            // subscription (Envoy) is checked whole by `holds_target`.
            TypeKind::Cluster if !self.types[kind.index()].wildcard => {
                let named = self.route_clusters();
                let view = view.get(kind);
                !sorted::missing(named.iter().map(String::as_str), held.keys().map(String::as_str))
                    .any(|n| view.contains_key(n))
            }
            _ => true,
        }
    }

    /// The RDS names of the held listeners, ascending; read again only when the held listeners change.
    fn listener_routes(&self) -> Arc<Vec<String>> {
        named_by(&self.types[TypeKind::Listener.index()].held, &self.listener_routes, |set| {
            set.values().flat_map(|l| super::super::resource::rds_names(&l.body)).collect()
        })
    }

    /// The clusters the held route configurations send calls to, ascending; read again only when those change.
    fn route_clusters(&self) -> Arc<Vec<String>> {
        named_by(&self.types[TypeKind::Route.index()].held, &self.route_clusters, |set| {
            set.values().flat_map(|r| super::super::resource::routed_clusters(&r.body)).collect()
        })
    }

    /// Every EDS cluster the proxy holds whose assignment exists has its assignment held; cached (see [`Follows`]).
    fn follows_eds(&self, view: &ResourceSet) -> bool {
        let clusters = &self.types[TypeKind::Cluster.index()].held;
        let held = &self.types[TypeKind::Endpoint.index()].held;
        let same_keys = |a: &ResourceSet, b: &ResourceSet| a.diff(b).all(|d| matches!(d, DiffItem::Update { .. }));
        let mut cache = self.follows_eds.borrow_mut();
        if let Some(c) = cache.as_mut()
            && Arc::ptr_eq(&c.clusters, clusters)
            && (Arc::ptr_eq(&c.held, held) || same_keys(&c.held, held))
            && same_keys(&c.view, view)
        {
            (c.held, c.view) = (held.clone(), view.clone());
            return c.ok;
        }
        let assignments = sorted::refs_of(clusters.values());
        let ok = !sorted::missing(assignments, held.keys().map(String::as_str)).any(|n| view.contains_key(n));
        *cache = Some(Follows { clusters: clusters.clone(), held: held.clone(), view: view.clone(), ok });
        ok
    }
}
