//! Per-version traffic, summed over every proxy: running totals (requests, 5xx, latency histogram), requests and
//! 5xx per wall-clock second, and a short history of the totals for latency over the window.
//!
//! ```text
//!  sink (one task per proxy stream) ──record(now, since, [(version, Delta)])──▶ Totals per version (monotonic)
//!     a delta covers (since, now]: spread over those seconds   ──▶ seconds: requests, 5xx per second
//!                                                               ──▶ points (t, Totals), ≤ one per 250 ms
//!  status, dashboard, gauges ◀── window(version, now): rps and success rate over the 10 whole seconds that end
//!                                 2 s before now (complete: every proxy has flushed them), p50/p99 over WINDOW
//!  analysis ◀── totals(version): the controller differences two of these, one interval apart
//! ```
//! Spreading each delta over the time it covers keeps rates right when a proxy's flush comes late (a loaded host
//! stalls Envoy's main thread): its counts land in the seconds they happened, not all in the second they arrived.
//!
//! Memory is bounded: per version, the totals, [`SECONDS_KEPT`] seconds and at most `WINDOW / POINT_SPACING + 2`
//! points; versions not
//! heard from for [`FORGET_AFTER`] are dropped, and at most [`MAX_VERSIONS`] are tracked (names come from
//! proxies, so a misbehaving proxy cannot grow this without bound). Per-proxy state lives in the sink's stream
//! task and ends with it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The span that rates, success rates and latencies are computed over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// History points closer than this are merged (proxies flush every second, each on its own phase).
const POINT_SPACING_MS: u64 = 250;
/// Per-second counts kept per version (the window, the two seconds still filling, and slack).
pub const SECONDS_KEPT: u64 = 16;
/// Seconds between the end of the rate window and now: a second is complete once every proxy's flush after it
/// arrived (flushes come every second).
const SETTLE_SECS: u64 = 2;
/// A version that no proxy has reported for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most versions tracked at once; reports for more are dropped (and logged once per version).
pub const MAX_VERSIONS: usize = 10_000;

/// One version of one service: the subset cluster `outbound|PORT|VERSION|SERVICE.NAMESPACE.svc.cluster.local`
/// (all ports summed).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    pub namespace: String,
    pub service: String,
    pub version: String,
}

impl VersionKey {
    pub fn new(namespace: &str, service: &str, version: &str) -> Self {
        Self { namespace: namespace.into(), service: service.into(), version: version.into() }
    }
}

/// Latency histogram: cumulative counts per upper bound (ms), as Envoy sends them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// `cumulative[i]`: samples ≤ `bounds[i]`.
    pub cumulative: Vec<u64>,
    /// Every sample, those above the last bound included.
    pub count: u64,
}

impl Histogram {
    /// Adds `other` when it has the same bounds (or this one is empty); false when the bounds differ.
    fn add(&mut self, other: &Histogram) -> bool {
        if self.bounds.is_empty() && self.count == 0 {
            *self = other.clone();
            return true;
        }
        if self.bounds != other.bounds {
            return false;
        }
        self.cumulative.iter_mut().zip(&other.cumulative).for_each(|(a, b)| *a += b);
        self.count += other.count;
        true
    }

    /// `self - earlier`, bucket by bucket (saturating); an earlier histogram with other bounds counts as empty.
    fn since(&self, earlier: &Histogram) -> Histogram {
        if earlier.bounds != self.bounds {
            return self.clone();
        }
        let cumulative = self.cumulative.iter().zip(&earlier.cumulative).map(|(a, b)| a.saturating_sub(*b)).collect();
        Histogram { bounds: self.bounds.clone(), cumulative, count: self.count.saturating_sub(earlier.count) }
    }

    /// The `q` quantile (0..=1) in ms, interpolated linearly inside its bucket; `None` without samples. A
    /// quantile above the last bound reports the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut prev = (0.0, 0u64);
        for (bound, cum) in self.bounds.iter().zip(&self.cumulative) {
            if *cum as f64 >= rank && *cum > prev.1 {
                let share = (rank - prev.1 as f64) / (*cum - prev.1) as f64;
                return Some(prev.0 + (bound - prev.0) * share.clamp(0.0, 1.0));
            }
            prev = (*bound, *cum);
        }
        self.bounds.last().copied()
    }
}

