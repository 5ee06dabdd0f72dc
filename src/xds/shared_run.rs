//! Responses that carry the same resources share one encoding of them.
//!
//! In a connect storm every proxy of a scope is first sent the same sets (1,000 virtual hosts, 3,000 clusters and
//! assignments), and every SotW push sends a type's whole set to each proxy. Encoded per stream, that was a copy of
//! each small resource body into each stream's chunks: a fifth of Sluice's CPU in a storm. Here the resource fields
//! of such a response are encoded once, kept while recent, and sent to every stream as slices of the same bytes.
//!
//! ```text
//!  Response { resources: [Arc<Resource>; n ≥ SHARE_FROM_RESOURCES] }
//!     ─lookup: same protocol, same Arcs in the same order?─▶ hit: the shared Bytes
//!                                                          ─▶ miss: encode once, keep (newest RECENT runs,
//!                                                                   each until IDLE without a stream asking)
//! ```
//! A run is the same when it holds the same `Arc`s (the snapshot's resources) in the same order: comparing
//! pointers, never bytes. The version, nonce and removals stay per stream (the message's other fields).

use super::resource::Resource;
use super::response::Response;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Responses of fewer resources are encoded per stream (a change's push: one virtual host, a few assignments).
pub const SHARE_FROM_RESOURCES: usize = 64;
/// How many encoded runs are kept at most (each scope's sets for each type and protocol, across a snapshot change).
pub const RECENT: usize = 16;
/// A run no stream asked for this long is dropped (at the next new run): after a storm or a SotW push, the bytes
/// are not kept for nothing.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

struct Run {
    delta: bool,
    resources: Vec<Arc<Resource>>,
    bytes: Bytes,
    used: Instant,
}

static RUNS: Mutex<VecDeque<Run>> = Mutex::new(VecDeque::new());

/// The resource fields of `resp`, shared, or `None` for a response too small to share.
pub fn lookup(resp: &Response) -> Option<Bytes> {
    if resp.resources.len() < SHARE_FROM_RESOURCES {
        return None;
    }
    if let Some(bytes) = find(resp) {
        return Some(bytes);
    }
    // Encoded outside the lock; two streams racing here both encode, and the second keeps its own (equal) bytes.
    let bytes = Bytes::from(resp.encode_resources());
    let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    runs.retain(|run| now.duration_since(run.used) < IDLE);
    runs.push_back(Run { delta: resp.delta, resources: resp.resources.clone(), bytes: bytes.clone(), used: now });
    if runs.len() > RECENT {
        runs.pop_front();
    }
    Some(bytes)
}

fn find(resp: &Response) -> Option<Bytes> {
    let mut runs = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let same = |run: &&mut Run| {
        run.delta == resp.delta
            && run.resources.len() == resp.resources.len()
            && run.resources.iter().zip(&resp.resources).all(|(a, b)| Arc::ptr_eq(a, b))
    };
    let run = runs.iter_mut().rev().find(same)?;
    run.used = Instant::now();
    Some(run.bytes.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::TypeKind;

    fn resources(n: usize, tag: u8) -> Vec<Arc<Resource>> {
        let one = |i: usize| Resource::new(TypeKind::Cluster, format!("c{i}"), vec![tag; 10 + i % 7], vec![]);
        (0..n).map(|i| Arc::new(one(i))).collect()
    }

    fn response(resources: Vec<Arc<Resource>>, delta: bool, nonce: &str) -> Response {
        let kind = TypeKind::Cluster;
        Response { kind, version: "1".into(), nonce: nonce.into(), resources, removed: vec![], delta }
    }

    #[test]
    fn streams_sending_the_same_resources_share_one_encoding() {
        let set = resources(SHARE_FROM_RESOURCES, 1);
        let a = lookup(&response(set.clone(), true, "1")).expect("large enough to share");
        let b = lookup(&response(set.clone(), true, "2")).expect("shared");
        assert_eq!(a.as_ptr(), b.as_ptr(), "the second stream reuses the first one's bytes");
        assert_eq!(&a[..], &response(set.clone(), true, "3").encode_resources()[..]);
        let sotw = lookup(&response(set.clone(), false, "1")).expect("shared");
        assert_ne!(a, sotw, "SotW encodes resources as Any alone, Delta with name and version");
    }

    #[test]
    fn equal_bytes_in_other_resources_or_another_order_are_not_the_same_run() {
        let set = resources(SHARE_FROM_RESOURCES, 2);
        let a = lookup(&response(set.clone(), true, "1")).expect("shared");
        let copies = resources(SHARE_FROM_RESOURCES, 2);
        assert_ne!(lookup(&response(copies, true, "1")).expect("shared").as_ptr(), a.as_ptr());
        let mut reversed = set.clone();
        reversed.reverse();
        let r = lookup(&response(reversed.clone(), true, "1")).expect("shared");
        assert_eq!(&r[..], &response(reversed, true, "1").encode_resources()[..]);
    }

    #[test]
    fn small_responses_are_encoded_per_stream() {
        assert!(lookup(&response(resources(SHARE_FROM_RESOURCES - 1, 3), true, "1")).is_none());
    }
}
