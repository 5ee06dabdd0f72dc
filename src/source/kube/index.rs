//! The one index of everything the watchers see, and the model built from it. Pure and synchronous.
//!
//! ```text
//!  watch stream (kind, namespace scope) ─ Change ─▶ Shard: items, + a relist buffer between Init and InitDone
//!                                                     │ all shards listed once?
//!                                                     ▼
//!                       Index::model(): services, endpoints (slices ⨝ pods by targetRef), policies,
//!                                       virtual services, destination rules, HTTP routes, peer authentications,
//!                                       gateways (Istio and Gateway API), classes, grants, TLS secrets
//! ```
//! Every watch stream (one per kind and watched namespace) owns a shard. A relist (`Init` … `InitApply` …
//! `InitDone`) fills a buffer that replaces the shard's items at `InitDone`, so objects missing from the new list
//! are gone, and no half-listed state is ever built. `Absent` (a mesh kind whose CRD the API server does not
//! serve) empties the shard and counts it as listed. An invalid object is reported once per distinct error and
//! skipped (its last valid version, if any, stays); its delete still applies.

use super::convert::{Invalid, Item, Slice};
use crate::model::{Endpoint, Model, ObjectKey, ReleasePolicySpec};
use crate::release::StoredRecords;
use std::collections::BTreeMap;

/// The kinds Sluice watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Pod,
    EndpointSlice,
    ReleasePolicy,
    VirtualService,
    DestinationRule,
    HttpRoute,
    PeerAuthentication,
    /// Istio's `Gateway`.
    Gateway,
    GatewayClass,
    /// Gateway API's `Gateway`.
    ApiGateway,
    ReferenceGrant,
    /// `kubernetes.io/tls` Secrets only.
    Secret,
    Sidecar,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Service,
        Kind::Pod,
        Kind::EndpointSlice,
        Kind::ReleasePolicy,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::HttpRoute,
        Kind::PeerAuthentication,
        Kind::Gateway,
        Kind::GatewayClass,
        Kind::ApiGateway,
        Kind::ReferenceGrant,
        Kind::Secret,
        Kind::Sidecar,
    ];

    /// A kind whose CRD may be missing: a list answered `404` serves it as empty ([`Change::Absent`]).
    pub fn is_optional(self) -> bool {
        !matches!(self, Kind::Service | Kind::Pod | Kind::EndpointSlice | Kind::ReleasePolicy | Kind::Secret)
    }

    /// The kind as a metric label and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Pod => "Pod",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::ReleasePolicy => "ReleasePolicy",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::HttpRoute => "HTTPRoute",
            Kind::PeerAuthentication => "PeerAuthentication",
            // Two kinds are named Gateway: the group tells them apart (as `kubectl get gateway.GROUP` does).
            Kind::Gateway => "Gateway.networking.istio.io",
            Kind::GatewayClass => "GatewayClass",
            Kind::ApiGateway => "Gateway.gateway.networking.k8s.io",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Secret => "Secret",
            Kind::Sidecar => "Sidecar",
        }
    }
}

/// One event of a watch stream, its object already converted.
#[derive(Clone, Debug)]
pub enum Change {
    Apply(ObjectKey, Result<Item, Invalid>),
    Delete(ObjectKey),
    /// A (re)list starts.
    Init,
    InitApply(ObjectKey, Result<Item, Invalid>),
    /// The (re)list is complete: its objects replace the shard's.
    InitDone,
    /// The kind is not served by the API server (its CRD is not installed): the shard counts as listed, empty.
    Absent,
}

/// An object that was skipped, to be logged and counted by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub kind: Kind,
    pub key: ObjectKey,
    pub error: Invalid,
}

#[derive(Debug)]
struct Shard {
    kind: Kind,
    items: BTreeMap<ObjectKey, Item>,
    relist: Option<BTreeMap<ObjectKey, Item>>,
    /// Invalid objects seen by the relist under way: their errors stay known across it.
    relist_invalid: Vec<ObjectKey>,
    listed: bool,
    /// The last error per invalid object, so a re-sent object is reported once.
    invalid: BTreeMap<ObjectKey, Invalid>,
}

/// Every shard; [`Index::model`] merges them.
#[derive(Debug, Default)]
pub struct Index {
    shards: Vec<Shard>,
}

