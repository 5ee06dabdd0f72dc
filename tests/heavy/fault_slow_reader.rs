//! Fault: proxies that stop reading do not slow the others, and Sluice's memory stays bounded.
//!
//! ```text
//!  sluice serve (child; 400 services) ◀── 10 proxies that read and ACK: time from a config edit to their CDS ACK
//!                                     ◀── 8 proxies that subscribe and never read
//!                                     ◀── 1 proxy that ACKs nonces it guesses, without reading (fills the queue)
//! ```
//! Update delivery is measured for the readers before and while the others stall; the child's RSS is sampled.

use crate::common;

use common::SluiceChild;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice::bench::proxy::{self, Mode, Recorder};
use sluice::xds::TypeKind;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SERVICES: usize = 400;
const READERS: usize = 10;
const STALLED: usize = 8;

/// `SERVICES` services with one workload each; `round` renames one, so every edit changes CDS.
fn config(round: usize) -> String {
    let mut out = String::new();
    for i in 0..SERVICES {
        let name = if i == 0 { format!("svc-edit-{round}") } else { format!("svc-{i:04}") };
        out += &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  \
             ports: [{{name: http, port: 9080}}]\n---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\n\
             metadata: {{name: {name}-v1, labels: {{app: {name}, version: v1}}}}\n\
             spec: {{address: 127.0.0.1, ports: {{http: {}}}}}\n---\n",
            20_000 + i
        );
    }
    out
}

/// Edits the config and returns how long until every reader ACKed a new CDS.
async fn deliver(file: &Path, round: usize, rec: &Recorder) -> Duration {
    let before = rec.now();
    let started = Instant::now();
    std::fs::write(file, config(round)).expect("write config");
    loop {
        let cds = TypeKind::Cluster.index();
        if rec.slots()[..READERS].iter().all(|s| s.acked[cds].load(Ordering::Acquire) > before) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "round {round}: readers not updated within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A SotW proxy that never reads, but ACKs nonces it guesses (Sluice's are sequential), so the one-response-in-
/// flight rule does not hold it back: only the send queue bounds what Sluice holds for it.
async fn blind_acker(channel: Channel) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut node = proxy::node(9_999, false);
    node.id = "blind-acker".into();
    let first =
        DiscoveryRequest { node: Some(node), type_url: TypeKind::Cluster.type_url().into(), ..Default::default() };
    tx.send(first).await.expect("queue first request");
    let _stream = client.stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    for round in 1u64.. {
        for nonce in round.saturating_sub(4)..=round + 4 {
            let ack = DiscoveryRequest {
                type_url: TypeKind::Cluster.type_url().into(),
                response_nonce: nonce.to_string(),
                ..Default::default()
            };
            if tx.send(ack).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_that_stop_reading_do_not_slow_the_others_and_memory_stays_bounded() {
    let _serial = crate::serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("services.yaml");
    std::fs::write(&file, config(0)).expect("write config");
    let [xds, admin] = common::free_addrs();
    let server = SluiceChild::start(&file, xds, admin, dir.path().join("sluice.log"), &[]).await;
    let channel = || Channel::from_shared(format!("http://{xds}")).expect("uri").connect_lazy();

    let rec = Recorder::new(READERS + STALLED);
    let mut tasks = Vec::new();
    for i in 0..READERS {
        let mode = if i % 2 == 0 { Mode::Delta } else { Mode::Sotw };
        tasks.push(tokio::spawn(proxy::run(channel(), i, mode, rec.clone(), false, false)));
    }
    let synced = Instant::now();
    while rec.slots()[..READERS].iter().any(|s| s.synced.load(Ordering::Acquire) == 0) {
        assert!(synced.elapsed() < Duration::from_secs(20), "readers not synced in 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut alone = Vec::new();
    for round in 1..=3 {
        alone.push(deliver(&file, round, &rec).await);
    }

    // Now the proxies that stop reading, each on its own connection (as separate Envoys would be).
    for i in READERS..READERS + STALLED {
        let mode = if i % 2 == 0 { Mode::Delta } else { Mode::Sotw };
        tasks.push(tokio::spawn(proxy::run(channel(), i, mode, rec.clone(), true, false)));
    }
    let blind = tokio::spawn(blind_acker(channel()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = server.rss_kib();
    let mut stalled = Vec::new();
    for round in 4..=15 {
        stalled.push(deliver(&file, round, &rec).await);
    }
    let rss_end = server.rss_kib();

    let worst = |d: &[Duration]| d.iter().max().copied().unwrap_or_default();
    let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len() as u32;
    println!(
        "update delivery to {READERS} readers: alone mean {:?} worst {:?}; beside {STALLED} stalled proxies and a \
         blind ACKer mean {:?} worst {:?}; sluice RSS {} KiB → {} KiB over {} edits",
        mean(&alone),
        worst(&alone),
        mean(&stalled),
        worst(&stalled),
        rss_start,
        rss_end,
        stalled.len()
    );
    assert!(worst(&stalled) < Duration::from_secs(5), "an update took {:?} to reach the readers", worst(&stalled));
    assert!(rss_end < rss_start + 64 * 1024, "sluice grew from {rss_start} KiB to {rss_end} KiB while proxies stalled");
    blind.abort();
    tasks.iter().for_each(|t| t.abort());
    drop(server);
}
