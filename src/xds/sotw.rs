//! State-of-the-world xDS: every response carries the full set of its type (as requested).

use super::resource::{TypeKind, set_version};
use super::response::Response;
use super::session::{Inflight, Session};
use super::stream::Protocol;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use std::collections::BTreeSet;
use std::sync::Arc;

pub(crate) struct Sotw;

impl Protocol for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const NAME: &'static str = "sotw";
    const VHDS: bool = false;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }

    fn name_count(req: &DiscoveryRequest) -> usize {
        req.resource_names.len()
    }

    fn names(req: &DiscoveryRequest) -> impl Iterator<Item = &str> {
        req.resource_names.iter().map(String::as_str)
    }

    fn handle(s: &mut Session, kind: TypeKind, req: DiscoveryRequest) {
        let st = s.state(kind);
        if !req.response_nonce.is_empty() {
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                tracing::debug!(type = kind.short(), nonce = %req.response_nonce, "stale nonce ignored");
                return;
            }
            if st.inflight.as_ref().is_some_and(|i| i.nonce == req.response_nonce) {
                match req.error_detail {
                    Some(e) => s.nack(kind, e.message),
                    None => s.ack(kind),
                }
            }
        } else if !st.subscribed && !req.version_info.is_empty() {
            st.resume_version = Some(req.version_info.clone());
        }
        subscribe(s, kind, req.resource_names);
    }

    fn push(s: &mut Session, kind: TypeKind) -> Option<Response> {
        let st = &s.types[kind.index()];
        if !st.subscribed || st.inflight.is_some() {
            return None;
        }
        let desired = s.desired(kind);
        if !st.wildcard && desired.is_empty() {
            return None; // named, but none exists yet: answered when they appear
        }
        let version = set_version(desired.iter().map(|(n, r)| (n.as_str(), r.version.as_str())));
        let st = s.state(kind);
        if st.resume_version.take().as_deref() == Some(version.as_str()) {
            // A reconnecting proxy already holds exactly this: nothing to send.
            st.held = Arc::new(desired.clone());
            st.sent = desired;
            st.sent_version = Some(version.clone());
            st.acked_version = Some(version);
            return None;
        }
        if st.sent_version.as_deref() == Some(version.as_str()) && !st.force {
            return None;
        }
        if st.acked_version.as_deref() == Some(version.as_str()) && !st.force {
            // After a NACK whose refused part is held back, the proxy already holds exactly this.
            st.sent = desired;
            st.sent_version = Some(version);
            return None;
        }
        let nonce = s.next_nonce();
        let resources = desired.values().cloned().collect();
        let resp =
            Response { kind, version: version.clone(), nonce: nonce.clone(), resources, removed: vec![], delta: false };
        let st = s.state(kind);
        st.force = false;
        st.last_nonce = Some(nonce.clone());
        st.sent_version = Some(version.clone());
        st.sent = desired.clone();
        st.inflight = Some(Inflight { nonce, version, set: desired });
        Some(resp)
    }
}

/// SotW requests carry the whole subscription each time.
fn subscribe(s: &mut Session, kind: TypeKind, names: Vec<String>) {
    let st = s.state(kind);
    let mut names: BTreeSet<String> = names.into_iter().collect();
    let star = names.remove("*");
    st.wildcard = star || (kind.is_wildcard() && names.is_empty() && !st.ever_named);
    st.ever_named |= !names.is_empty();
    if names.iter().any(|n| !st.names.contains(n)) {
        st.force = true;
    }
    if !st.wildcard {
        let dropped: Vec<String> =
            st.sent.keys().chain(st.held.keys()).filter(|n| !names.contains(*n)).cloned().collect();
        for name in dropped {
            st.sent.remove(&name);
            if st.held.contains_key(&name) {
                Arc::make_mut(&mut st.held).remove(&name);
            }
        }
    }
    if *st.names != names {
        st.names = super::names::intern(Arc::new(names));
        st.names_gen += 1;
    }
    st.subscribed = true;
}
