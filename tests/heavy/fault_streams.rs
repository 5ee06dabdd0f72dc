//! Faults across many streams: 1,000 proxies reconnecting at once to a restarted Sluice all converge; a proxy that
//! NACKs every config does not stop a real Envoy from getting updates.

use crate::client;
use crate::common;

use common::{Backend, free_port, load, start_envoy};
use sluice::bench::proxy::{self, Mode, Recorder};
use sluice::model::*;
use sluice::server::{Options, Sluice};
use sluice::xds::TypeKind;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const PROXIES: usize = 1000;
const CONNECTIONS: usize = 50;

fn many_services(n: usize, port_base: u16) -> Model {
    let mut m = Model::default();
    for i in 0..n {
        let name = format!("svc-{i:03}");
        let svc = m.insert_service(Service::http("default", &name, 9080));
        let ep = Endpoint::ready(&format!("{name}-v1"), "127.0.0.1", 9080, port_base + i as u16)
            .with_label("app", &name)
            .with_label("version", "v1");
        m.push_endpoint(&svc, ep);
    }
    m
}

async fn start_on(xds: SocketAddr, model: Model) -> Sluice {
    let s = Sluice::start(Options { xds_addr: xds, admin_addr: None, ..Options::local() }).await.expect("start");
    s.store().set_model(model);
    s.wait_published(Duration::from_secs(10)).await.expect("published");
    s
}

/// Waits until `n` streams are connected and synced to the current snapshot; returns how long it took.
async fn wait_all_synced(s: &Sluice, n: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    let version = s.wait_published(timeout).await.expect("published");
    loop {
        let list = s.registry().list();
        let synced = list.iter().filter(|p| p.synced_version == Some(version)).count();
        if synced == n && list.len() == n {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{synced} of {n} synced ({} connected) after {timeout:?}", list.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_proxies_reconnecting_at_once_all_converge() {
    let _serial = crate::serial().await;
    let xds: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("xds address");
    let first = start_on(xds, many_services(20, 20_000)).await;
    let channels: Vec<Channel> =
        (0..CONNECTIONS).map(|_| Channel::from_shared(format!("http://{xds}")).expect("uri").connect_lazy()).collect();
    let rec = Recorder::new(PROXIES);
    let tasks: Vec<_> = (0..PROXIES)
        .map(|i| {
            let (channel, rec) = (channels[i % CONNECTIONS].clone(), rec.clone());
            let mode = if i % 2 == 0 { Mode::Delta } else { Mode::Sotw };
            tokio::spawn(async move {
                // Like Envoy: when the stream ends, connect again (after a short back-off).
                loop {
                    let _ = proxy::run(channel.clone(), i, mode, rec.clone(), false, false).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        })
        .collect();
    let took = wait_all_synced(&first, PROXIES, Duration::from_secs(60)).await;
    println!("{PROXIES} proxies over {CONNECTIONS} connections synced in {took:?}");

    let cds = |s: &Sluice| -> Vec<usize> {
        s.registry().list().iter().map(|p| p.types[&TypeKind::Cluster].resources).collect()
    };
    let before = cds(&first)[0];
    // Restart: every stream ends at once; the new server (same port, a changed config) takes them all back.
    first.shutdown().await;
    let restarted = Instant::now();
    let second = start_on(xds, many_services(21, 21_000)).await;
    let took = wait_all_synced(&second, PROXIES, Duration::from_secs(90)).await;
    println!("{PROXIES} simultaneous reconnects converged on the new config {took:?} after the restart");
    // One more service: one more cluster (all its endpoints; nothing routes to a version) on every proxy.
    assert!(cds(&second).iter().all(|n| *n == before + 1), "not every proxy holds the new config's clusters");
    println!("restart to convergence: {:?}", restarted.elapsed());
    tasks.iter().for_each(|t| t.abort());
    second.shutdown().await;
}

/// `reviews` served by backend `to` only, and `round` extra services (so each round changes CDS and EDS).
fn routed_to(to: u16, round: usize) -> Model {
    let mut m = Model::default();
    let svc = m.insert_service(Service::http("default", "reviews", 9080));
    let ep =
        Endpoint::ready("reviews-v1", "127.0.0.1", 9080, to).with_label("app", "reviews").with_label("version", "v1");
    m.push_endpoint(&svc, ep);
    for i in 0..round {
        m.insert_service(Service::http("default", &format!("extra-{i}"), 9080));
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_nacking_everything_does_not_stop_envoy_getting_updates() {
    let _serial = crate::serial().await;
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let s = Sluice::start(Options::local()).await.expect("start");
    s.store().set_model(routed_to(backends[0].port(), 0));
    s.wait_published(Duration::from_secs(5)).await.expect("published");

    // Two proxies that reject every response they get, one per wire protocol.
    let mut sotw = client::Sotw::connect(s.xds_addr(), "nacker-sotw").await;
    sotw.send(client::CDS, &[], "", "", None).await;
    let r = sotw.recv().await;
    sotw.send(client::CDS, &[], "", &r.nonce, Some("rejected by test")).await;
    let mut delta = client::Delta::connect(s.xds_addr(), "nacker-delta").await;
    delta.subscribe(client::CDS, &[], HashMap::new()).await;
    let r = delta.recv().await;
    delta.reply(&r, Some("rejected by test")).await;

    let (envoy, listen) = start_envoy(s.xds_addr(), "envoy-ok", false).await;
    s.wait_acked("envoy-ok", Duration::from_secs(10)).await.expect("Envoy synced");
    for round in 1..=4 {
        let to = &backends[round % 2];
        s.store().set_model(routed_to(to.port(), round));
        s.wait_acked("envoy-ok", Duration::from_secs(10)).await.expect("Envoy gets the update");
        let batch = load(listen, "reviews", 100, 4).await;
        assert_eq!((batch.of(to.name()), batch.errors, batch.non_2xx), (100, 0, 0), "round {round}: {batch:?}");
        // The NACKers are sent the new config too, and NACK it again.
        let r = sotw.recv().await;
        sotw.send(client::CDS, &[], "", &r.nonce, Some("rejected by test")).await;
        let r = delta.recv().await;
        delta.reply(&r, Some("rejected by test")).await;
    }
    for id in ["nacker-sotw", "nacker-delta"] {
        let status = &s.registry().get(id)[0].types[&TypeKind::Cluster];
        let nack = status.last_nack.as_ref().unwrap_or_else(|| panic!("{id}: no NACK recorded"));
        assert_eq!(nack.reason, "rejected by test");
        assert_eq!(status.acked, None, "{id} never accepted anything");
    }
    drop(envoy);
    s.shutdown().await;
}
