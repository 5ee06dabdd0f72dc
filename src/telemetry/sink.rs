//! Envoy's MetricsService stats sink (`envoy.service.metrics.v3.MetricsService/StreamMetrics`), served on the
//! xDS port. `sluice bootstrap` points every proxy's `envoy.stat_sinks.metrics_service` here.
//!
//! What Envoy 1.40 sends with the bootstrap's settings, once per `stats_flush_interval` (1 s): one
//! `StreamMetricsMessage` (the node in the first one only) holding Prometheus `MetricFamily`s named by the full
//! stat name (`cluster.outbound|9080|v3|reviews.default.svc.cluster.local.upstream_rq_total`, tags not split
//! out), only for stats the proxy has used and the bootstrap's `stats_matcher` keeps:
//! - counters `upstream_rq_total`, `upstream_rq_5xx` as deltas since the last flush (`report_counters_as_deltas`);
//! - the histogram `upstream_rq_time` (ms) as cumulative buckets since the proxy started (`histogram_emit_mode:
//!   HISTOGRAM`); this task keeps each cluster's previous buckets to difference them, and drops them when the
//!   stream ends.
//!
//! Each metric carries the time Envoy took the snapshot (`timestamp_ms`); a flush's deltas are placed between the
//! previous snapshot and this one (`span`), not between arrivals, so a flush that reaches a busy Sluice late
//! still counts in the seconds its requests were made.

use super::stats::{Delta, Histogram, TrafficStats, VersionKey};
use crate::translate::parse_outbound_subset;
use crate::xds::limits::{Limits, Peer, StreamSlots};
use crate::xds::trust::Trust;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::{MetricsService, MetricsServiceServer};
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use envoy_types::pb::io::prometheus::client::MetricFamily;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status, Streaming};

/// Stat names (after the cluster name) that the sink reads; the bootstrap's stats matcher keeps only these.
pub const REQUESTS: &str = "upstream_rq_total";
pub const ERRORS: &str = "upstream_rq_5xx";
pub const LATENCY: &str = "upstream_rq_time";

/// The bootstrap's `stats_flush_interval`: what a stream's first flush is taken to cover.
const FLUSH_INTERVAL_MS: u64 = 1000;

/// Most clusters whose histogram one stream remembers.
const MAX_CLUSTERS_PER_PROXY: usize = 10_000;
/// Buckets a latency histogram may have (Envoy's default has 20); one with more is ignored, so a stream's
/// memory stays bounded (~MAX_CLUSTERS_PER_PROXY x MAX_BUCKETS counters).
const MAX_BUCKETS: usize = 64;

/// The tonic service; one task per proxy stream.
#[derive(Clone)]
pub struct Sink {
    stats: TrafficStats,
    /// The xDS streams' slots: a stats stream counts against `--max-streams` and `--max-streams-per-peer` too.
    slots: StreamSlots,
    limits: Limits,
    /// On the mTLS port: streams are counted per certificate identity.
    trust: Option<Arc<Trust>>,
}

impl Sink {
    pub fn server(
        stats: TrafficStats,
        slots: StreamSlots,
        limits: Limits,
        trust: Option<Arc<Trust>>,
    ) -> MetricsServiceServer<Sink> {
        MetricsServiceServer::new(Sink { stats, slots, limits, trust })
    }
}

/// How late a flush may reach this task after Envoy took its snapshot before the snapshot's time is distrusted
/// (taken for a proxy clock that differs from this host's rather than a slow delivery).
const MAX_DELIVERY_MS: u64 = 10_000;
/// How far ahead of this host's clock a snapshot time may be and still be read (as the arrival time).
const MAX_AHEAD_MS: u64 = 1_000;

/// The time Envoy took a flush's snapshot: the `timestamp_ms` it sets, the same, on every metric of the flush
/// (so the first set one is read, not every metric on this per-flush path).
fn snapshot_ms(families: &[MetricFamily]) -> Option<u64> {
    let mut stamps = families.iter().flat_map(|f| &f.metric);
    stamps.find_map(|m| m.timestamp_ms.filter(|t| *t > 0)).map(|t| t as u64)
}

