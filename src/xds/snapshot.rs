//! Snapshots: the encoded config for one model, shared by every stream.
//!
//! A [`Snapshot`] holds what all proxies share (clusters, load assignments) eagerly, and what depends on the proxy
//! (route configurations per [`RouteScope`], listeners and extra clusters per proxy shape) lazily, cached so that
//! proxies of the same shape share one encoded set: memory grows with distinct config, not with proxy count.
//! A proxy whose [`Visibility`] is limited (mTLS) gets the same sets filtered to its namespaces, cached per
//! visibility group (see `xds::visible`); its routes and listeners are translated from the visible model part.
//! Proxies that take part in workload mTLS (`ProxyInfo::mtls`) share a second cluster set with upstream TLS
//! ([`translate::mesh_clusters`]), built when the first of them asks and then kept up to date with every snapshot.

use super::resource::{Resource, ResourceSet, TypeKind};
use super::route_check::{PARALLEL_VHOSTS, check_routes, report_violations, warn_dangling};
use super::visible;
use crate::model::{DEFAULT_VERSION_LABEL, InterceptionMode, Model, ObjectKey, ProxyInfo, Visibility};
use crate::translate::{self, RouteScope};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use imbl::ordmap::DiffItem;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What listeners and per-proxy clusters depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProxyShape {
    mode: InterceptionMode,
    namespace: String,
    inbound_ports: Vec<u16>,
    visibility: Visibility,
    /// Intercept mode (and workload mTLS, whose PeerAuthentications select by labels): which Services select the
    /// proxy decides its inbound ports' protocols.
    labels: Option<BTreeMap<String, String>>,
    mtls: bool,
}

impl ProxyShape {
    fn of(p: &ProxyInfo) -> Self {
        Self {
            mode: p.mode.clone(),
            namespace: p.namespace.clone(),
            inbound_ports: p.inbound_ports.clone(),
            visibility: p.visibility.clone(),
            // A gateway's labels pick the Gateways that configure it.
            labels: (p.mode == InterceptionMode::Intercept || p.mtls || matches!(p.mode, InterceptionMode::Gateway(_)))
                .then(|| p.labels.clone()),
            mtls: p.mtls,
        }
    }
}

/// The route configurations of one (visibility, scope): whole, and in their VHDS form (configurations that name
/// VHDS, and their virtual hosts one resource each; see `translate::vhds`).
#[derive(Clone)]
struct RouteSets {
    /// Whole configurations: built with the VHDS form on a full translation, on first use after a patched one.
    full: Arc<std::sync::OnceLock<Arc<ResourceSet>>>,
    headers: Arc<ResourceSet>,
    vhosts: Arc<ResourceSet>,
}

/// The route sets of a snapshot, per visibility and scope.
type RouteCache = HashMap<(Visibility, RouteScope), RouteSets>;

/// Listeners and clusters for one proxy shape.
type ShapeSets = (Arc<ResourceSet>, Arc<ResourceSet>);
/// Clusters and load assignments a limited visibility covers.
type ScopedSets = (Arc<ResourceSet>, Arc<ResourceSet>);

