//! Work split over the machine's cores for the few CPU-bound passes that see a whole mesh at once (parsing a
//! config file's documents, checking generated routes against Envoy's API rules): contiguous runs of a slice on
//! scoped threads, results in input order, so the outcome is the one a single pass gives; and two tasks side by
//! side.
//!
//! ```text
//!  items ─chunks(len / threads)─▶ thread 1 … thread k ─join, in order─▶ Vec<R> (one per run)
//! ```
//! Small inputs run on the calling thread: a thread costs more than a few hundred items do.

/// At most this many threads for one pass.
const MAX_THREADS: usize = 8;

/// `f` over contiguous runs of `items`, one per thread (or one run on this thread when `items` has fewer than
/// `min` entries or the machine one core). Results come back in the order of the runs; a panic in `f` is resumed
/// on the caller.
pub fn runs<T: Sync, R: Send>(items: &[T], min: usize, f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS);
    if threads < 2 || items.len() < min.max(2) {
        return vec![f(items)];
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.chunks(per).map(|run| scope.spawn(move || f(run))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// `a` and `b`, `a` on a thread of its own when `parallel` (else one after the other); a panic in `a` is resumed on
/// the caller.
pub fn join<A: Send, B>(parallel: bool, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    if !parallel {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let first = scope.spawn(a);
        let second = b();
        (first.join().unwrap_or_else(|p| std::panic::resume_unwind(p)), second)
    })
}

#[cfg(test)]
mod tests {
    use super::{join, runs};

    #[test]
    fn runs_cover_every_item_once_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        let parts = runs(&items, 10, |run| run.to_vec());
        assert_eq!(parts.concat(), items);
        assert!(parts.len() <= super::MAX_THREADS);
    }

    #[test]
    fn small_inputs_stay_on_the_calling_thread() {
        let here = std::thread::current().id();
        let parts = runs(&[1, 2, 3], 10, |run| (std::thread::current().id(), run.len()));
        assert_eq!(parts, vec![(here, 3)]);
    }

    #[test]
    fn join_gives_both_results_in_either_mode() {
        for parallel in [false, true] {
            assert_eq!(join(parallel, || 1 + 1, || "two"), (2, "two"));
        }
    }
}
