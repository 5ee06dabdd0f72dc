//! The watch streams and the index task: one generic helper spawns a watch for any kind.

use super::convert::{self, Invalid, Item, key_of};
use super::gateway_status::StatusObjects;
use super::index::{Change, Index, Kind, Observed, Owners};
use super::mesh::{self, API_GATEWAY, DESTINATION_RULE, GATEWAY_CLASS, HTTP_ROUTE, ISTIO_GATEWAY, PEER_AUTHENTICATION};
use super::mesh::{REFERENCE_GRANT, SIDECAR, VIRTUAL_SERVICE};
use super::{
    API_GATEWAYS, Access, DESTINATION_RULES, ENDPOINT_SLICES, GATEWAY_CLASSES, HTTP_ROUTES, ISTIO_GATEWAYS,
    PEER_AUTHENTICATIONS, PODS, REFERENCE_GRANTS, RELEASE_POLICIES, SERVICES, SIDECARS, SOURCE, TLS_SECRETS,
};
use super::{VIRTUAL_SERVICES, WatchOptions};
use crate::release::StoredRecords;
use crate::store::Store;
use crate::telemetry::names;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The conversion of a kind watched as dynamic objects.
type DynamicConvert = fn(&DynamicObject) -> Result<Item, Invalid>;

/// The first retry after a watch error; doubled per failure up to [`BACKOFF_MAX`], each wait lengthened by a
/// random share of itself (jitter: up to twice the nominal wait) so replicas do not retry in step.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between retries. client-go waits up to 30 s; a control plane that misses a release policy
/// edit for 30 s after an API server restart is worse than one list call per kind every 5 s while it is down.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A watch that has run this long without an error starts again from [`BACKOFF_MIN`].
const BACKOFF_RESET: Duration = Duration::from_secs(120);

/// The retry policy of every watch: exponential from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], with jitter.
fn backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(builder), BACKOFF_RESET)
}

/// How many converted events may wait for the index task before watchers wait.
const QUEUE: usize = 1024;

/// [`start_with`] with the default options (the mesh routing objects watched too).
pub fn start(client: Client, namespaces: &[String], store: Store, stop: watch::Receiver<bool>) -> Watching {
    start_with(client, namespaces, WatchOptions::default(), store, stop)
}

/// Registers the `kube` source on `store` and starts watching: every kind in every namespace of `namespaces`
/// (all namespaces when empty; GatewayClasses, cluster-scoped, always cluster-wide). Runs until `stop` turns true.
pub fn start_with(
    client: Client,
    namespaces: &[String],
    options: WatchOptions,
    store: Store,
    stop: watch::Receiver<bool>,
) -> Watching {
    store.register_source(SOURCE);
    let scopes: Vec<Option<String>> = match namespaces {
        [] => vec![None],
        some => some.iter().cloned().map(Some).collect(),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut w = Watches { client: &client, index: Index::default(), tx, stop: stop.clone() };
    for scope in &scopes {
        w.core(scope.as_deref());
        if options.mesh_objects {
            w.mesh(scope.as_deref());
        }
    }
    if options.mesh_objects {
        debug_assert_eq!((GATEWAY_CLASS.0, GATEWAY_CLASS.3), (GATEWAY_CLASSES.group, GATEWAY_CLASSES.resource));
        w.dynamic(None, GATEWAY_CLASS, Kind::GatewayClass, mesh::gateway_class);
    }
    let (statused_tx, statused) = watch::channel(Arc::new(StatusObjects::default()));
    let (observed_tx, observed) = watch::channel(Observed::new());
    let (stored_tx, stored) = watch::channel(StoredRecords::new());
    let (owners_tx, owners) = watch::channel(Owners::new());
    let outputs = Outputs { observed: observed_tx, stored: stored_tx, statused: statused_tx, owners: owners_tx };
    let task = tokio::spawn(run_index(w.index, rx, store, outputs, stop));
    Watching { task, observed, stored, statused, owners }
}

/// What the watches of one [`start_with`] share: each adds its shard to the index and sends to its task.
struct Watches<'a> {
    client: &'a Client,
    index: Index,
    tx: mpsc::Sender<(usize, Change)>,
    stop: watch::Receiver<bool>,
}

