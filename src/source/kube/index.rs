//! The one index of everything the watchers see, and the model built from it. Pure and synchronous.
//!
//! ```text
//!  watch stream (kind, namespace scope) ─ Change ─▶ Shard: items, + a relist buffer between Init and InitDone
//!                                                     │ all shards listed once?
//!                                                     ▼
//!                       Index::model(): services, endpoints (slices ⨝ pods by targetRef), policies,
//!                                       virtual services, destination rules, HTTP routes
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
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Service,
        Kind::Pod,
        Kind::EndpointSlice,
        Kind::ReleasePolicy,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::HttpRoute,
        Kind::PeerAuthentication,
    ];

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

    /// The model of everything indexed: each Service with the endpoints of its EndpointSlices (labels from the
    /// Pod each endpoint's `targetRef` names), every valid ReleasePolicy, VirtualService, DestinationRule and
    /// HTTPRoute.
    pub fn model(&self) -> Model {
        let mut model = Model::default();
        let mut pods = BTreeMap::new();
        let mut slices: BTreeMap<ObjectKey, Vec<&Slice>> = BTreeMap::new();
        for (key, item) in self.shards.iter().flat_map(|s| s.items.iter()) {
            match item {
                Item::Service(svc) => {
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
                Item::HttpRoute(r) => {
                    model.http_routes.insert(key.clone(), (**r).clone());
                }
                Item::PeerAuthentication(p) => {
                    model.peer_authentications.insert(key.clone(), (**p).clone());
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
                    let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
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
mod tests {
    use super::*;
    use crate::model::{Service, ServicePort, TargetPort};
    use crate::source::kube::convert::{PodLabels, SliceEndpoint};

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("default", name)
    }

    fn svc(name: &str) -> Result<Item, Invalid> {
        let port =
            ServicePort { name: "http".into(), port: 9080, target_port: TargetPort::Number(9080), app_protocol: None };
        Ok(Item::Service(Service {
            name: name.into(),
            namespace: "default".into(),
            ports: vec![port],
            ..Default::default()
        }))
    }

    fn slice(service: &str, eps: &[(&str, &str, bool)]) -> Result<Item, Invalid> {
        let endpoints = eps
            .iter()
            .map(|(pod, ip, ready)| SliceEndpoint {
                address: ip.to_string(),
                pod: Some(pod.to_string()),
                ready: *ready,
                terminating: false,
            })
            .collect();
        Ok(Item::Slice(Slice { service: service.into(), ports: [("http".into(), 9080)].into(), endpoints }))
    }

    fn pod(version: &str) -> Result<Item, Invalid> {
        let labels = [("version".to_string(), version.to_string())].into();
        Ok(Item::Pod(PodLabels { labels, service_account: None }))
    }

    fn bad() -> Result<Item, Invalid> {
        Err(Invalid { field: "spec.canary".into(), message: "must differ from spec.stable".into() })
    }

    fn index() -> (Index, [usize; 3]) {
        let mut ix = Index::default();
        let ids = [ix.add_shard(Kind::Service), ix.add_shard(Kind::Pod), ix.add_shard(Kind::EndpointSlice)];
        (ix, ids)
    }

    fn list(ix: &mut Index, shard: usize, items: Vec<(ObjectKey, Result<Item, Invalid>)>) {
        ix.apply(shard, Change::Init);
        for (k, i) in items {
            ix.apply(shard, Change::InitApply(k, i));
        }
        ix.apply(shard, Change::InitDone);
    }

    #[test]
    fn ready_only_once_every_shard_has_listed() {
        let (mut ix, [s, p, e]) = index();
        list(&mut ix, s, vec![(key("reviews"), svc("reviews"))]);
        list(&mut ix, p, vec![]);
        assert!(!ix.is_ready());
        list(&mut ix, e, vec![]);
        assert!(ix.is_ready());
    }

    #[test]
    fn endpoints_join_slices_and_pods_by_target_ref() {
        let (mut ix, [s, p, e]) = index();
        list(&mut ix, s, vec![(key("reviews"), svc("reviews"))]);
        list(&mut ix, p, vec![(key("r1"), pod("v1")), (key("r2"), pod("v2"))]);
        list(
            &mut ix,
            e,
            vec![(key("reviews-a"), slice("reviews", &[("r1", "10.0.0.1", true), ("r2", "10.0.0.2", false)]))],
        );
        let m = ix.model();
        let eps = m.endpoints_of(&key("reviews"));
        assert_eq!(eps.len(), 2);
        assert_eq!((eps[0].label("version"), eps[0].ready, eps[0].ports[&9080]), (Some("v1"), true, 9080));
        assert_eq!((eps[1].label("version"), eps[1].ready), (Some("v2"), false));
    }

    #[test]
    fn a_relist_removes_what_is_gone_and_never_shows_a_partial_list() {
        let (mut ix, [s, _, _]) = index();
        list(&mut ix, s, vec![(key("a"), svc("a")), (key("b"), svc("b"))]);
        ix.apply(s, Change::Init);
        ix.apply(s, Change::InitApply(key("a"), svc("a")));
        // Mid-relist, the model still has both.
        assert_eq!(ix.model().services.len(), 2);
        assert!(ix.apply(s, Change::InitDone).changed);
        assert_eq!(ix.model().services.keys().collect::<Vec<_>>(), [&key("a")]);
    }

    #[test]
    fn an_invalid_object_is_reported_once_and_its_delete_applies() {
        let mut ix = Index::default();
        let shard = ix.add_shard(Kind::ReleasePolicy);
        list(&mut ix, shard, vec![]);
        let first = ix.apply(shard, Change::Apply(key("p"), bad()));
        assert_eq!(first.rejected.as_ref().map(|r| (r.kind, r.key.clone())), Some((Kind::ReleasePolicy, key("p"))));
        assert!(!first.changed);
        assert_eq!(ix.apply(shard, Change::Apply(key("p"), bad())).rejected, None, "reported once");
        ix.apply(shard, Change::Delete(key("p")));
        assert!(ix.apply(shard, Change::Apply(key("p"), bad())).rejected.is_some(), "a new object again");
    }

    #[test]
    fn an_absent_kind_counts_as_listed_and_empties_its_shard() {
        let (mut ix, [s, p, e]) = index();
        let vs = ix.add_shard(Kind::VirtualService);
        for shard in [s, p, e] {
            list(&mut ix, shard, vec![]);
        }
        assert!(!ix.is_ready());
        assert!(ix.apply(vs, Change::Absent).changed);
        assert!(ix.is_ready());
        let item = Item::VirtualService(Box::default());
        list(&mut ix, vs, vec![(key("reviews"), Ok(item))]);
        assert_eq!(ix.model().virtual_services.len(), 1);
        assert!(ix.apply(vs, Change::Absent).changed, "CRD removed: its objects go");
        assert!(ix.model().virtual_services.is_empty());
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version() {
        let (mut ix, [s, p, e]) = index();
        list(&mut ix, p, vec![]);
        list(&mut ix, e, vec![]);
        list(&mut ix, s, vec![(key("a"), svc("a"))]);
        assert!(ix.apply(s, Change::Apply(key("a"), bad())).rejected.is_some());
        assert!(ix.model().services.contains_key(&key("a")));
        list(&mut ix, s, vec![(key("a"), bad())]);
        assert!(ix.model().services.contains_key(&key("a")), "kept across a relist too");
        assert_eq!(ix.apply(s, Change::Apply(key("a"), bad())).rejected, None, "still reported once");
        assert!(ix.apply(s, Change::Delete(key("a"))).changed);
        assert!(ix.model().services.is_empty());
    }
}