/// What one proxy reported for one version since its previous report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram,
}

/// Everything reported for a version since Sluice started (or first heard of it). Only ever grows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram,
}

impl Totals {
    fn add(&mut self, d: &Delta) {
        self.requests += d.requests;
        self.errors += d.errors;
        if d.latency.count > 0 && !self.latency.add(&d.latency) {
            tracing::debug!("latency histogram with different bucket bounds ignored");
        }
    }

    /// `self - earlier` as a report of what happened in between (saturating; histogram bucket by bucket).
    pub fn delta_since(&self, earlier: &Totals) -> Delta {
        Delta {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Measured {
        let requests = self.requests.saturating_sub(earlier.requests);
        let errors = self.errors.saturating_sub(earlier.errors).min(requests);
        let latency = self.latency.since(&earlier.latency);
        Measured {
            requests,
            success_rate: (requests > 0).then(|| 1.0 - errors as f64 / requests as f64),
            latency_p50_ms: latency.quantile(0.5),
            latency_p99_ms: latency.quantile(0.99),
        }
    }
}

/// Requests, success rate and latency over some span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    pub requests: u64,
    /// Share of responses that were not 5xx (0..=1); `None` without requests.
    pub success_rate: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// A version's traffic over the last [`WINDOW`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub rps: f64,
    pub measured: Measured,
}

struct Entry {
    totals: Totals,
    /// `(second since the epoch, requests, 5xx)`, oldest first; fractional where a delta spanned seconds.
    seconds: VecDeque<(u64, f64, f64)>,
    /// `(t_ms, totals then)`, oldest first; the first point is at or before the window's start when history
    /// reaches back that far.
    points: VecDeque<(u64, Totals)>,
    last_report_ms: u64,
}

/// The shared per-version traffic store. Cheap to clone.
#[derive(Clone, Default)]
pub struct TrafficStats {
    inner: Arc<Mutex<BTreeMap<VersionKey, Entry>>>,
    /// What this replica's own proxies reported (the part it reports to the other replicas; `inner` also holds
    /// theirs).
    local: Arc<Mutex<BTreeMap<VersionKey, Totals>>>,
}

impl TrafficStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one proxy's report, received at `now_ms`, covering the time since `since_ms` (its previous report).
    pub fn record(&self, now_ms: u64, since_ms: u64, deltas: &[(VersionKey, Delta)]) {
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            for (key, delta) in deltas {
                if local.contains_key(key) || local.len() < MAX_VERSIONS {
                    local.entry(key.clone()).or_default().add(delta);
                }
            }
        }
        self.record_remote(now_ms, since_ms, deltas);
    }

    /// Adds what another replica's proxies reported (see `release::replicas`): counted in every window and
    /// total, but not in [`TrafficStats::local_totals`].
    pub fn record_remote(&self, now_ms: u64, since_ms: u64, deltas: &[(VersionKey, Delta)]) {
        let mut map = self.lock();
        for (key, delta) in deltas {
            if !map.contains_key(key) {
                if map.len() >= MAX_VERSIONS {
                    tracing::warn!(version = ?key, limit = MAX_VERSIONS, "too many versions reported; ignored");
                    continue;
                }
                let entry = Entry {
                    totals: Totals::default(),
                    seconds: VecDeque::new(),
                    points: VecDeque::new(),
                    last_report_ms: now_ms,
                };
                map.insert(key.clone(), entry);
            }
            let Some(e) = map.get_mut(key) else { continue };
            e.totals.add(delta);
            e.last_report_ms = now_ms;
            spread(&mut e.seconds, since_ms.min(now_ms), now_ms, delta);
            let mergeable = e.points.len() > 1;
            match e.points.back_mut() {
                Some((t, totals)) if mergeable && now_ms.saturating_sub(*t) < POINT_SPACING_MS => {
                    *totals = e.totals.clone();
                    *t = now_ms;
                }
                _ => e.points.push_back((now_ms, e.totals.clone())),
            }
            let start = now_ms.saturating_sub(WINDOW.as_millis() as u64);
            while e.points.len() > 2 && e.points[1].0 <= start {
                e.points.pop_front();
            }
        }
    }

    /// The version's running totals (for analysis, which differences two of them).
    pub fn totals(&self, key: &VersionKey) -> Totals {
        self.lock().get(key).map(|e| e.totals.clone()).unwrap_or_default()
    }

    /// The running totals of this replica's own proxies, per version (what it reports to the other replicas).
    pub fn local_totals(&self) -> Vec<(VersionKey, Totals)> {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.iter().map(|(k, t)| (k.clone(), t.clone())).collect()
    }

    /// Traffic over the last [`WINDOW`] before `now_ms`; `None` when no proxy reported the version in it.
    pub fn window(&self, key: &VersionKey, now_ms: u64) -> Option<WindowStats> {
        let map = self.lock();
        let e = map.get(key)?;
        let start = now_ms.saturating_sub(WINDOW.as_millis() as u64);
        if e.last_report_ms < start {
            return None;
        }
        let base = e.points.iter().rev().find(|(t, _)| *t <= start).or(e.points.front())?;
        let (_, last) = e.points.back()?;
        let latency = last.since(&base.1);
        let secs = WINDOW.as_secs();
        let end = (now_ms / 1000).saturating_sub(SETTLE_SECS); // exclusive
        let (requests, errors) = e
            .seconds
            .iter()
            .filter(|(s, _, _)| *s + secs >= end && *s < end)
            .fold((0.0, 0.0), |(r, x), (_, req, err)| (r + req, x + err));
        let measured = Measured {
            requests: requests.round() as u64,
            success_rate: (requests >= 0.5).then(|| (1.0 - errors / requests).clamp(0.0, 1.0)),
            ..latency
        };
        Some(WindowStats { rps: requests / secs as f64, measured })
    }

    /// Every tracked version, with its window stats (`None`: not reported within the window).
    pub fn all(&self, now_ms: u64) -> Vec<(VersionKey, Option<WindowStats>)> {
        let keys: Vec<VersionKey> = self.lock().keys().cloned().collect();
        keys.into_iter().map(|k| (k.clone(), self.window(&k, now_ms))).collect()
    }

    /// Drops versions not reported for [`FORGET_AFTER`].
    pub fn forget_stale(&self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(FORGET_AFTER.as_millis() as u64);
        let mut map = self.lock();
        map.retain(|_, e| e.last_report_ms >= cutoff);
        self.local.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| map.contains_key(k));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<VersionKey, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `d`'s counts to the seconds of `(from_ms, to_ms]`, each in proportion to its overlap; drops seconds older
