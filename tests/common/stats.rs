//! Statistics for asserting traffic splits: a correct split must pass, a wrong one must fail, and
//! neither may depend on luck more than once in a thousand runs.

/// z for a two-sided 99.9% interval of the standard normal distribution.
pub const Z_999: f64 = 3.29;

/// The range `(lo, hi)` of observed shares that a split sending each request to a version with
/// probability `p` produces in 999 runs of 1000, for `n` requests (normal approximation to the
/// binomial, clamped to [0, 1]). Assert `lo <= hits / n <= hi`.
///
/// For 2000 requests at 20% this is about 0.171..0.229, which still fails a 25% or a 15% split.
pub fn split_bound(n: usize, p: f64) -> (f64, f64) {
    assert!(n > 0, "split_bound needs at least one request");
    assert!((0.0..=1.0).contains(&p), "share {p} is not a probability");
    let half = Z_999 * (p * (1.0 - p) / n as f64).sqrt();
    ((p - half).max(0.0), (p + half).min(1.0))
}

/// Panics with the counts unless `hits` of `n` requests fall within [`split_bound`] of `p`.
pub fn assert_share(what: &str, hits: usize, n: usize, p: f64) {
    let (lo, hi) = split_bound(n, p);
    let share = hits as f64 / n as f64;
    assert!(
        (lo..=hi).contains(&share),
        "{what}: {hits}/{n} = {share:.4}, expected {p} within the 99.9% bound [{lo:.4}, {hi:.4}]"
    );
}