pub struct Snapshot {
    /// Increases with every published snapshot; what "proxy X has ACKed version V" refers to.
    pub version: u64,
    pub model: Arc<Model>,
    /// When the model change this snapshot carries was first seen (before coalescing): where a proxy's
    /// convergence time starts. `build` sets it to now; the publisher sets the change's time.
    pub changed_at: std::time::Instant,
    clusters: Arc<ResourceSet>,
    /// The clusters of proxies with workload mTLS; `None` until one asks (then built with every snapshot).
    mesh_clusters: Mutex<Option<Arc<ResourceSet>>>,
    endpoints: Arc<ResourceSet>,
    routes: Mutex<RouteCache>,
    /// The previous snapshot's route sets when this one translates routes anew: its virtual host sets are edited
    /// into the new ones, so a stream's diff of what it was sent against them costs O(change).
    previous_routes: RouteCache,
    /// After a change of release policies and VirtualServices only: the Services whose virtual hosts may differ
    /// from the previous snapshot's (the rest are carried over; see [`Model::routing_change`]).
    route_patch: Option<std::collections::BTreeSet<ObjectKey>>,
    shapes: Mutex<HashMap<ProxyShape, ShapeSets>>,
    /// Per limited visibility (and workload mTLS or not): its clusters and assignments (carried to the next
    /// snapshot by diff).
    scoped: Mutex<HashMap<(Visibility, bool), ScopedSets>>,
    /// Per limited visibility: the visible part of the model (built when a route or shape cache misses).
    models: Mutex<HashMap<Visibility, Arc<Model>>>,
    /// Per Sidecar, proxy namespace and visibility: the scope it gives (see [`Snapshot::scoped`]).
    egress: Mutex<HashMap<EgressKey, Option<Visibility>>>,
}

/// A Sidecar, the namespace of the proxy it scopes, and that proxy's visibility before it.
type EgressKey = (ObjectKey, String, Visibility);

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
    sets: [Arc<ResourceSet>; 5],
}

impl View {
    pub fn get(&self, kind: TypeKind) -> &ResourceSet {
        &self.sets[kind.index()]
    }