/// `(since, at)`: the span a flush's counter deltas cover, from the previous flush's snapshot to this one's, so
/// counts land in the seconds Envoy counted them even when the flush reaches Sluice late (a busy control plane,
/// a slow network). Without a plausible snapshot time (none, over [`MAX_AHEAD_MS`] ahead, or over
/// `MAX_DELIVERY_MS` behind: a proxy clock unlike this host's), the arrival time stands in.
fn span(snapshot: Option<u64>, arrival: u64, previous: Option<u64>) -> (u64, u64) {
    let at = snapshot
        .filter(|t| *t <= arrival + MAX_AHEAD_MS && arrival.saturating_sub(*t) <= MAX_DELIVERY_MS)
        .map_or(arrival, |t| t.min(arrival));
    let since = previous.filter(|p| *p <= at).unwrap_or(at.saturating_sub(FLUSH_INTERVAL_MS));
    (since, at)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let identity = match &self.trust {
            Some(t) => Some(t.peer(&request)?.identity.to_string()),
            None => None,
        };
        let _slot = self.slots.acquire(&self.limits, Peer::of(identity.as_deref(), request.remote_addr()))?;
        let mut inbound = request.into_inner();
        let mut proxy = ProxyState::default();
        let mut node = String::new();
        // When this stream's previous flush was taken: a flush's counter deltas cover the time since.
        let mut last_ms: Option<u64> = None;
        while let Some(msg) = inbound.message().await? {
            if let Some(id) = msg.identifier.as_ref().and_then(|i| i.node.as_ref()) {
                node = id.id.clone();
                tracing::debug!(proxy = %node, "stats stream opened");
            }
            let deltas = proxy.read(&msg.envoy_metrics);
            let (since, at) = span(snapshot_ms(&msg.envoy_metrics), now_ms(), last_ms);
            if !deltas.is_empty() {
                self.stats.record(at, since, &deltas);
            }
            last_ms = Some(at);
        }
        tracing::debug!(proxy = %node, "stats stream closed");
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

/// What one stream remembers between flushes: each cluster's cumulative latency buckets.
#[derive(Default)]
pub struct ProxyState {
    latency: HashMap<String, Histogram>,
}

impl ProxyState {
    /// Turns one flush into per-version deltas (ports of one version summed).
    pub fn read(&mut self, families: &[MetricFamily]) -> Vec<(VersionKey, Delta)> {
        let mut out: BTreeMap<VersionKey, Delta> = BTreeMap::new();
        for family in families {
            let Some((cluster, stat)) = family.name.as_deref().and_then(split_stat) else { continue };
            let Some((ns, service, version)) = parse_outbound_subset(cluster) else { continue };
            let Some(metric) = family.metric.first() else { continue };
            let key = VersionKey::new(ns, service, version);
            match stat {
                REQUESTS | ERRORS => {
                    let value = metric.counter.as_ref().and_then(|c| c.value).unwrap_or(0.0);
                    let value = if value.is_finite() && value > 0.0 { value as u64 } else { 0 };
                    let d = out.entry(key).or_default();
                    if stat == REQUESTS { d.requests += value } else { d.errors += value }
                }
                LATENCY => {
                    let Some(h) = metric.histogram.as_ref().filter(|h| h.bucket.len() <= MAX_BUCKETS) else {
                        continue;
                    };
                    let now = Histogram {
                        bounds: h.bucket.iter().map(|b| b.upper_bound.unwrap_or(f64::INFINITY)).collect(),
                        cumulative: h.bucket.iter().map(|b| b.cumulative_count.unwrap_or(0)).collect(),
                        count: h.sample_count.unwrap_or(0),
                    };
                    if let Some(delta) = self.latency_delta(cluster, now) {
                        let d = out.entry(key).or_default();
                        if d.latency.count == 0 {
                            d.latency = delta;
                        } else {
                            merge(&mut d.latency, &delta);
                        }
                    }
                }
                _ => {}
            }
        }
        out.into_iter().collect()
    }

    /// The buckets since this cluster's previous flush; `None` the first time (the baseline) or when full.
    fn latency_delta(&mut self, cluster: &str, now: Histogram) -> Option<Histogram> {
        if !self.latency.contains_key(cluster) && self.latency.len() >= MAX_CLUSTERS_PER_PROXY {
            return None;
        }
        let prev = self.latency.insert(cluster.to_string(), now.clone())?;
        if prev.bounds != now.bounds || prev.count > now.count {
            return None; // other buckets, or counters restarted: this flush is the new baseline
        }
        let cumulative = now.cumulative.iter().zip(&prev.cumulative).map(|(a, b)| a.saturating_sub(*b)).collect();
        Some(Histogram { bounds: now.bounds, cumulative, count: now.count - prev.count })
    }
}

fn merge(into: &mut Histogram, other: &Histogram) {
    if into.bounds == other.bounds {
        into.cumulative.iter_mut().zip(&other.cumulative).for_each(|(a, b)| *a += b);
        into.count += other.count;
    }
}

/// `cluster.<NAME>.<stat>` → `(NAME, stat)`; cluster names hold dots, the stat names read here do not.
fn split_stat(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix("cluster.")?.rsplit_once('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::io::prometheus::client::{Bucket, Counter, Histogram as PHistogram, Metric};

    const V3: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";

    fn counter(cluster: &str, stat: &str, value: f64) -> MetricFamily {
        let metric =
            Metric { counter: Some(Counter { value: Some(value), ..Default::default() }), ..Default::default() };
        MetricFamily { name: Some(format!("cluster.{cluster}.{stat}")), metric: vec![metric], ..Default::default() }
    }

    fn histogram(cluster: &str, cumulative: &[u64]) -> MetricFamily {
        let bucket = [1.0, 10.0, 100.0]
            .iter()
            .zip(cumulative)
            .map(|(b, c)| Bucket { upper_bound: Some(*b), cumulative_count: Some(*c), ..Default::default() })
            .collect();
        let h = PHistogram { sample_count: cumulative.last().copied(), bucket, ..Default::default() };
        let metric = Metric { histogram: Some(h), ..Default::default() };
        MetricFamily { name: Some(format!("cluster.{cluster}.{LATENCY}")), metric: vec![metric], ..Default::default() }
    }

    #[test]
    fn a_flush_becomes_per_version_deltas_and_histograms_are_differenced() {
        let mut proxy = ProxyState::default();
        let v4 = "outbound|9081|v3|reviews.default.svc.cluster.local";
        let flush = |rq: f64, h: &[u64]| {
            vec![
                counter(V3, REQUESTS, rq),
                counter(V3, ERRORS, 2.0),
                counter(v4, REQUESTS, 1.0),
                counter("outbound|9080||reviews.default.svc.cluster.local", REQUESTS, 99.0),
                counter("sluice-xds", REQUESTS, 7.0),
                histogram(V3, h),
            ]
        };
        let first = proxy.read(&flush(10.0, &[1, 5, 10]));
        let key = VersionKey::new("default", "reviews", "v3");
        assert_eq!(first.len(), 1, "ports of one version are summed; other clusters ignored");
        assert_eq!((first[0].0.clone(), first[0].1.requests, first[0].1.errors), (key.clone(), 11, 2));
        assert_eq!(first[0].1.latency.count, 0, "the first histogram is the baseline");
        let second = proxy.read(&flush(5.0, &[2, 9, 15]));
        assert_eq!(second[0].1.requests, 6);
        assert_eq!(second[0].1.latency.cumulative, vec![1, 4, 5]);
        let restarted = proxy.read(&flush(1.0, &[0, 1, 1]));
        assert_eq!(restarted[0].1.latency.count, 0, "a shrinking histogram is a new baseline");
    }

    #[test]
    fn a_flush_covers_the_time_since_the_previous_snapshot_by_envoys_clock() {
        let stamped = |t: i64| {
            let metric = Metric { timestamp_ms: Some(t), ..Default::default() };
            vec![MetricFamily { metric: vec![metric], ..Default::default() }]
        };
        assert_eq!(snapshot_ms(&stamped(5_000)), Some(5_000));
        assert_eq!(snapshot_ms(&stamped(0)), None, "unset");
        assert_eq!(snapshot_ms(&[]), None);
        // Delivered 3 s late (a busy control plane): the counts stay in the second Envoy counted them.
        assert_eq!(span(Some(20_000), 23_000, Some(19_000)), (19_000, 20_000));
        // The first flush covers one flush interval.
        assert_eq!(span(Some(20_000), 20_005, None), (19_000, 20_000));
        // Slightly ahead (clocks a few ms apart): read as the arrival time.
        assert_eq!(span(Some(20_400), 20_000, Some(19_000)), (19_000, 20_000));
        // A proxy clock far off either way, or no stamp: the arrival time, as before.
        assert_eq!(span(Some(60_000), 20_000, Some(19_000)), (19_000, 20_000));
        assert_eq!(span(Some(1_000), 20_000, Some(19_000)), (19_000, 20_000));
        assert_eq!(span(None, 20_000, Some(19_000)), (19_000, 20_000));
        // A previous snapshot after this one (the clock stepped back): one interval.
        assert_eq!(span(Some(20_000), 20_000, Some(21_000)), (19_000, 20_000));
    }

    #[test]
    fn stat_names_split_at_the_last_dot() {
        assert_eq!(split_stat(&format!("cluster.{V3}.upstream_rq_total")), Some((V3, "upstream_rq_total")));
        assert_eq!(split_stat("server.uptime"), None);
    }
}
