//! Kubernetes mode: watch the cluster and feed the store's `kube` part.
//!
//! ```text
//!  Services ──────────┐
//!  Pods ──────────────┤ kube_runtime::watcher per kind and namespace, with backoff
//!  EndpointSlices ────┤   │ Event → Change (converted here: an invalid object becomes a logged, counted skip)
//!  ReleasePolicies ───┤   ▼
//!  VirtualServices, DestinationRules, Sidecars, PeerAuthentications, HTTPRoutes, Gateways (Istio, Gateway API),
//!  GatewayClasses, ReferenceGrants (dynamic), kubernetes.io/tls Secrets (optional: --kube-mesh-objects) ─┘
//!                     index task: Index (apply / delete / relist) ─▶ once every shard listed:
//!                                                                   Store::set_part("kube", model)
//! ```
//! - `crd`: the ReleasePolicy CustomResourceDefinition (`sluice crd`).
//! - `convert`: Kubernetes objects → index items, errors naming the field.
//! - `index`: the pure index and the model it builds (endpoints joined to pods by `targetRef`).
//! - `mesh`: VirtualService, DestinationRule, Sidecar, PeerAuthentication, HTTPRoute, both Gateways, GatewayClass,
//!   ReferenceGrant → the model's mesh types (unsupported fields reported).
//! - `watch`: the one generic watch helper and the index task.
//! - `gateway_status` (pure) and `api_status` (the writer): GatewayClass, Gateway (conditions, listeners,
//!   addresses from the gateway's Service) and HTTPRoute (`status.parents`) status from the merged model;
//!   `conditions`: `observedGeneration`, `lastTransitionTime`, "already says so".
//! - `lease`: leader election on a coordination.k8s.io/v1 Lease (only the leader writes status).
//! - `replica`: each replica's report (its proxies per release, its traffic totals, its API address) in a
//!   ConfigMap, and the others' reports followed: the gate, status and traffic count every replica's proxies.
//! - `status`: the ReleasePolicy status writer (the release controller's view → the `status` subresource).
//! - `progress`: the release record in that status (step start, weight, analysis), read back by every replica:
//!   followers serve it, a new leader goes on from it.
//! - `deploy`, `rollout`: the Deployment task (`spec.deploy`: the canary's Deployment copied from the stable one;
//!   `spec.finalize.loser`: the loser's scaled to zero or deleted once no proxy routes to it) → `status.rollout`.
//! - `console`: the Release API's cluster: a PUT in a watched namespace creates the ReleasePolicy there; the
//!   console's Deployments and rollout.
//!
//! The store does not count the source as loaded until every kind has finished its first list, so `/readyz` and
//! the first xDS answer wait for it (never an empty or partial first push). [`ACCESS`] lists every API call the
//! code makes; the ClusterRole in `deploy/` is checked against it.

mod api_status;
mod conditions;
pub mod console;
pub mod convert;
pub mod crd;
mod deploy;
pub mod gateway_status;
pub mod index;
mod lease;
pub mod mesh;
pub mod progress;
pub mod replica;
pub mod rollout;
mod status;
mod watch;
pub mod webhook;

pub use api_status::write_api_status;
pub use deploy::{TICK as DEPLOY_TICK, manage_deployments};
pub use lease::{LeaseConfig, lead};
pub use status::write_status;
pub use watch::{BACKOFF_MAX, Watching, start, start_with};

/// What to watch beyond the core kinds.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// VirtualServices, DestinationRules, Sidecars, PeerAuthentications, HTTPRoutes, Gateways (Istio and Gateway API),
    /// GatewayClasses, ReferenceGrants and `kubernetes.io/tls` Secrets (`--kube-mesh-objects`, default on). A kind
    /// whose CRD is not installed is logged and served as empty, without holding readiness back.
    pub mesh_objects: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { mesh_objects: true }
    }
}

/// The store part Kubernetes objects fill (merge order: `api` < `file` < `kube` < `local`).
pub const SOURCE: &str = crate::release::cluster::SOURCE;

/// One kind of API call Sluice makes: the resource (with subresource, as RBAC names it) and the verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

pub const SERVICES: Access = Access { group: "", resource: "services", verbs: &["list", "watch"] };
pub const PODS: Access = Access { group: "", resource: "pods", verbs: &["list", "watch"] };
pub const ENDPOINT_SLICES: Access =
    Access { group: "discovery.k8s.io", resource: "endpointslices", verbs: &["list", "watch"] };
pub const RELEASE_POLICIES: Access =
    Access { group: "sluice.dev", resource: "releasepolicies", verbs: &["list", "watch"] };
/// The Release API in Kubernetes mode (`console`): a PUT creates the ReleasePolicy, or reads it and merge-patches
/// its spec; the console reads a task's `status.rollout`.
pub const RELEASE_POLICY_WRITES: Access =
    Access { group: "sluice.dev", resource: "releasepolicies", verbs: &["get", "create", "patch"] };
/// The status writer's merge PATCH of `…/releasepolicies/NAME/status`.
pub const RELEASE_POLICY_STATUS: Access =
    Access { group: "sluice.dev", resource: "releasepolicies/status", verbs: &["patch"] };
/// Leader election: read, create and renew (or take over) the Lease.
pub const LEASES: Access =
    Access { group: "coordination.k8s.io", resource: "leases", verbs: &["get", "create", "patch"] };

pub const VIRTUAL_SERVICES: Access =
    Access { group: "networking.istio.io", resource: "virtualservices", verbs: &["list", "watch"] };
