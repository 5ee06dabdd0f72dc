//! Set operations on sorted resource names, done as one merge pass over both sides.
//!
//! A sidecar's stream checks thousands of names (its EDS subscription, the clusters a route configuration names)
//! against sets of the same size (what the view offers, what the proxy holds). A lookup per name is a tree search
//! of about a dozen string compares; a merge of two sorted sequences is one compare per step. With 1,000 services
//! the lookups were about 40% of Sluice's CPU in a connect storm.
//!
//! ```text
//!  names  a c d f        keys  a b c e f
//!         ^ ^ ^ ^              ^ ^ ^ ^ ^     missing(names, keys) = [d]
//! ```
//! Both sides must be ascending (`OrdMap`/`BTreeSet` keys, and [`super::resource::Resource::refs`], are).

use super::resource::{Resource, ResourceSet};
use std::cmp::Ordering;
use std::sync::Arc;

/// Fewer names than the set's size over this: a lookup per name beats a pass over the whole set.
const LOOKUP_RATIO: usize = 16;

/// The names of `names` that are not in `keys`, both ascending, in one pass.
pub(crate) fn missing<'a, 'b>(
    names: impl IntoIterator<Item = &'a str>,
    keys: impl IntoIterator<Item = &'b str>,
) -> impl Iterator<Item = &'a str> {
    let mut keys = keys.into_iter().peekable();
    names.into_iter().filter(move |name| {
        while let Some(key) = keys.peek() {
            match (*key).cmp(name) {
                Ordering::Less => {
                    keys.next();
                }
                Ordering::Equal => return false,
                Ordering::Greater => return true,
            }
        }
        true
    })
}

/// The resources of `set` named by `names` (ascending, no duplicates), or `None` if one is not there.
pub(crate) fn lookup_all<'s>(names: &[String], set: &'s ResourceSet) -> Option<Vec<&'s Arc<Resource>>> {
    if names.len() * LOOKUP_RATIO < set.len() {
        return names.iter().map(|n| set.get(n)).collect();
    }
    let mut entries = set.iter().peekable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        loop {
            let (key, value) = entries.next()?;
            match key.as_str().cmp(name) {
                Ordering::Less => continue,
                Ordering::Equal => {
                    out.push(value);
                    break;
                }
                Ordering::Greater => return None,
            }
        }
    }
    Some(out)
}

/// Every name the resources' `refs` hold, ascending, once each (e.g. the assignments of a list of clusters).
pub(crate) fn refs_of<'a>(resources: impl Iterator<Item = &'a Arc<Resource>>) -> Vec<&'a str> {
    let mut names: Vec<&str> = resources.flat_map(|r| r.refs.iter().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Whether every name of `names` (ascending) is a key of `set`.
pub(crate) fn all_in(names: &[&str], set: &ResourceSet) -> bool {
    if names.len() * LOOKUP_RATIO < set.len() {
        return names.iter().all(|n| set.contains_key(*n));
    }
    missing(names.iter().copied(), set.keys().map(String::as_str)).next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::resource::TypeKind;

    fn set(names: &[&str]) -> ResourceSet {
        names
            .iter()
            .map(|n| (n.to_string(), Arc::new(Resource::new(TypeKind::Endpoint, n.to_string(), vec![], vec![]))))
            .collect()
    }

    #[test]
    fn missing_is_the_names_absent_from_the_keys() {
        let got: Vec<&str> = missing(["a", "c", "d", "f", "g"], ["a", "b", "c", "e", "f"]).collect();
        assert_eq!(got, ["d", "g"]);
        assert_eq!(missing(["a"], Vec::<&str>::new()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(missing(Vec::<&str>::new(), ["a"]).count(), 0);
    }

    #[test]
    fn lookups_and_merges_agree_for_every_size() {
        let keys: Vec<String> = (0..100).map(|i| format!("outbound|9080||svc-{i:03}")).collect();
        let all = set(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        for n in [1, 3, 10, 50, 100] {
            // Every n-th key (found), then the same with one name that is not there.
            let names: Vec<String> = keys.iter().step_by(100 / n).cloned().collect();
            let found = lookup_all(&names, &all).expect("all present");
            assert_eq!(found.iter().map(|r| r.name.clone()).collect::<Vec<_>>(), names);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            assert!(all_in(&refs, &all));
            let mut with_absent = names.clone();
            with_absent.push("outbound|9080||svc-zzz".into());
            assert!(lookup_all(&with_absent, &all).is_none(), "n = {n}");
            let refs: Vec<&str> = with_absent.iter().map(String::as_str).collect();
            assert!(!all_in(&refs, &all), "n = {n}");
            // An absent name between two present ones.
            let mut between = names.clone();
            between.insert(1.min(between.len()), format!("{}a", names[0]));
            assert!(lookup_all(&between, &all).is_none(), "n = {n}");
            let refs: Vec<&str> = between.iter().map(String::as_str).collect();
            assert!(!all_in(&refs, &all), "n = {n}");
        }
    }
}
