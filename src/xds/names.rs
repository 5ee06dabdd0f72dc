//! Subscriptions shared between streams: equal name sets are one allocation.
//!
//! A sidecar subscribes to the assignment of every cluster it holds by name, so with 1,000 services each stream's
//! EDS subscription is about 3,000 names (~300 KB as a `BTreeSet<String>`), and the sidecars of one namespace all
//! name the same ones. [`intern`] returns the one shared copy of a set for every stream that holds an equal set;
//! a stream that changes its subscription copies it first (copy on write) and interns the result again.
//! Entries are weak: a set no stream holds any more is freed, and its entry is swept as the table grows.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A subscription: the names a stream asked for.
pub type Names = Arc<BTreeSet<String>>;

/// Sets smaller than this are not worth a lookup (hashing and the lock cost more than the copy).
const MIN_INTERNED: usize = 8;

#[derive(Default)]
struct Table {
    by_hash: HashMap<u64, Vec<Weak<BTreeSet<String>>>>,
    /// Entries when the table was last swept; the next sweep runs when it has doubled.
    swept_at: usize,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn hash(set: &BTreeSet<String>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for name in set {
        h.update(name.as_bytes());
        h.update(&[0]);
    }
    h.digest()
}

/// The shared copy of `set`: an existing one with equal names, or `set` itself, now shared.
pub fn intern(set: Names) -> Names {
    if set.len() < MIN_INTERNED {
        return set;
    }
    let key = hash(&set);
    let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
    let entries = table.by_hash.entry(key).or_default();
    entries.retain(|w| w.strong_count() > 0);
    if let Some(shared) = entries.iter().filter_map(Weak::upgrade).find(|s| Arc::ptr_eq(s, &set) || **s == *set) {
        return shared;
    }
    entries.push(Arc::downgrade(&set));
    let len = table.by_hash.len();
    if len > 2 * table.swept_at.max(512) {
        table.by_hash.retain(|_, entries| {
            entries.retain(|w| w.strong_count() > 0);
            !entries.is_empty()
        });
        table.swept_at = table.by_hash.len();
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(prefix: &str, n: usize) -> Names {
        Arc::new((0..n).map(|i| format!("{prefix}-{i}")).collect())
    }

    #[test]
    fn equal_sets_share_one_copy_and_a_changed_copy_is_its_own() {
        let a = intern(set("interned-a", 100));
        let b = intern(set("interned-a", 100));
        assert!(Arc::ptr_eq(&a, &b), "equal subscriptions share one allocation");
        let mut c = b.clone();
        Arc::make_mut(&mut c).insert("another".into());
        let c = intern(c);
        assert!(!Arc::ptr_eq(&a, &c) && a.len() == 100 && c.len() == 101, "copy on write leaves the shared set");
    }

    #[test]
    fn a_set_nobody_holds_is_freed() {
        let a = intern(set("interned-freed", 50));
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none(), "the table holds sets only weakly");
        let b = intern(set("interned-freed", 50));
        assert_eq!(Arc::strong_count(&b), 1);
    }

    #[test]
    fn small_sets_are_left_alone() {
        let a = intern(set("interned-small", 2));
        let b = intern(set("interned-small", 2));
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
