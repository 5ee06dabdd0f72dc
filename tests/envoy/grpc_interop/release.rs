//! The grayscale release with a proxyless gRPC client as the only proxy: 0% → 20% → promote → finalize, each step
//! "applied" when release status counts the client as holding it (the gate a release waits on), no call failing.

use super::fixture::{self, Backends};
use crate::common::assert_share;
use crate::common::interop::failed;
use sluice::model::ObjectKey;
use sluice::release::{ReleaseView, Verb};
use sluice::server::Sluice;
use std::time::{Duration, Instant};

fn key() -> ObjectKey {
    ObjectKey::new("default", "echo-v3")
}

/// Waits until release status counts every connected proxy (here: the gRPC client) as holding the current step.
async fn applied(sluice: &Sluice, what: &str) -> ReleaseView {
    let started = Instant::now();
    loop {
        let view = sluice.releases().get(&key()).expect("release echo-v3");
        let p = &view.status.proxies;
        if p.total == 1 && p.acked == 1 {
            return view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: the gRPC client is not counted: {:?}",
            view.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_a_grpc_client_steps_promotes_and_finalizes() {
    let backends = Backends::start(&["v1", "v3"]);
    let policy = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: echo-v3}\n\
                  spec: {service: echo, stable: v1, canary: v3}\n";
    let sluice = fixture::sluice(&format!("{}{policy}", backends.yaml("echo"))).await;
    let client = fixture::client(&sluice, "release", 100, &[]).await;
    fixture::until(&client, 50, Duration::from_secs(20), "calls answered", |s| s.num_failures == 0).await;
    applied(&sluice, "0%").await;
    let at_zero = client.stats(200, 10).await;
    assert_eq!(at_zero.rpcs_by_peer.get("v1").copied(), Some(200), "0%: all on v1: {at_zero:?}");
    let failed_before = failed(&client.accumulated().await, "UNARY_CALL");

    sluice.releases().set_weight(&key(), 2000).expect("20%");
    applied(&sluice, "20%").await;
    let split = client.stats(1000, 30).await;
    let v3 = split.rpcs_by_peer.get("v3").copied().unwrap_or(0) as usize;
    assert_share("v3 at 20%", v3, 1000, 0.2);

    sluice.releases().act(&key(), Verb::Promote).expect("promote");
    applied(&sluice, "promote").await;
    let promoted = client.stats(200, 10).await;
    assert_eq!(promoted.rpcs_by_peer.get("v3").copied(), Some(200), "promoted: all on v3: {promoted:?}");

    sluice.releases().act(&key(), Verb::Finalize).expect("finalize");
    let done = applied(&sluice, "finalize").await;
    assert_eq!(done.status.phase, sluice::model::Phase::Finalized, "{:?}", done.status);
    let finalized = client.stats(200, 10).await;
    assert_eq!(finalized.rpcs_by_peer.get("v3").copied(), Some(200), "finalized: all on v3: {finalized:?}");
    assert_eq!(failed(&client.accumulated().await, "UNARY_CALL"), failed_before, "no call failed from 0% to finalize");
    sluice.shutdown().await;
}
