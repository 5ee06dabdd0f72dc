//! Per-visibility resource sets: what an mTLS proxy, or one a Sidecar scopes, may see of the shared clusters and
//! load assignments.
//!
//! ```text
//!  snapshot.clusters (all) ──filter by outbound_namespace(name) ∈ visibility──▶ scoped clusters
//!  next snapshot: scoped' = scoped + (visible part of diff(all, all'))   O(change), same Arc when nothing moved
//! ```
//! Proxies are grouped by [`Visibility`] (their namespace plus the shared ones), so the filtering runs once per
//! group, not per proxy; route configurations and listeners of a group are translated from
//! [`Model::visible_to`](crate::model::Model::visible_to).

use super::resource::ResourceSet;
use crate::model::Visibility;
use crate::translate::outbound_namespace;
use imbl::ordmap::DiffItem;
use std::sync::Arc;

fn sees(visibility: &Visibility, name: &str) -> bool {
    // `outbound|P|S|FQDN`: a Sidecar's egress hosts match the FQDN.
    outbound_namespace(name).is_some_and(|ns| visibility.sees_host(ns, name.rsplit('|').next().unwrap_or_default()))
}

/// The resources of `all` that `visibility` covers.
pub(super) fn filter(all: &ResourceSet, visibility: &Visibility) -> Arc<ResourceSet> {
    Arc::new(all.iter().filter(|(n, _)| sees(visibility, n)).map(|(n, r)| (n.clone(), r.clone())).collect())
}

/// The scoped set for a new snapshot, from the previous scoped set and the change between the full sets. The
/// previous `Arc` is kept when no visible resource changed, so streams of this group are not woken.
pub(super) fn carry(
    scoped: &Arc<ResourceSet>,
    prev_all: &Arc<ResourceSet>,
    all: &Arc<ResourceSet>,
    visibility: &Visibility,
) -> Arc<ResourceSet> {
    if Arc::ptr_eq(prev_all, all) {
        return scoped.clone();
    }
    let mut set = (**scoped).clone();
    let mut changed = false;
    for d in prev_all.diff(all) {
        match d {
            DiffItem::Add(n, r) | DiffItem::Update { new: (n, r), .. } if sees(visibility, n) => {
                set.insert(n.clone(), r.clone());
                changed = true;
            }
            DiffItem::Remove(n, _) if sees(visibility, n) => {
                set.remove(n);
                changed = true;
            }
            _ => {}
        }
    }
    if changed { Arc::new(set) } else { scoped.clone() }
}