impl Watches<'_> {
    /// Services, Pods, EndpointSlices and ReleasePolicies of one namespace (or all).
    fn core(&mut self, ns: Option<&str>) {
        let config = watcher::Config::default();
        let shard = self.index.add_shard(Kind::Service);
        let services = watcher(api::<Service>(self.client, ns, &SERVICES), config.clone());
        spawn_watch(services, shard, Kind::Service, convert::service, self.tx.clone(), self.stop.clone());
        let shard = self.index.add_shard(Kind::Pod);
        // Labels and the service account (`spec.serviceAccountName`, the pod's mTLS identity): whole Pods.
        let pods = watcher(api::<Pod>(self.client, ns, &PODS), config.clone());
        spawn_watch(pods, shard, Kind::Pod, convert::pod, self.tx.clone(), self.stop.clone());
        let shard = self.index.add_shard(Kind::EndpointSlice);
        let slices = watcher(api::<EndpointSlice>(self.client, ns, &ENDPOINT_SLICES), config);
        spawn_watch(slices, shard, Kind::EndpointSlice, convert::endpoint_slice, self.tx.clone(), self.stop.clone());
        let ar = convert::policy_resource();
        debug_assert_eq!((ar.group.as_str(), ar.plural.as_str()), (RELEASE_POLICIES.group, RELEASE_POLICIES.resource));
        let gvkp = (RELEASE_POLICIES.group, ar.version.as_str(), ar.kind.as_str(), RELEASE_POLICIES.resource);
        self.dynamic(ns, gvkp, Kind::ReleasePolicy, convert::release_policy);
    }

    /// The Istio and Gateway API objects of one namespace (or all), and its `kubernetes.io/tls` Secrets.
    fn mesh(&mut self, ns: Option<&str>) {
        let kinds: [(Kind, _, &Access, DynamicConvert); 8] = [
            (Kind::VirtualService, VIRTUAL_SERVICE, &VIRTUAL_SERVICES, mesh::virtual_service),
            (Kind::DestinationRule, DESTINATION_RULE, &DESTINATION_RULES, mesh::destination_rule),
            (Kind::HttpRoute, HTTP_ROUTE, &HTTP_ROUTES, mesh::http_route),
            (Kind::PeerAuthentication, PEER_AUTHENTICATION, &PEER_AUTHENTICATIONS, mesh::peer_authentication),
            (Kind::Gateway, ISTIO_GATEWAY, &ISTIO_GATEWAYS, mesh::istio_gateway),
            (Kind::ApiGateway, API_GATEWAY, &API_GATEWAYS, mesh::api_gateway),
            (Kind::ReferenceGrant, REFERENCE_GRANT, &REFERENCE_GRANTS, mesh::reference_grant),
            (Kind::Sidecar, SIDECAR, &SIDECARS, mesh::sidecar),
        ];
        for (kind, gvkp, access, convert) in kinds {
            debug_assert_eq!((gvkp.0, gvkp.3), (access.group, access.resource));
            self.dynamic(ns, gvkp, kind, convert);
        }
        // Gateway certificates: the API server sends `kubernetes.io/tls` Secrets only, never another type.
        let shard = self.index.add_shard(Kind::Secret);
        let tls_only = watcher::Config::default().fields(&format!("type={}", convert::TLS_SECRET_TYPE));
        let secrets = watcher(api::<Secret>(self.client, ns, &TLS_SECRETS), tls_only);
        spawn_watch(secrets, shard, Kind::Secret, convert::tls_secret, self.tx.clone(), self.stop.clone());
    }

    /// A kind watched as dynamic objects, `(group, version, kind, plural)`, in `ns` (all namespaces, or a
    /// cluster-scoped kind, when `None`).
    fn dynamic(&mut self, ns: Option<&str>, gvkp: (&str, &str, &str, &str), kind: Kind, convert: DynamicConvert) {
        let ar = mesh::resource(gvkp);
        let api = match ns {
            Some(ns) => Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(self.client.clone(), &ar),
        };
        let shard = self.index.add_shard(kind);
        let stream = watcher(api, watcher::Config::default());
        spawn_watch(stream, shard, kind, convert, self.tx.clone(), self.stop.clone());
    }
}

/// The running watch: the index task, and the ReleasePolicies it holds with their generations (updated with
/// every model it publishes), for the status writer; the Gateway API objects it holds, for their status writer.
pub struct Watching {
    pub task: JoinHandle<()>,
    pub observed: watch::Receiver<Observed>,
    /// The release records the ReleasePolicies' statuses store, for the release controller (followers adopt them).
    pub stored: watch::Receiver<StoredRecords>,
    /// The cluster's HTTPRoutes, Gateways and GatewayClasses (generation, status) and the Services' gateway
    /// fronts, as of the last published model, for the Gateway API status writer.
    pub statused: watch::Receiver<Arc<StatusObjects>>,
    /// The uid of every ReleasePolicy, for the owner references of the Deployments Sluice creates.
    pub owners: watch::Receiver<Owners>,
}

