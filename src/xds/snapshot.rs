//! Snapshots: the encoded config for one model, shared by every stream.
//!
//! A [`Snapshot`] holds what all proxies share (clusters, load assignments) eagerly, and what depends on the proxy
//! (route configurations per [`RouteScope`], listeners and extra clusters per proxy shape) lazily, cached so that
//! proxies of the same shape share one encoded set: memory grows with distinct config, not with proxy count.

use super::resource::{Resource, ResourceSet, TypeKind};
use crate::model::{InterceptionMode, Model, ProxyInfo};
use crate::translate::{self, RouteScope};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What listeners and per-proxy clusters depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProxyShape {
    mode: InterceptionMode,
    namespace: String,
    inbound_ports: Vec<u16>,
}

impl ProxyShape {
    fn of(p: &ProxyInfo) -> Self {
        Self { mode: p.mode.clone(), namespace: p.namespace.clone(), inbound_ports: p.inbound_ports.clone() }
    }
}

/// Listeners and clusters for one proxy shape.
type ShapeSets = (Arc<ResourceSet>, Arc<ResourceSet>);

pub struct Snapshot {
    /// Increases with every published snapshot; what "proxy X has ACKed version V" refers to.
    pub version: u64,
    pub model: Arc<Model>,
    clusters: Arc<ResourceSet>,
    endpoints: Arc<ResourceSet>,
    routes: Mutex<HashMap<RouteScope, Arc<ResourceSet>>>,
    shapes: Mutex<HashMap<ProxyShape, ShapeSets>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("clusters", &self.clusters.len())
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

/// One proxy's resources, per type.
#[derive(Clone, Debug)]
pub struct View {
    sets: [Arc<ResourceSet>; 4],
}

impl View {
    pub fn get(&self, kind: TypeKind) -> &ResourceSet {
        &self.sets[kind.index()]
    }
}

/// The snapshot would hand Envoy a dangling reference: refuse to publish it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Inconsistent {
    #[error("EDS cluster {cluster} has no load assignment")]
    MissingAssignment { cluster: String },
}

impl Snapshot {
    /// Translates a whole model. With `previous`, unchanged resources keep their shared bytes, and when only
    /// endpoints changed, only the affected services' load assignments are derived again.
    pub fn build(version: u64, model: Arc<Model>, previous: Option<&Snapshot>) -> Result<Self, Inconsistent> {
        let clusters =
            encode(translate::clusters(&model).iter().map(Resource::cluster), previous.map(|p| &*p.clusters));
        let endpoints = match previous {
            Some(prev) if only_endpoints_changed(&prev.model, &model) => {
                endpoints_fast_path(&prev.endpoints, &prev.model, &model)
            }
            _ => encode(
                translate::load_assignments(&model).iter().map(Resource::load_assignment),
                previous.map(|p| &*p.endpoints),
            ),
        };
        let snapshot = Self {
            version,
            model,
            clusters: Arc::new(clusters),
            endpoints: Arc::new(endpoints),
            routes: Mutex::default(),
            shapes: Mutex::default(),
        };
        snapshot.check()?;
        Ok(snapshot)
    }

    /// Every EDS cluster has its assignment (go-control-plane's `consistent`); routes are checked per scope.
    fn check(&self) -> Result<(), Inconsistent> {
        for c in self.clusters.values() {
            for r in c.refs.iter() {
                if !self.endpoints.contains_key(r) {
                    return Err(Inconsistent::MissingAssignment { cluster: c.name.clone() });
                }
            }
        }
        Ok(())
    }

    pub fn clusters(&self) -> &Arc<ResourceSet> {
        &self.clusters
    }

    pub fn endpoints(&self) -> &Arc<ResourceSet> {
        &self.endpoints
    }

    /// The resources one proxy sees. Cheap after the first proxy of the same shape.
    pub fn view(&self, proxy: &ProxyInfo) -> View {
        let scope = translate::route_scope(&self.model, proxy);
        let routes = {
            let mut cache = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .entry(scope)
                .or_insert_with_key(|scope| {
                    let set = encode(translate::route_configs(&self.model, scope).iter().map(Resource::route), None);
                    self.warn_dangling(&set);
                    Arc::new(set)
                })
                .clone()
        };
        let (listeners, clusters) = {
            let mut cache = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
            cache.entry(ProxyShape::of(proxy)).or_insert_with(|| self.shape_sets(proxy)).clone()
        };
        View { sets: [clusters, self.endpoints.clone(), listeners, routes] }
    }

    fn shape_sets(&self, proxy: &ProxyInfo) -> ShapeSets {
        let listeners = encode(translate::listeners(&self.model, proxy).iter().map(Resource::listener), None);
        let extra = translate::proxy_clusters(&self.model, proxy);
        let clusters = if extra.is_empty() {
            self.clusters.clone()
        } else {
            let mut all = (*self.clusters).clone();
            all.extend(extra.iter().map(|c| (c.name.clone(), Arc::new(Resource::cluster(c)))));
            Arc::new(all)
        };
        (Arc::new(listeners), clusters)
    }

    /// A route naming a missing cluster is a translate bug: say so loudly (tests assert it never happens).
    fn warn_dangling(&self, routes: &ResourceSet) {
        for r in routes.values() {
            for c in r.refs.iter().filter(|c| !self.clusters.contains_key(*c)) {
                tracing::error!(route = %r.name, cluster = %c, "route names a cluster that does not exist");
            }
        }
    }
}

/// Encodes resources, reusing the previous `Arc` when the bytes are the same (so versions and memory are shared).
fn encode(items: impl Iterator<Item = Resource>, previous: Option<&ResourceSet>) -> ResourceSet {
    items
        .map(|r| {
            let shared = previous.and_then(|p| p.get(&r.name)).filter(|p| p.version == r.version);
            (r.name.clone(), shared.cloned().unwrap_or_else(|| Arc::new(r)))
        })
        .collect()
}

fn only_endpoints_changed(old: &Model, new: &Model) -> bool {
    old.services == new.services && old.policies == new.policies
}

/// Re-derives the load assignments of the services whose endpoints changed; keeps every other one as it was.
fn endpoints_fast_path(prev: &ResourceSet, old: &Model, new: &Model) -> ResourceSet {
    let mut set = prev.clone();
    for svc in old.services_with_changed_endpoints(new) {
        let fresh: Vec<Resource> =
            translate::service_load_assignments(new, &svc).iter().map(Resource::load_assignment).collect();
        let stale: Vec<String> =
            translate::service_load_assignments(old, &svc).into_iter().map(|c| c.cluster_name).collect();
        for name in stale {
            set.remove(&name);
        }
        for r in fresh {
            let keep = prev.get(&r.name).filter(|p| p.version == r.version).cloned();
            set.insert(r.name.clone(), keep.unwrap_or_else(|| Arc::new(r)));
        }
    }
    set
}