pub const DESTINATION_RULES: Access =
    Access { group: "networking.istio.io", resource: "destinationrules", verbs: &["list", "watch"] };
/// Istio Sidecars: which services each sidecar is given, and `outboundTrafficPolicy`.
pub const SIDECARS: Access = Access { group: "networking.istio.io", resource: "sidecars", verbs: &["list", "watch"] };
/// Istio PeerAuthentications: what sidecars accept inbound (mTLS modes).
pub const PEER_AUTHENTICATIONS: Access =
    Access { group: "security.istio.io", resource: "peerauthentications", verbs: &["list", "watch"] };
pub const HTTP_ROUTES: Access =
    Access { group: "gateway.networking.k8s.io", resource: "httproutes", verbs: &["list", "watch"] };
/// HTTPRoute `status.parents`, written by merge patch.
pub const HTTP_ROUTE_STATUS: Access =
    Access { group: "gateway.networking.k8s.io", resource: "httproutes/status", verbs: &["patch"] };
/// Istio Gateways: the servers of ingress gateway proxies.
pub const ISTIO_GATEWAYS: Access =
    Access { group: "networking.istio.io", resource: "gateways", verbs: &["list", "watch"] };
/// Gateway API Gateways, and their status (merge patch: conditions, listeners, addresses).
pub const API_GATEWAYS: Access =
    Access { group: "gateway.networking.k8s.io", resource: "gateways", verbs: &["list", "watch"] };
pub const API_GATEWAY_STATUS: Access =
    Access { group: "gateway.networking.k8s.io", resource: "gateways/status", verbs: &["patch"] };
/// GatewayClasses (cluster-scoped), and the status of those naming Sluice's controller.
pub const GATEWAY_CLASSES: Access =
    Access { group: "gateway.networking.k8s.io", resource: "gatewayclasses", verbs: &["list", "watch"] };
pub const GATEWAY_CLASS_STATUS: Access =
    Access { group: "gateway.networking.k8s.io", resource: "gatewayclasses/status", verbs: &["patch"] };
pub const REFERENCE_GRANTS: Access =
    Access { group: "gateway.networking.k8s.io", resource: "referencegrants", verbs: &["list", "watch"] };
/// Gateway certificates: Secrets listed and watched with `fieldSelector=type=kubernetes.io/tls`, so the API
/// server never sends Sluice another type. (RBAC cannot restrict a list by field, so the ClusterRole grants
/// `list`/`watch` on every Secret: the selector is Sluice's own restraint, as istiod's.)
pub const TLS_SECRETS: Access = Access { group: "", resource: "secrets", verbs: &["list", "watch"] };
/// The Deployment task (`deploy`): `list` to find the stable and canary Deployments of a policy's namespace,
/// `create` the canary's copy (`spec.deploy`), `patch` `spec.replicas: 0` and `delete` for the loser
/// (`spec.finalize.loser`). No `watch` (it reads once a second while a policy needs it), no `update`, no `scale`.
pub const DEPLOYMENTS: Access =
    Access { group: "apps", resource: "deployments", verbs: &["list", "create", "patch", "delete"] };

/// The injection webhook's certificate (`webhook`): `get` the Secret every replica shares, `create` it (the first
/// replica), `patch` a renewed serving certificate into it. Granted in Sluice's own namespace only (a Role).
pub const SECRETS: Access = Access { group: "", resource: "secrets", verbs: &["get", "create", "patch"] };
/// The lease holder keeps the MutatingWebhookConfiguration's `caBundle` set: `get` it, merge `patch` it.
pub const MUTATING_WEBHOOKS: Access = Access {
    group: "admissionregistration.k8s.io",
    resource: "mutatingwebhookconfigurations",
    verbs: &["get", "patch"],
};

/// Replicas acting as one (`replica`): each replica writes its own report (a ConfigMap in the Lease's namespace:
/// `create` it, merge `patch` it every second at most, `delete` it at shutdown) and `list`/`watch`es the others'
/// (by label); the Lease holder also `delete`s the report of a replica gone for good. Granted in Sluice's own
/// namespace only (the Role).
pub const REPLICA_REPORTS: Access =
    Access { group: "", resource: "configmaps", verbs: &["list", "watch", "create", "patch", "delete"] };

/// The workload CA (`serve --kube --ca`, `ca::kube`): each CreateCertificate's bearer token is reviewed by the API
/// server (`create` a TokenReview: cluster-scoped, no object is stored). The CA's root Secret uses [`SECRETS`].
pub const TOKEN_REVIEWS: Access =
    Access { group: "authentication.k8s.io", resource: "tokenreviews", verbs: &["create"] };

/// Every API call Sluice makes; the ClusterRole and Role in `deploy/` grant exactly these.
pub const ACCESS: &[Access] = &[
    SERVICES,
    PODS,
    ENDPOINT_SLICES,
    RELEASE_POLICIES,
    RELEASE_POLICY_WRITES,
    RELEASE_POLICY_STATUS,
    LEASES,
    VIRTUAL_SERVICES,
    DESTINATION_RULES,
    SIDECARS,
    PEER_AUTHENTICATIONS,
    HTTP_ROUTES,
    HTTP_ROUTE_STATUS,
    ISTIO_GATEWAYS,
    API_GATEWAYS,
    API_GATEWAY_STATUS,
    GATEWAY_CLASSES,
    GATEWAY_CLASS_STATUS,
    REFERENCE_GRANTS,
    TLS_SECRETS,
    DEPLOYMENTS,
    SECRETS,
    MUTATING_WEBHOOKS,
    TOKEN_REVIEWS,
    REPLICA_REPORTS,
];
