//! Statistics for asserting traffic splits: a correct split must pass, a wrong one must fail. The suite asserts
//! about twenty splits per run, so each bound may fail a correct split only once in 100,000 runs (at 99.9% per
//! assertion, one CI run in fifty would fail by luck somewhere).

/// z for a two-sided 99.999% interval of the standard normal distribution.
pub const Z: f64 = 4.42;

/// The range `(lo, hi)` of observed shares that a split sending each request to a version with
/// probability `p` produces in 99,999 runs of 100,000, for `n` requests (normal approximation to the
/// binomial, clamped to [0, 1]). Assert `lo <= hits / n <= hi`.
///
/// For 2000 requests at 20% this is about 0.160..0.240: a 25% or 15% split fails most runs, a 30% or 10% one
/// every run.
pub fn split_bound(n: usize, p: f64) -> (f64, f64) {
    assert!(n > 0, "split_bound needs at least one request");
    assert!((0.0..=1.0).contains(&p), "share {p} is not a probability");
    let half = Z * (p * (1.0 - p) / n as f64).sqrt();
    ((p - half).max(0.0), (p + half).min(1.0))
}

/// Panics with the counts unless `hits` of `n` requests fall within [`split_bound`] of `p`.
pub fn assert_share(what: &str, hits: usize, n: usize, p: f64) {
    let (lo, hi) = split_bound(n, p);
    let share = hits as f64 / n as f64;
    assert!(
        (lo..=hi).contains(&share),
        "{what}: {hits}/{n} = {share:.4}, expected {p} within the 99.999% bound [{lo:.4}, {hi:.4}]"
    );
}
