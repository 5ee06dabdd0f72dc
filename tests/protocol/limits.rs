//! Each xDS limit refuses with a gRPC status naming the count, the limit and its flag; the send queue of a proxy
//! that does not read stays bounded and coalesces to the latest config.

use crate::client::{CDS, Delta, EDS, Sotw, node};
use crate::{bookinfo, publish};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice::model::*;
use sluice::server::{Options, Sluice};
use sluice::xds::{Limits, TypeKind};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Code;

async fn start_with(limits: Limits, model: Model) -> Sluice {
    let s = Sluice::start(Options { limits, ..Options::local() }).await.expect("start sluice");
    s.store().set_model(model);
    s.wait_published(Duration::from_secs(5)).await.expect("published");
    s
}

/// The status a stream ends with.
async fn ended<T: std::fmt::Debug>(rx: &mut tonic::Streaming<T>) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.message()).await.expect("no status within 5 s") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error status"),
            Err(status) => return status,
        }
    }
}

fn assert_status(status: &tonic::Status, code: Code, words: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for w in words {
        assert!(status.message().contains(w), "`{w}` missing in: {}", status.message());
    }
}

#[tokio::test]
async fn streams_past_max_streams_are_refused_and_a_closed_one_frees_its_slot() {
    let s = start_with(Limits { max_streams: 2, ..Limits::default() }, bookinfo()).await;
    let mut a = Sotw::connect(s.xds_addr(), "a").await;
    let _b = Sotw::connect(s.xds_addr(), "b").await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", s.xds_addr())).await.unwrap();
    let err = client.stream_aggregated_resources(tokio_stream::pending()).await.expect_err("third stream refused");
    assert_status(&err, Code::ResourceExhausted, &["2 xDS streams are open", "the limit is 2", "--max-streams"]);
    a.send(CDS, &[], "", "", None).await;
    a.recv().await;
    drop(a);
    let reopened = async {
        loop {
            match client.stream_aggregated_resources(tokio_stream::pending()).await {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reopened).await.expect("a closed stream frees its slot");
    s.shutdown().await;
}

#[tokio::test]
async fn a_request_past_max_request_bytes_ends_the_stream_with_out_of_range() {
    let s = start_with(Limits { max_request_bytes: 2048, ..Limits::default() }, bookinfo()).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", s.xds_addr())).await.unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("cluster-name-{i:04}")).collect();
    let req =
        DiscoveryRequest { node: Some(node("big")), type_url: CDS.into(), resource_names: names, ..Default::default() };
    let mut rx = client
        .stream_aggregated_resources(tokio_stream::StreamExt::chain(tokio_stream::iter([req]), tokio_stream::pending()))
        .await;
    let status = match rx.as_mut() {
        Ok(r) => ended(r.get_mut()).await,
        Err(status) => status.clone(),
    };
    assert_status(&status, Code::OutOfRange, &["too large", "the limit is: 2048 bytes", "--max-request-bytes"]);
    s.shutdown().await;
}

#[tokio::test]
async fn a_response_past_max_response_bytes_ends_the_stream_with_the_reason() {
    let s = start_with(Limits { max_response_bytes: 300, ..Limits::default() }, bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p").await;
    c.send(CDS, &[], "", "", None).await;
    let status = ended(c.stream()).await;
    assert_status(&status, Code::ResourceExhausted, &["cds response is", "the limit is 300", "--max-response-bytes"]);
    s.shutdown().await;
}

#[tokio::test]
async fn too_many_names_in_a_request_or_a_delta_subscription_are_refused() {
    let limits = Limits { max_names_per_request: 3, ..Limits::default() };
    let s = start_with(limits, bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "sotw").await;
    c.send(EDS, &["a", "b", "c", "d"], "", "", None).await;
    let status = ended(c.stream()).await;
    assert_status(
        &status,
        Code::ResourceExhausted,
        &["names 4 resources", "the limit is 3", "--max-names-per-request"],
    );

    // Delta subscriptions add up over requests: each request is within the limit, the subscription is not.
    let mut d = Delta::connect(s.xds_addr(), "delta").await;
    d.subscribe(EDS, &["a", "b"], HashMap::new()).await;
    d.recv().await; // both reported absent
    d.subscribe(EDS, &["c", "d"], HashMap::new()).await;
    let status = ended(d.stream()).await;
    assert_status(&status, Code::ResourceExhausted, &["eds subscription names 4 resources", "the limit is 3"]);
    s.shutdown().await;
}

#[tokio::test]
async fn a_name_past_max_name_bytes_is_refused() {
    let s = start_with(Limits { max_name_bytes: 64, ..Limits::default() }, bookinfo()).await;
    let mut c = Sotw::connect(s.xds_addr(), "p").await;
    let long = "x".repeat(65);
    c.send(EDS, &[&long], "", "", None).await;
    let status = ended(c.stream()).await;
    assert_status(&status, Code::InvalidArgument, &["65 bytes", "the limit is 64", "--max-name-bytes"]);
    s.shutdown().await;
}

/// A model whose CDS response is about `n` × 200 bytes, changed by `round`.
fn many_services(n: usize, round: usize) -> Model {
    let mut m = Model::default();
    for i in 0..n {
        let name = format!("svc-{i:04}-gen-{round}");
        m.insert_service(Service::http("default", &name, 9080));
    }
    m
}

/// A client that ACKs without reading (it guesses the sequential nonces) makes Sluice queue only up to the send
/// queue: the sent version stops following the config, and when the client reads again it gets the latest config
/// after far fewer responses than there were versions.
#[tokio::test]
async fn a_proxy_that_acks_without_reading_gets_a_bounded_queue_then_the_latest_config() {
    let limits = Limits { send_queue: 2, send_queue_bytes: 256 * 1024, ..Limits::default() };
    let s = start_with(limits, many_services(600, 0)).await;
    let mut c = Sotw::connect(s.xds_addr(), "blind").await;
    c.send(CDS, &[], "", "", None).await;
    const VERSIONS: usize = 150;
    for round in 1..=VERSIONS {
        publish(&s, |m| *m = many_services(600, round)).await;
        for nonce in round.saturating_sub(3)..=round + 1 {
            c.send(CDS, &[], "", &nonce.to_string(), None).await;
        }
    }
    let sent = |s: &Sluice| s.registry().get("blind")[0].types[&TypeKind::Cluster].sent.clone();
    let stalled_at = sent(&s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(&s), stalled_at, "nothing more is sent while the proxy does not read");
    // Now read (and ACK properly) until the latest config arrives.
    let latest = format!("svc-0000-gen-{VERSIONS}.default.svc.cluster.local");
    let mut received = 0;
    loop {
        let r = c.recv().await;
        received += 1;
        c.ack(&r, &[]).await;
        if crate::client::names(&r).iter().any(|n| n.ends_with(&latest)) {
            break;
        }
    }
    eprintln!("{received} responses for {VERSIONS} versions");
    assert!(received < VERSIONS / 2, "{received} responses for {VERSIONS} versions: the backlog was not coalesced");
    s.shutdown().await;
}

/// `--max-initial-syncs`: with one place, a second proxy's first config waits while the first proxy holds the
/// place (it never ACKs, so it is never synced), and is sent once that place is given back: 5 s (`gate::HOLD`) at
/// most, so a proxy that stalls cannot hold the others back.
#[tokio::test]
async fn a_first_config_waits_for_a_place_that_a_proxy_never_acking_keeps_for_5_s_at_most() {
    let s = start_with(Limits { max_initial_syncs: 1, ..Limits::default() }, bookinfo()).await;
    let mut a = Sotw::connect(s.xds_addr(), "a").await;
    a.send(CDS, &[], "", "", None).await;
    a.recv().await;
    let asked = std::time::Instant::now();
    let mut b = Sotw::connect(s.xds_addr(), "b").await;
    b.send(CDS, &[], "", "", None).await;
    let early = tokio::time::timeout(Duration::from_secs(3), b.recv()).await;
    assert!(early.is_err(), "b was sent its config while a held the only place");
    tokio::time::timeout(Duration::from_secs(5), b.recv()).await.expect("b's turn came once a's place was freed");
    let waited = asked.elapsed();
    assert!(waited >= sluice::xds::gate::HOLD - Duration::from_millis(500), "b waited only {waited:?}");
    s.shutdown().await;
}

/// 1,500 sidecars connecting at once (a control-plane restart) are all queued for accept, none dropped: beyond the
/// accept backlog the kernel falls back to SYN cookies and later resets connections the client thinks are open.
/// Each connection is opened and left idle while nothing accepts, as when Sluice is busy.
#[tokio::test]
async fn a_connect_storm_beyond_a_thousand_fits_the_accept_backlog() {
    const CLIENTS: usize = 1500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().parse().expect("somaxconn"))
        .expect("read net.core.somaxconn");
    assert!(somaxconn >= CLIENTS, "net.core.somaxconn = {somaxconn} caps every backlog below {CLIENTS}");
    let listener = sluice::server::listen(([127, 0, 0, 1], 0).into()).expect("listen");
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let connect = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr));
        let conn = connect.await.unwrap_or_else(|_| panic!("connection {i} of {CLIENTS} not established within 5 s"));
        clients.push(conn.expect("connect"));
    }
    let mut accepted = 0;
    while let Ok(conn) = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await {
        conn.expect("accept");
        accepted += 1;
    }
    assert_eq!(accepted, CLIENTS, "connections queued for accept (backlog {})", sluice::server::ACCEPT_BACKLOG);
}
