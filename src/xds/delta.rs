//! Incremental (Delta) xDS: responses carry only what changed, and `removed_resources`.

use super::resource::TypeKind;
use super::response::Response;
use super::session::{Inflight, Session};
use super::sorted;
use super::stream::Protocol;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use imbl::ordmap::DiffItem;
use std::sync::Arc;

pub(crate) struct Delta;

impl Protocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";
    const VHDS: bool = true;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn name_count(req: &DeltaDiscoveryRequest) -> usize {
        req.resource_names_subscribe.len() + req.resource_names_unsubscribe.len() + req.initial_resource_versions.len()
    }

    fn names(req: &DeltaDiscoveryRequest) -> impl Iterator<Item = &str> {
        let subs = req.resource_names_subscribe.iter().chain(&req.resource_names_unsubscribe);
        subs.chain(req.initial_resource_versions.keys()).map(String::as_str)
    }

    fn handle(s: &mut Session, kind: TypeKind, req: DeltaDiscoveryRequest) {
        let st = s.state(kind);
        let first = !st.subscribed;
        let names_gen = st.names_gen;
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            // Names may have left `sent` or `absent_told`: the next push walks the subscription again.
            st.names_checked = None;
        }
        if first {
            st.subscribed = true;
            st.initial.extend(req.initial_resource_versions);
            st.wildcard = kind.is_wildcard() && req.resource_names_subscribe.is_empty();
        }
        let mut subscribe = req.resource_names_subscribe;
        subscribe.retain(|name| {
            st.wildcard |= name == "*";
            name != "*"
        });
        // A subscription's first names (a sidecar's EDS request names thousands) are one sorted bulk build; the
        // per-name path below would search the set, and the sets it clears, once per name.
        let fresh = st.names.is_empty()
            && st.absent_told.is_empty()
            && (first || (st.sent.is_empty() && st.initial.is_empty()));
        if fresh && !subscribe.is_empty() {
            st.names = Arc::new(std::mem::take(&mut subscribe).into_iter().collect());
            st.names_gen += 1;
        }
        for name in subscribe {
            if !first {
                // The proxy does not hold it: send it even if unchanged.
                st.sent.remove(&name);
                st.initial.remove(&name);
                if kind == TypeKind::VirtualHost {
                    st.forget_namespace(&name);
                }
            }
            st.absent_told.remove(&name);
            if !st.names.contains(&name) {
                Arc::make_mut(&mut st.names).insert(name);
                st.names_gen += 1;
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
                continue;
            }
            if st.names.contains(&name) {
                Arc::make_mut(&mut st.names).remove(&name);
                st.names_gen += 1;
            }
            st.absent_told.remove(&name);
            if kind == TypeKind::VirtualHost {
                st.forget_namespace(&name);
            }
            if !st.wildcard {
                st.initial.remove(&name);
                if st.held.contains_key(&name) {
                    Arc::make_mut(&mut st.held).remove(&name);
                }
                st.sent.remove(&name);
            }
        }
        if st.names_gen != names_gen {
            st.names = super::names::intern(std::mem::take(&mut st.names));
        }
        if req.response_nonce.is_empty() {
            return;
        }
        if st.inflight.as_ref().is_some_and(|i| i.nonce == req.response_nonce) {
            match req.error_detail {
                Some(e) => s.nack(kind, e.message),
                None => s.ack(kind),
            }
        } else {
            tracing::debug!(type = kind.short(), nonce = %req.response_nonce, "stale nonce ignored");
        }
    }

    fn push(s: &mut Session, kind: TypeKind) -> Option<Response> {
        let st = &s.types[kind.index()];
        if !st.subscribed || st.inflight.is_some() {
            return None;
        }
        let desired = s.desired(kind);
        let system_version = s.snapshot.as_ref().map(|s| s.version.to_string())?;
        let st = s.state(kind);
        // Resources a reconnecting proxy already holds at the current version count as held and sent.
        if !st.initial.is_empty() {
            for (name, r) in &desired {
                if st.initial.get(name) == Some(&r.version) {
                    st.initial.remove(name);
                    Arc::make_mut(&mut st.held).insert(name.clone(), r.clone());
                    st.sent.insert(name.clone(), r.clone());
                }
            }
        }
        // What changed since the last push: a diff of two sets that share structure, so O(changes).
        let (mut updates, mut removals) = (Vec::new(), Vec::new());
        for item in st.sent.diff(&desired) {
            match item {
                DiffItem::Add(_, r) | DiffItem::Update { new: (_, r), .. } => updates.push(r.clone()),
                DiffItem::Remove(name, _) => removals.push(name.clone()),
            }
        }
        removals.extend(st.initial.keys().filter(|n| !desired.contains_key(*n)).cloned());
        if st.names_checked != Some(st.names_gen) {
            // One merge pass over the subscription and the desired set (both sorted); the few names left are looked up.
            let undesired = sorted::missing(st.names.iter().map(String::as_str), desired.keys().map(String::as_str));
            removals.extend(
                undesired
                    .filter(|n| !st.sent.contains_key(*n) && !st.initial.contains_key(*n))
                    .filter(|n| !st.absent_told.contains(*n))
                    .map(String::from),
            );
        }
        st.names_checked = Some(st.names_gen);
        let first_answer = st.sent_version.is_none() && st.wildcard;
        if updates.is_empty() && removals.is_empty() && !first_answer {
            return None;
        }
        st.sent = desired.clone();
        for name in &removals {
            st.initial.remove(name);
            if st.names.contains(name) {
                st.absent_told.insert(name.clone());
            }
        }
        let nonce = s.next_nonce();
        let st = s.state(kind);
        st.last_nonce = Some(nonce.clone());
        st.sent_version = Some(system_version.clone());
        st.inflight = Some(Inflight { nonce: nonce.clone(), version: system_version.clone(), set: desired });
        Some(Response { kind, version: system_version, nonce, resources: updates, removed: removals, delta: true })
    }
}