impl Index {
    /// Adds a shard for one watch stream of `kind`; returns its id.
    pub fn add_shard(&mut self, kind: Kind) -> usize {
        let shard = Shard {
            kind,
            items: BTreeMap::new(),
            relist: None,
            relist_invalid: Vec::new(),
            listed: false,
            invalid: BTreeMap::new(),
        };
        self.shards.push(shard);
        self.shards.len() - 1
    }

    /// True once every shard has finished its first list.
    pub fn is_ready(&self) -> bool {
        self.shards.iter().all(|s| s.listed)
    }

    /// Applies one change; returns the object it skipped, if it is newly invalid. Returns whether the index
    /// changed in `changed`.
    pub fn apply(&mut self, shard: usize, change: Change) -> Applied {
        let s = &mut self.shards[shard];
        let mut out = Applied::default();
        match change {
            Change::Init => {
                s.relist = Some(BTreeMap::new());
                s.relist_invalid.clear();
            }
            Change::InitApply(key, item) => {
                let previous = s.items.get(&key).cloned();
                let kind = s.kind;
                if item.is_err() {
                    s.relist_invalid.push(key.clone());
                }
                let accepted = accept(kind, &mut s.invalid, &key, item, previous, &mut out);
                if let Some(item) = accepted {
                    s.relist.get_or_insert_with(BTreeMap::new).insert(key, item);
                }
            }
            Change::InitDone => {
                let fresh = s.relist.take().unwrap_or_default();
                let seen = std::mem::take(&mut s.relist_invalid);
                s.invalid.retain(|k, _| seen.contains(k));
                out.changed = fresh != s.items || !s.listed;
                s.items = fresh;
                s.listed = true;
            }
            Change::Absent => {
                s.relist = None;
                s.invalid.clear();
                out.changed = !s.items.is_empty() || !s.listed;
                s.items.clear();
                s.listed = true;
            }
            Change::Apply(key, item) => {
                let previous = s.items.get(&key).cloned();
                let kind = s.kind;
                if let Some(item) = accept(kind, &mut s.invalid, &key, item, previous, &mut out) {
                    out.changed = s.items.insert(key, item.clone()).as_ref() != Some(&item);
                }
            }
            Change::Delete(key) => {
                s.invalid.remove(&key);
                out.changed = s.items.remove(&key).is_some();
            }
        }
        out
    }

    /// Every indexed object (the valid ones, each at its last valid version).
    pub fn items(&self) -> impl Iterator<Item = (&ObjectKey, &Item)> {
        self.shards.iter().flat_map(|s| s.items.iter())
    }