/// than [`SECONDS_KEPT`].
fn spread(seconds: &mut VecDeque<(u64, f64, f64)>, from_ms: u64, to_ms: u64, d: &Delta) {
    // A report covering more than the kept history (a proxy silent for long) is squeezed into what is kept.
    let from_ms = from_ms.max(to_ms.saturating_sub(SECONDS_KEPT * 1000));
    let span = to_ms.saturating_sub(from_ms).max(1) as f64;
    let (first, last) = (from_ms / 1000, to_ms.saturating_sub(1).max(from_ms) / 1000);
    for sec in first..=last {
        let overlap = to_ms.min((sec + 1) * 1000).saturating_sub(from_ms.max(sec * 1000)) as f64;
        let share = if from_ms == to_ms { 1.0 } else { overlap / span };
        if share <= 0.0 {
            continue;
        }
        let (req, err) = (d.requests as f64 * share, d.errors as f64 * share);
        match seconds.iter_mut().find(|(s, _, _)| *s == sec) {
            Some(slot) => {
                slot.1 += req;
                slot.2 += err;
            }
            None => {
                let at = seconds.iter().position(|(s, _, _)| *s > sec).unwrap_or(seconds.len());
                seconds.insert(at, (sec, req, err));
            }
        }
    }
    let newest = seconds.back().map_or(0, |(s, _, _)| *s);
    while seconds.front().is_some_and(|(s, _, _)| s + SECONDS_KEPT <= newest) {
        seconds.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(cumulative: &[u64], count: u64) -> Histogram {
        Histogram { bounds: vec![1.0, 10.0, 100.0, 1000.0], cumulative: cumulative.to_vec(), count }
    }

    fn delta(requests: u64, errors: u64) -> Delta {
        Delta { requests, errors, latency: hist(&[0, requests, requests, requests], requests) }
    }

    #[test]
    fn rates_are_differences_of_totals_over_the_window() {
        let stats = TrafficStats::new();
        let v3 = VersionKey::new("default", "reviews", "v3");
        // Two proxies, each reporting 50 requests (5 failed) every second on its own phase.
        for s in 1..30u64 {
            stats.record(s * 1000, s * 1000 - 1000, &[(v3.clone(), delta(50, 5))]);
            stats.record(s * 1000 + 400, s * 1000 - 600, &[(v3.clone(), delta(50, 5))]);
        }
        let w = stats.window(&v3, 29_400).unwrap();
        assert!((w.rps - 100.0).abs() < 1.0, "rps {}", w.rps);
        assert!((w.measured.success_rate.unwrap() - 0.9).abs() < 1e-9);
        let p99 = w.measured.latency_p99_ms.unwrap();
        assert!((1.0..=10.0).contains(&p99), "p99 {p99} lies in the (1, 10] bucket");
        assert_eq!(stats.totals(&v3).requests, 2900);
        assert!(stats.window(&v3, 29_400 + 11_000).is_none(), "silent for longer than the window");
        assert!(stats.lock()[&v3].points.len() <= 2 + (WINDOW.as_millis() as usize / POINT_SPACING_MS as usize));
    }

    #[test]
    fn a_late_flush_is_spread_over_the_seconds_it_covers() {
        let stats = TrafficStats::new();
        let v1 = VersionKey::new("default", "reviews", "v1");
        // 100 requests/s; the proxy stalls once and reports 3 s at 20 s (covering 17..20 s).
        let mut last = 0;
        for t in (1..=17).chain(20..=30).map(|s| s * 1000u64) {
            let n = (t - last) / 10;
            stats.record(t, last, &[(v1.clone(), delta(n, 0))]);
            last = t;
            let w = stats.window(&v1, t + 500).unwrap();
            if t >= 13_000 {
                assert!((w.rps - 100.0).abs() < 0.01, "at {t} ms: {} requests/s", w.rps);
            }
        }
        let mut seconds = VecDeque::new();
        spread(&mut seconds, 1500, 3500, &delta(20, 2));
        assert_eq!(seconds, VecDeque::from([(1, 5.0, 0.5), (2, 10.0, 1.0), (3, 5.0, 0.5)]));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = hist(&[0, 50, 100, 100], 100);
        assert_eq!(h.quantile(0.5), Some(10.0));
        assert_eq!(h.quantile(0.75), Some(55.0));
        assert_eq!(h.quantile(0.99), Some(10.0 + 90.0 * 0.98));
        assert_eq!(hist(&[0, 0, 0, 0], 5).quantile(0.99), Some(1000.0), "above the last bound");
        assert_eq!(hist(&[0, 0, 0, 0], 0).quantile(0.5), None);
    }

    #[test]
    fn stale_versions_are_forgotten_and_the_count_is_capped() {
        let stats = TrafficStats::new();
        let old = VersionKey::new("default", "reviews", "v1");
        stats.record(0, 0, &[(old.clone(), delta(1, 0))]);
        stats.forget_stale(FORGET_AFTER.as_millis() as u64 + 1);
        assert_eq!(stats.totals(&old), Totals::default());
        let many: Vec<_> =
            (0..MAX_VERSIONS + 5).map(|i| (VersionKey::new("ns", "svc", &format!("v{i}")), delta(1, 0))).collect();
        stats.record(1, 0, &many);
        assert_eq!(stats.lock().len(), MAX_VERSIONS);
    }
}