    /// The shared set itself: equal pointers mean nothing of that type changed.
    pub fn arc(&self, kind: TypeKind) -> &Arc<ResourceSet> {
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
    /// Translates a whole model. With `previous`, unchanged resources keep their shared bytes; when only endpoints
    /// changed, only the affected services' load assignments are derived again, and clusters, routes and listeners
    /// are carried over unless those services' versions (or a version's readiness) changed.
    pub fn build(version: u64, model: Arc<Model>, previous: Option<&Snapshot>) -> Result<Self, Inconsistent> {
        // Both questions are structural diffs of the models' persistent maps: O(change) for a model derived from
        // the previous one by edits (as the store publishes them), whatever the model's size.
        let fast = previous.filter(|p| p.model.only_endpoints_differ(&model));
        let changed = fast.map(|p| p.model.services_with_changed_endpoints(&model)).unwrap_or_default();
        let same = |f: fn(&Model, &ObjectKey) -> BTreeMap<String, bool>| {
            fast.is_some_and(|p| changed.iter().all(|svc| f(&p.model, svc) == f(&model, svc)))
        };
        let (clusters_same, routes_same) = (same(versions_of), same(readiness_of));
        // Service accounts are only in the mesh clusters' SANs.
        let mesh_same = clusters_same && same(accounts_of);
        // A change of release policies and VirtualServices only (a release step, a VirtualService edit): the
        // Services it touches are derived again, the rest carried over, whatever the mesh's size.
        let step = match (fast, previous) {
            (None, Some(p)) => p.model.routing_change(&model).map(|change| (p, change)),
            _ => None,
        };
        let clusters = match (fast, &step) {
            (Some(prev), _) if clusters_same => prev.clusters.clone(),
            (_, Some((prev, change))) => {
                patch_services(&prev.clusters, &prev.model, &model, &change.touched, &clusters_of)
            }
            _ => encode_onto(every_service(&model, &clusters_of), previous.map(|p| &p.clusters)),
        };
        let prev_mesh = previous.and_then(|p| lock(&p.mesh_clusters).clone());
        let mesh_clusters = prev_mesh.map(|prev| match (fast, &step) {
            (Some(_), _) if mesh_same => prev,
            (_, Some((p, change))) => patch_services(&prev, &p.model, &model, &change.touched, &mesh_clusters_of),
            _ => encode_onto(every_service(&model, &mesh_clusters_of), Some(&prev)),
        });
        let endpoints = match (fast, &step) {
            (Some(prev), _) => Arc::new(endpoints_fast_path(&prev.endpoints, &prev.model, &model, &changed)),
            (_, Some((prev, change))) => {
                patch_services(&prev.endpoints, &prev.model, &model, &change.touched, &assignments_of)
            }
            _ => encode_onto(every_service(&model, &assignments_of), previous.map(|p| &p.endpoints)),
        };
        let scoped = previous
            .map(|p| {
                let p_mesh = lock(&p.mesh_clusters).clone();
                let carry = |(v, mtls): &(Visibility, bool), (c, e): &ScopedSets| {
                    let (old, new) = match (mtls, &p_mesh, &mesh_clusters) {
                        (true, Some(old), Some(new)) => (old, new),
                        _ => (&p.clusters, &clusters),
                    };
                    let sets = (visible::carry(c, old, new, v), visible::carry(e, &p.endpoints, &endpoints, v));
                    ((v.clone(), *mtls), sets)
                };
                lock(&p.scoped).iter().map(|(k, sets)| carry(k, sets)).collect()
            })
            .unwrap_or_default();
        let (routes, previous_routes) = match (fast, previous) {
            (Some(prev), _) if clusters_same && routes_same => (lock(&prev.routes).clone(), HashMap::new()),
            (_, Some(prev)) => (HashMap::new(), lock(&prev.routes).clone()),
            _ => (HashMap::new(), HashMap::new()),
        };
        // Listeners do not read policies: after a release step whose clusters did not change they are carried too.
        let step_same = step.as_ref().is_some_and(|(prev, change)| {
            change.listeners_same
                && Arc::ptr_eq(&prev.clusters, &clusters)
                && lock(&prev.mesh_clusters).as_ref().zip(mesh_clusters.as_ref()).is_none_or(|(a, b)| Arc::ptr_eq(a, b))
        });
        let shapes = match (fast, &step) {
            (Some(prev), _) if mesh_same => lock(&prev.shapes).clone(),
            (_, Some((prev, _))) if step_same => lock(&prev.shapes).clone(),
            _ => HashMap::new(),
        };
        let route_patch = step.map(|(_, change)| change.touched);
        let snapshot = Self {
            version,
            routes: Mutex::new(routes),
            previous_routes,
            route_patch,
            shapes: Mutex::new(shapes),
            scoped: Mutex::new(scoped),
            models: Mutex::default(),
            egress: Mutex::default(),
            model,
            changed_at: std::time::Instant::now(),
            clusters,
            mesh_clusters: Mutex::new(mesh_clusters),
            endpoints,
        };
        snapshot.check(previous)?;
        Ok(snapshot)
    }

    /// Every EDS cluster has its assignment (go-control-plane's `consistent`); routes are checked per scope.
    /// The previous snapshot passed this check, so unless an assignment went away only the clusters that are new
    /// or changed since then need checking (a structural diff: O(change)).
    fn check(&self, previous: Option<&Snapshot>) -> Result<(), Inconsistent> {
        if let Some(p) = previous
            && !p.endpoints.diff(&self.endpoints).any(|d| matches!(d, DiffItem::Remove(..)))
        {
            for d in p.clusters.diff(&self.clusters) {
                if let DiffItem::Add(_, c) | DiffItem::Update { new: (_, c), .. } = d {
                    self.check_cluster(c)?;
                }
            }
            return Ok(());
        }
        for c in self.clusters.values() {
            self.check_cluster(c)?;
        }
        Ok(())
    }

    fn check_cluster(&self, c: &Resource) -> Result<(), Inconsistent> {
        match c.refs.iter().all(|r| self.endpoints.contains_key(r)) {
            true => Ok(()),
            false => Err(Inconsistent::MissingAssignment { cluster: c.name.clone() }),
        }
    }

    pub fn clusters(&self) -> &Arc<ResourceSet> {
        &self.clusters
    }

    pub fn endpoints(&self) -> &Arc<ResourceSet> {
        &self.endpoints
    }

    /// The resources one proxy sees. Cheap after the first proxy of the same shape and visibility. A proxy that
    /// takes VHDS (`ProxyInfo::vhds`) gets its sidecar route configurations in their VHDS form; others get them
    /// whole and no virtual hosts.
    pub fn view(&self, proxy: &ProxyInfo) -> View {
        // A Sidecar narrows the proxy's visibility (recomputed from each snapshot's model): the caches below are
        // keyed by it, so proxies under the same effective Sidecar share every set.
        let scoped = self.scoped(proxy);
        let proxy = scoped.as_ref().unwrap_or(proxy);
        let visibility = &proxy.visibility;
        let (base_clusters, endpoints) = self.sets_for(visibility, proxy.mtls);
        // The scope reads the whole model's policies: a rule the proxy cannot see only splits the cache key.
        let key = (visibility.clone(), translate::route_scope(&self.model, proxy));
        let vhds = proxy.vhds && key.1.gateways.is_none() && proxy.mode != InterceptionMode::Proxyless;
        let cached = lock(&self.routes).get(&key).cloned();
        let routes = cached.unwrap_or_else(|| {
            let sets = self.route_sets(&key, &base_clusters);
            lock(&self.routes).entry(key.clone()).or_insert(sets).clone()
        });
        let (routes, vhosts) = match vhds {
            true => (routes.headers, routes.vhosts),
            false => {
                let full = routes.full.get_or_init(|| {
                    let configs = self.translate_routes(&key);
                    self.encode_whole(&key, &configs, &base_clusters)
                });
                (full.clone(), no_resources())
            }
        };
        let (listeners, clusters) = {
            let mut cache = lock(&self.shapes);
            cache.entry(ProxyShape::of(proxy)).or_insert_with(|| self.shape_sets(proxy, &base_clusters)).clone()
        };
        View { sets: [clusters, endpoints, listeners, routes, vhosts] }
    }

    /// The proxy as its Sidecar scopes it, if one does; the scope computed once per Sidecar, namespace and
    /// visibility in this snapshot (it reads the whole by-Service index).
    fn scoped(&self, proxy: &ProxyInfo) -> Option<ProxyInfo> {
        let (key, sidecar) = self.model.proxy_sidecar(proxy)?;
        let cache_key = (key.clone(), proxy.namespace.clone(), proxy.visibility.clone());
        let cached = lock(&self.egress).get(&cache_key).cloned();
        let visibility = cached.unwrap_or_else(|| {
            let v = self.model.egress_of(sidecar, &proxy.namespace, &proxy.visibility);
            lock(&self.egress).entry(cache_key).or_insert(v).clone()
        })?;
        Some(ProxyInfo { visibility, ..proxy.clone() })
    }

    /// One scope's route configurations, whole and in their VHDS form. After a routing-only change the previous
    /// snapshot's VHDS sets are patched (only the touched Services' virtual hosts translated), and the whole form
    /// waits until a proxy that takes it asks.
    fn route_sets(&self, key: &(Visibility, RouteScope), clusters: &ResourceSet) -> RouteSets {
        if let (Some(touched), Some(prev)) = (&self.route_patch, self.previous_routes.get(key))
            && key.1.gateways.is_none()
        {
            return RouteSets {
                full: Default::default(),
                headers: prev.headers.clone(),
                vhosts: self.patched_vhosts(key, &prev.vhosts, touched, clusters),
            };
        }
        let configs = self.translate_routes(key);
        // Both forms at once: the whole one encoded beside the virtual hosts, those on every core.
        let named: Vec<(&str, &VirtualHost)> =
            configs.iter().flat_map(|c| c.virtual_hosts.iter().map(move |v| (c.name.as_str(), v))).collect();
        let (full, vhosts) = crate::parallel::join(
            named.len() >= PARALLEL_VHOSTS,
            || self.encode_whole(key, &configs, clusters),
            || {
                crate::parallel::runs(&named, PARALLEL_VHOSTS, |run| {
                    let named = run.iter().map(|(config, v)| translate::vhds::named(config, (*v).clone()));
                    named.map(|v| Resource::virtual_host(&v)).collect::<Vec<_>>()
                })
            },
        );
        drop(named);
        let previous = self.previous_routes.get(key);
        let headers = configs.into_iter().map(translate::vhds::header).map(|h| Resource::route(&h));
        RouteSets {
            full: Arc::new(std::sync::OnceLock::from(full)),
            headers: Arc::new(encode(headers, previous.map(|p| &*p.headers))),
            vhosts: encode_onto(vhosts.into_iter().flatten(), previous.map(|p| &p.vhosts)),
        }
    }

    /// One scope's route configurations, translated from the part of the model its visibility covers and checked
    /// against Envoy's API constraints.
    fn translate_routes(&self, (visibility, scope): &(Visibility, RouteScope)) -> Vec<RouteConfiguration> {
        let mut configs = translate::route_configs(&self.model_for(visibility), scope);
        check_routes(&mut configs);
        configs
    }

    /// The whole form of one scope's route configurations, encoded (sharing what the previous snapshot had).
    fn encode_whole(
        &self,
        key: &(Visibility, RouteScope),
        configs: &[RouteConfiguration],
        clusters: &ResourceSet,
    ) -> Arc<ResourceSet> {
        let previous = self.previous_routes.get(key).and_then(|p| p.full.get());
        let full = encode(configs.iter().map(Resource::route), previous.map(|f| &**f));
        warn_dangling(&full, clusters, key.1.passthrough);
        Arc::new(full)
    }

    /// The previous snapshot's virtual hosts with those of the `touched` Services translated again.
    fn patched_vhosts(
        &self,
        (visibility, scope): &(Visibility, RouteScope),
        previous: &Arc<ResourceSet>,
        touched: &std::collections::BTreeSet<ObjectKey>,
        clusters: &ResourceSet,
    ) -> Arc<ResourceSet> {
        let model = self.model_for(visibility);
        let mut fresh = Vec::new();
        for key in touched {
            for (config, vhost) in translate::service_virtual_hosts(&model, scope, key) {
                let vhost = translate::vhds::named(&config, vhost);
                report_violations(std::iter::once((vhost.name.clone(), super::pgv::check_message(&vhost))));
                fresh.push(Resource::virtual_host(&vhost));
            }
        }
        let set = patch(previous, std::iter::empty(), fresh.into_iter());
        warn_dangling(&set, clusters, scope.passthrough);
        set
    }

    /// The shared clusters (with workload mTLS or not) and assignments `visibility` covers.
    fn sets_for(&self, visibility: &Visibility, mtls: bool) -> ScopedSets {
        let clusters = if mtls { self.mesh_clusters() } else { self.clusters.clone() };
        if *visibility == Visibility::All {
            return (clusters, self.endpoints.clone());
        }
        let mut cache = lock(&self.scoped);
        let sets = cache
            .entry((visibility.clone(), mtls))
            .or_insert_with_key(|(v, _)| (visible::filter(&clusters, v), visible::filter(&self.endpoints, v)));
        sets.clone()
    }

    /// The clusters of proxies with workload mTLS, built on first use.
    pub fn mesh_clusters(&self) -> Arc<ResourceSet> {
        lock(&self.mesh_clusters)
            .get_or_insert_with(|| Arc::new(encode(every_service(&self.model, &mesh_clusters_of), None)))
            .clone()
    }

    /// The model part `visibility` covers (the whole model for [`Visibility::All`]).
    fn model_for(&self, visibility: &Visibility) -> Arc<Model> {
        if *visibility == Visibility::All {
            return self.model.clone();
        }
        let mut cache = lock(&self.models);
        cache.entry(visibility.clone()).or_insert_with_key(|v| Arc::new(self.model.visible_to(v))).clone()
    }

    fn shape_sets(&self, proxy: &ProxyInfo, base: &Arc<ResourceSet>) -> ShapeSets {
        let model = self.model_for(&proxy.visibility);
        let listeners = encode(translate::listeners(&model, proxy).iter().map(Resource::listener), None);
        let grpc;
        let base = if proxy.mode == InterceptionMode::Proxyless {
            grpc = Arc::new(grpc_clusters(base));
            &grpc
        } else {
            base
        };
        let extra = translate::proxy_clusters(&model, proxy);
        let clusters = if extra.is_empty() {
            base.clone()
        } else {
            let mut all = (**base).clone();
            all.extend(extra.iter().map(|c| (c.name.clone(), Arc::new(Resource::cluster(c)))));
            Arc::new(all)
        };
        (Arc::new(listeners), clusters)
    }
}

/// The empty set, shared: a view without virtual hosts never looks changed.
fn no_resources() -> Arc<ResourceSet> {
    static EMPTY: std::sync::LazyLock<Arc<ResourceSet>> = std::sync::LazyLock::new(Default::default);
    EMPTY.clone()
}

/// The clusters as a proxyless gRPC client takes them ([`translate::for_grpc`]: no `LEAST_REQUEST`, which gRPC
/// refuses); the others are the shared resources themselves. Built once per snapshot whose clusters changed.
fn grpc_clusters(base: &ResourceSet) -> ResourceSet {
    use prost::Message;
    let mut out = base.clone();
    for (name, r) in base.iter() {
        let Ok(cluster) = envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(r.body.clone()) else {
            continue;
        };
        if let Some(grpc) = translate::for_grpc(&cluster) {
            out.insert(name.clone(), Arc::new(Resource::cluster(&grpc)));
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Encodes resources into a new set.
fn encode(items: impl Iterator<Item = Resource>, previous: Option<&ResourceSet>) -> ResourceSet {
    items
        .map(|r| {
            let shared = previous.and_then(|p| p.get(&r.name)).filter(|p| p.version == r.version);
            (r.name.clone(), shared.cloned().unwrap_or_else(|| Arc::new(r)))
        })
        .collect()
}

/// Encodes resources as an edit of the previous set: the previous `Arc` itself when nothing changed (streams are
/// not woken), else a set sharing structure with it, so every stream's diff against what it was sent costs
/// O(change) instead of comparing every resource. One O(set) diff here, once per snapshot.
fn encode_onto(items: impl Iterator<Item = Resource>, previous: Option<&Arc<ResourceSet>>) -> Arc<ResourceSet> {
    let fresh = encode(items, previous.map(|p| &**p));
    let Some(prev) = previous else { return Arc::new(fresh) };
    let mut set = (**prev).clone();
    let mut changed = false;
    for d in prev.diff(&fresh) {
        changed = true;
        match d {
            DiffItem::Add(n, r) | DiffItem::Update { new: (n, r), .. } => set.insert(n.clone(), r.clone()),
            DiffItem::Remove(n, _) => set.remove(n),
        };
    }
    if changed { Arc::new(set) } else { prev.clone() }
}

/// One Service's outbound clusters, encoded.
fn clusters_of(model: &Model, key: &ObjectKey) -> Vec<Resource> {
    translate::service_clusters(model, key, false).iter().map(Resource::cluster).collect()
}

/// One Service's outbound clusters with workload mTLS, encoded.
fn mesh_clusters_of(model: &Model, key: &ObjectKey) -> Vec<Resource> {
    translate::service_clusters(model, key, true).iter().map(Resource::cluster).collect()
}

/// One Service's load assignments, encoded.
fn assignments_of(model: &Model, key: &ObjectKey) -> Vec<Resource> {
    translate::service_load_assignments(model, key).iter().map(Resource::load_assignment).collect()
}

/// `of` for every Service, translated and encoded on every core: each Service's messages become bytes in the
/// thread that made them, so the whole mesh's large messages never sit in one vector (growing and sorting one of
/// 30,000 clusters was a fifth of a 10,000-Service build).
fn every_service(
    model: &Model,
    of: &(dyn Fn(&Model, &ObjectKey) -> Vec<Resource> + Sync),
) -> impl Iterator<Item = Resource> {
    translate::per_service(model, |key| of(model, key)).into_iter()
}

/// The previous set with the `touched` Services' resources derived again: what `of` gave for the old model is
/// removed, what it gives for the new one inserted (kept as the previous `Arc` where the bytes are equal).
fn patch_services(
    previous: &Arc<ResourceSet>,
    old: &Model,
    new: &Model,
    touched: &std::collections::BTreeSet<ObjectKey>,
    of: &dyn Fn(&Model, &ObjectKey) -> Vec<Resource>,
) -> Arc<ResourceSet> {
    let gone = touched.iter().flat_map(|k| of(old, k)).map(|r| r.name);
    let fresh: Vec<Resource> = touched.iter().flat_map(|k| of(new, k)).collect();
    patch(previous, gone, fresh.into_iter())
}

/// An edit of a shared set: `gone` names removed, `fresh` resources inserted (the previous `Arc` kept where the
/// bytes are equal). The previous set itself when nothing changed, so streams are not woken; else a set sharing
/// structure with it (diffs against it cost O(change)).
fn patch(
    previous: &Arc<ResourceSet>,
    gone: impl Iterator<Item = String>,
    fresh: impl Iterator<Item = Resource>,
) -> Arc<ResourceSet> {
    let mut set = (**previous).clone();
    for name in gone {
        set.remove(&name);
    }
    for r in fresh {
        let same = previous.get(&r.name).filter(|p| p.version == r.version).cloned();
        set.insert(r.name.clone(), same.unwrap_or_else(|| Arc::new(r)));
    }
    if set.diff(previous).next().is_none() { previous.clone() } else { Arc::new(set) }
}

/// Re-derives the load assignments of the services whose endpoints changed; keeps every other one as it was.
fn endpoints_fast_path(prev: &ResourceSet, old: &Model, new: &Model, changed: &[ObjectKey]) -> ResourceSet {
    let mut set = prev.clone();
    for svc in changed {
        let stale: Vec<String> =
            translate::service_load_assignments(old, svc).into_iter().map(|c| c.cluster_name).collect();
        for name in stale {
            set.remove(&name);
        }
        for r in translate::service_load_assignments(new, svc).iter().map(Resource::load_assignment) {
            let keep = prev.get(&r.name).filter(|p| p.version == r.version).cloned();
            set.insert(r.name.clone(), keep.unwrap_or_else(|| Arc::new(r)));
        }
    }
    set
}

/// The versions a service's endpoints carry (a subset a VirtualService names gets its cluster only while a version
/// carries it: see `translate::cluster::subset_versions`).
fn versions_of(model: &Model, svc: &ObjectKey) -> BTreeMap<String, bool> {
    let label = model.policy_for(svc).map(|p| p.spec.version_label()).unwrap_or(DEFAULT_VERSION_LABEL);
    model.endpoints_of(svc).iter().filter_map(|e| e.label(label)).map(|v| (v.to_string(), true)).collect()
}

/// The service accounts of a service's endpoints (the mesh clusters' SANs).
fn accounts_of(model: &Model, svc: &ObjectKey) -> BTreeMap<String, bool> {
    model.endpoints_of(svc).iter().filter_map(|e| e.service_account.clone()).map(|a| (a, true)).collect()
}

/// Whether each version has a ready endpoint (a release's routes give no weight to a version without one).
fn readiness_of(model: &Model, svc: &ObjectKey) -> BTreeMap<String, bool> {
    let label = model.policy_for(svc).map(|p| p.spec.version_label()).unwrap_or(DEFAULT_VERSION_LABEL);
    let mut out = BTreeMap::new();
    for e in model.endpoints_of(svc) {
        let ready = out.entry(e.label(label).unwrap_or_default().to_string()).or_insert(false);
        *ready |= e.ready;
    }
    out
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