    /// The model of everything indexed: each Service with the endpoints of its EndpointSlices (labels from the
    /// Pod each endpoint's `targetRef` names), every valid ReleasePolicy, VirtualService, DestinationRule,
    /// HTTPRoute, PeerAuthentication, Gateway (both APIs), GatewayClass, ReferenceGrant, Sidecar and TLS Secret.
    pub fn model(&self) -> Model {
        let mut model = Model::default();
        let mut pods = BTreeMap::new();
        let mut slices: BTreeMap<ObjectKey, Vec<&Slice>> = BTreeMap::new();
        for (key, item) in self.items() {
            match item {
                Item::Service(svc, _) => {
                    model.services.insert(key.clone(), svc.clone());
                }
                Item::Pod(p) => {
                    pods.insert(key.clone(), p);
                }
                Item::Slice(slice) => {
                    slices.entry(ObjectKey::new(&key.namespace, &slice.service)).or_default().push(slice);
                }
                Item::Policy(p, ..) => {
                    model.policies.insert(key.clone(), (**p).clone());
                }
                Item::VirtualService(vs) => {
                    model.virtual_services.insert(key.clone(), (**vs).clone());
                }
                Item::DestinationRule(dr) => {
                    model.destination_rules.insert(key.clone(), (**dr).clone());
                }
                Item::HttpRoute(r, _) => {
                    model.http_routes.insert(key.clone(), (**r).clone());
                }
                Item::PeerAuthentication(p) => {
                    model.peer_authentications.insert(key.clone(), (**p).clone());
                }
                Item::Gateway(g) => {
                    model.gateways.insert(key.clone(), (**g).clone());
                }
                Item::GatewayClass(c, _) => {
                    model.gateway_classes.insert(key.clone(), (**c).clone());
                }
                Item::ApiGateway(g, _) => {
                    model.api_gateways.insert(key.clone(), (**g).clone());
                }
                Item::Sidecar(s) => {
                    model.sidecars.insert(key.clone(), (**s).clone());
                }
                Item::ReferenceGrant(g) => {
                    model.reference_grants.insert(key.clone(), (**g).clone());
                }
                Item::Secret(secret) => {
                    model.secrets.insert(key.clone(), (**secret).clone());
                }
            }
        }
        for (key, svc) in &model.services {
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for slice in slices.get(key).into_iter().flatten() {
                for e in &slice.endpoints {
                    let ports: BTreeMap<u16, u16> =
                        svc.ports.iter().filter_map(|p| Some((p.port, *slice.ports.get(&p.name)?))).collect();
                    if ports.is_empty() {
                        continue;
                    }
                    let pod = e.pod.as_ref().and_then(|p| pods.get(&ObjectKey::new(&key.namespace, p)));
                    let mut labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
                    if let Some(zone) = &e.zone {
                        labels.entry(crate::model::ZONE_LABEL.to_string()).or_insert_with(|| zone.clone());
                    }
                    let service_account = pod.and_then(|p| p.service_account.as_ref());
                    endpoints.push(Endpoint {
                        name: e.pod.clone().unwrap_or_else(|| e.address.clone()),
                        address: e.address.clone(),
                        ports,
                        labels,
                        ready: e.ready,
                        terminating: e.terminating,
                        service_account: service_account.cloned(),
                    });
                }
            }
            if !endpoints.is_empty() {
                endpoints.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
                model.endpoints.insert(key.clone(), endpoints);
            }
        }
        model
    }
}

impl Index {
    /// Every valid ReleasePolicy's spec with the `metadata.generation` it was read at, for the status writer.
    pub fn observed(&self) -> Observed {
        let items = self.shards.iter().flat_map(|s| s.items.iter());
        items
            .filter_map(|(key, item)| match item {
                Item::Policy(p, generation, ..) => Some((key.clone(), (p.spec.clone(), *generation))),
                _ => None,
            })
            .collect()
    }

    /// Every ReleasePolicy's record as its status stores it, where the status is for the spec indexed (what the
    /// leader wrote; a follower serves it, a new leader goes on from it).
    pub fn stored(&self) -> StoredRecords {
        let items = self.shards.iter().flat_map(|s| s.items.iter());
        items
            .filter_map(|(key, item)| match item {
                Item::Policy(_, _, Some(record), _) => Some((key.clone(), (**record).clone())),
                _ => None,
            })
            .collect()
    }

    /// Every valid ReleasePolicy's `metadata.uid`, for the owner references of the Deployments Sluice creates.
    pub fn owners(&self) -> Owners {
        let items = self.shards.iter().flat_map(|s| s.items.iter());
        items
            .filter_map(|(key, item)| match item {
                Item::Policy(_, _, _, Some(uid)) => Some((key.clone(), uid.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Per ReleasePolicy: its `metadata.uid`.
pub type Owners = BTreeMap<ObjectKey, String>;

/// Per ReleasePolicy: the spec as indexed and the generation of the object it came from.
pub type Observed = BTreeMap<ObjectKey, (ReleasePolicySpec, Option<i64>)>;

/// What one change did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    pub changed: bool,
    pub rejected: Option<Rejected>,
}

/// A valid item is taken; an invalid one is reported (once per distinct error) and the previous valid version,
/// if any, is kept.
fn accept(
    kind: Kind,
    invalid: &mut BTreeMap<ObjectKey, Invalid>,
    key: &ObjectKey,
    item: Result<Item, Invalid>,
    previous: Option<Item>,
    out: &mut Applied,
) -> Option<Item> {
    match item {
        Ok(item) => {
            invalid.remove(key);
            Some(item)
        }
        Err(error) => {
            if invalid.get(key) != Some(&error) {
                invalid.insert(key.clone(), error.clone());
                out.rejected = Some(Rejected { kind, key: key.clone(), error });
            }
            previous
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