/// An `Api` for a typed kind, in one namespace or all; `access` is the RBAC entry this watch relies on.
fn api<K>(client: &Client, ns: Option<&str>, access: &Access) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    debug_assert_eq!((K::group(&()).as_ref(), K::plural(&()).as_ref()), (access.group, access.resource));
    debug_assert!(access.verbs.contains(&"list") && access.verbs.contains(&"watch"));
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Spawns one watch stream: list, then watch, relisting when the API server says so; errors back off
/// (kube's default: exponential from 800 ms to 30 s) and are logged and counted. Each event is converted here
/// and sent to the index task as a [`Change`] of `shard`. For a mesh kind, a list answered `404` (its CRD is not
/// installed) is logged once and sent as [`Change::Absent`], so readiness does not wait for it; the watch keeps
/// retrying and picks the kind up once the CRD appears.
fn spawn_watch<K, S>(
    stream: S,
    shard: usize,
    kind: Kind,
    convert: fn(&K) -> Result<Item, Invalid>,
    tx: mpsc::Sender<(usize, Change)>,
    mut stop: watch::Receiver<bool>,
) where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.backoff(backoff()));
        let optional = kind.is_optional();
        let mut absent = false;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = stop.wait_for(|s| *s) => return,
            };
            let change = match event {
                None => return,
                Some(Err(watcher::Error::InitialListFailed(kube::Error::Api(status))))
                    if optional && status.code == 404 =>
                {
                    if absent {
                        continue;
                    }
                    absent = true;
                    tracing::warn!(
                        kind = kind.name(),
                        "the API server does not serve this kind (CRD not installed?): serving without it, retrying"
                    );
                    Change::Absent
                }
                Some(Err(error)) => {
                    tracing::warn!(kind = kind.name(), %error, "watch failed; retrying with backoff");
                    metrics::counter!(names::KUBE_WATCH_ERRORS, "kind" => kind.name()).increment(1);
                    continue;
                }
                Some(Ok(watcher::Event::Apply(o))) => Change::Apply(key_of(&o), convert(&o)),
                Some(Ok(watcher::Event::Delete(o))) => Change::Delete(key_of(&o)),
                Some(Ok(watcher::Event::Init)) => Change::Init,
                Some(Ok(watcher::Event::InitApply(o))) => Change::InitApply(key_of(&o), convert(&o)),
                Some(Ok(watcher::Event::InitDone)) => {
                    absent = false;
                    tracing::debug!(kind = kind.name(), "listed");
                    Change::InitDone
                }
            };
            if tx.send((shard, change)).await.is_err() {
                return;
            }
        }
    });
}

/// What the index task publishes besides the model.
struct Outputs {
    observed: watch::Sender<Observed>,
    stored: watch::Sender<StoredRecords>,
    statused: watch::Sender<Arc<StatusObjects>>,
    owners: watch::Sender<Owners>,
}

/// Applies changes in batches (whatever is queued), and publishes the model once every shard has listed (and what
/// the status writers need of it, after the model: a writer never sees a generation before its spec).
async fn run_index(
    mut index: Index,
    mut rx: mpsc::Receiver<(usize, Change)>,
    store: Store,
    out: Outputs,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::new();
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, QUEUE) => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        if n == 0 {
            return;
        }
        let mut changed = false;
        for (shard, change) in batch.drain(..) {
            let applied = index.apply(shard, change);
            changed |= applied.changed;
            if let Some(r) = applied.rejected {
                tracing::warn!(kind = r.kind.name(), object = %r.key, error = %r.error, "skipping invalid object");
                metrics::counter!(names::KUBE_INVALID_OBJECTS, "kind" => r.kind.name()).increment(1);
            }
        }
        if changed && index.is_ready() {
            let model = index.model();
            // Stored records before the model: the release controller that sees a new policy finds its status.
            let stored = index.stored();
            out.stored.send_if_modified(|old| std::mem::replace(old, stored) != *old);
            let owners = index.owners();
            out.owners.send_if_modified(|old| std::mem::replace(old, owners) != *old);
            let observed = index.observed();
            out.observed.send_if_modified(|old| std::mem::replace(old, observed) != *old);
            store.set_part(SOURCE, model);
            let statused = Arc::new(StatusObjects::of(index.items()));
            out.statused.send_if_modified(|old| std::mem::replace(old, statused) != *old);
        }
        // Let a burst of events queue up before the next model build.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
