//! The MetricsService sink over real gRPC, with tonic clients playing Envoy's stats sink: counters arrive as
//! deltas and add up across proxies; cumulative latency histograms are differenced per stream, so a proxy that
//! restarts (a new stream whose histogram starts again from zero) neither loses nor double-counts samples; a
//! stream that ends leaves nothing behind but the totals.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use envoy_types::pb::io::prometheus::client::{Bucket, Counter, Histogram, Metric, MetricFamily};
use sluice::server::{Options, Sluice};
use sluice::telemetry::VersionKey;
use std::time::Duration;

const V3: &str = "cluster.outbound|9080|v3|reviews.default.svc.cluster.local";

fn counter(stat: &str, value: f64) -> MetricFamily {
    let metric = Metric { counter: Some(Counter { value: Some(value), ..Default::default() }), ..Default::default() };
    MetricFamily { name: Some(format!("{V3}.{stat}")), metric: vec![metric], ..Default::default() }
}

/// Samples at or below 1, 10 and 100 ms (cumulative), as Envoy's `computedBuckets`.
fn latency(cumulative: [u64; 3]) -> MetricFamily {
    let bucket = [1.0, 10.0, 100.0]
        .into_iter()
        .zip(cumulative)
        .map(|(b, c)| Bucket { upper_bound: Some(b), cumulative_count: Some(c), ..Default::default() })
        .collect();
    let h = Histogram { sample_count: Some(cumulative[2]), bucket, ..Default::default() };
    let metric = Metric { histogram: Some(h), ..Default::default() };
    MetricFamily { name: Some(format!("{V3}.upstream_rq_time")), metric: vec![metric], ..Default::default() }
}

fn flush(node: &str, requests: f64, errors: f64, hist: [u64; 3]) -> StreamMetricsMessage {
    let node = Node { id: node.into(), ..Default::default() };
    StreamMetricsMessage {
        identifier: Some(Identifier { node: Some(node) }),
        envoy_metrics: vec![counter("upstream_rq_total", requests), counter("upstream_rq_5xx", errors), latency(hist)],
    }
}

/// One proxy's stream: sends `flushes`, then ends (as Envoy does when it stops).
async fn stream(sluice: &Sluice, flushes: Vec<StreamMetricsMessage>) {
    let mut client = MetricsServiceClient::connect(format!("http://{}", sluice.xds_addr())).await.expect("connect");
    client.stream_metrics(tokio_stream::iter(flushes)).await.expect("the sink accepts the stream");
}

#[tokio::test]
async fn deltas_add_up_across_proxies_and_restarts_start_a_new_histogram_baseline() {
    let sluice = Sluice::start(Options::local()).await.expect("start");
    let key = VersionKey::new("default", "reviews", "v3");
    // Proxy a: 100 + 50 requests; its histogram's first flush is the baseline, the second adds 50 samples ≤ 10 ms.
    stream(&sluice, vec![flush("a", 100.0, 10.0, [60, 100, 100]), flush("a", 50.0, 0.0, [60, 150, 150])]).await;
    // Proxy b: 20 requests, then it restarts: the new stream's histogram starts from zero again.
    stream(&sluice, vec![flush("b", 20.0, 2.0, [0, 0, 20])]).await;
    stream(&sluice, vec![flush("b", 5.0, 0.0, [1, 1, 5]), flush("b", 30.0, 0.0, [1, 1, 35])]).await;

    tokio::time::sleep(Duration::from_millis(50)).await;
    let totals = sluice.traffic().totals(&key);
    assert_eq!((totals.requests, totals.errors), (205, 12), "every delta counted once");
    assert_eq!(totals.latency.count, 80, "50 samples from a, 30 from b after its restart; baselines not counted");
    assert_eq!(totals.latency.cumulative, vec![0, 50, 80]);
    let p50 = totals.latency.quantile(0.5).expect("p50");
    assert!((1.0..=10.0).contains(&p50), "p50 {p50} ms lies in (1, 10]");
}
