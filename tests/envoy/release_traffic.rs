//! Release traffic features measured through a real Envoy 1.40 (bootstrapped by `sluice bootstrap --listen`):
//! stickiness (a client stays on the version it first landed on) and mirroring (copies reach the canary, answers
//! come from the stable version only).
//!
//! ```text
//!  test clients (own cookie jars) ──▶ Envoy :listen ──▶ Backend v1 / Backend v3 (in-process, counting)
//!                                        ▲ ADS (Delta)
//!  Model built in code ──▶ Sluice ───────┘
//! ```

use crate::common;

use common::http::{Client, client, get_response, load};
use common::{Backend, CookieJar, Envoy, start_envoy};
use futures::StreamExt;
use sluice::model::*;
use sluice::server::{Options, Sluice};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const COOKIE: &str = "sluice-reviews";
const NODE: &str = "envoy-release";

/// reviews (port 9080) with one v1 and one v3 workload and a v1 → v3 policy with `traffic`.
fn reviews_model(v1: u16, v3: u16, traffic: Traffic) -> Model {
    let mut m = Model::default();
    let port =
        ServicePort { name: "http".into(), port: 9080, target_port: TargetPort::Number(9080), app_protocol: None };
    let key = ObjectKey::new("default", "reviews");
    let service =
        Service { name: "reviews".into(), namespace: "default".into(), ports: vec![port], ..Default::default() };
    m.services.insert(key.clone(), service);
    let ep = |version: &str, p: u16| Endpoint {
        name: format!("reviews-{version}"),
        address: "127.0.0.1".into(),
        ports: BTreeMap::from([(9080, p)]),
        labels: BTreeMap::from([("app".into(), "reviews".into()), ("version".into(), version.into())]),
        ready: true,
        terminating: false,
        service_account: None,
    };
    m.endpoints.insert(key, vec![ep("v1", v1), ep("v3", v3)]);
    let spec = ReleasePolicySpec {
        service: "reviews".into(),
        stable: "v1".into(),
        canary: "v3".into(),
        traffic,
        ..Default::default()
    };
    spec.validate().expect("the test's policy is valid");
    let policy =
        ReleasePolicy { name: "reviews-v3".into(), namespace: "default".into(), spec, state: Default::default() };
    m.policies.insert(ObjectKey::new("default", "reviews-v3"), policy);
    m
}

fn sticky(canary_weight: u32) -> Traffic {
    let stickiness = Some(Stickiness { cookie: COOKIE.into(), ttl: None });
    Traffic { canary_weight, stickiness, ..Default::default() }
}

fn mirrored(percent: u32) -> Traffic {
    Traffic { canary_weight: 0, mirror: Some(Mirror { percent }), ..Default::default() }
}

struct Mesh {
    sluice: Sluice,
    envoy: Envoy,
    listen: SocketAddr,
    v1: Backend,
    v3: Backend,
}

impl Mesh {
    async fn start(traffic: Traffic) -> Mesh {
        let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
        let sluice = Sluice::start(Options::local()).await.expect("start");
        sluice.store().set_model(reviews_model(v1.port(), v3.port(), traffic));
        let (envoy, listen) = start_envoy(sluice.xds_addr(), NODE, false).await;
        sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the config");
        Mesh { sluice, envoy, listen, v1, v3 }
    }

    /// Replaces the policy's traffic and waits until Envoy holds the new routes.
    async fn set_traffic(&self, traffic: Traffic) {
        self.sluice.store().set_model(reviews_model(self.v1.port(), self.v3.port(), traffic));
        self.sluice.wait_acked(NODE, Duration::from_secs(10)).await.expect("Envoy ACKs the new config");
    }

    async fn stop(self) {
        drop(self.envoy);
        self.sluice.shutdown().await;
    }
}

/// What one simulated browser saw: the version of each answer, and the cookies set along the way.
#[derive(Debug)]
struct Visit {
    versions: Vec<String>,
    set: Vec<(String, String)>,
}

/// `n` sequential requests from one browser with its own jar: cookies set by a response go with the next request.
async fn browse(http: &Client, listen: SocketAddr, mut jar: CookieJar, n: usize) -> Visit {
    let mut visit = Visit { versions: Vec::new(), set: Vec::new() };
    for _ in 0..n {
        // Another cookie before ours: the sticky match must find one whole cookie anywhere in the header.
        let cookie = format!("theme=dark; {}", jar.header().unwrap_or_default());
        let resp = get_response(http, listen, "reviews", "/", &[("cookie", &cookie)]).await.expect("request");
        assert_eq!(resp.status, 200, "{resp:?}");
        visit.set.extend(jar.store(&resp.headers));
        visit.versions.push(resp.body);
    }
    visit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_clients_stay_on_their_first_version() {
    let started = Instant::now();
    let m = Mesh::start(sticky(5000)).await;
    let http = client();
    let (clients, requests) = (100, 20);
    let visits: Vec<Visit> = futures::stream::iter(0..clients)
        .map(|_| browse(&http, m.listen, CookieJar::default(), requests))
        .buffer_unordered(16)
        .collect()
        .await;

    let mut clients_on: BTreeMap<String, usize> = BTreeMap::new();
    for visit in &visits {
        let first = &visit.versions[0];
        assert!(visit.versions.iter().all(|v| v == first), "a client switched versions: {visit:?}");
        // The split pinned it once, to the version that answered; the sticky route sets nothing more.
        assert_eq!(visit.set, [(COOKIE.to_string(), first.clone())], "{visit:?}");
        *clients_on.entry(first.clone()).or_default() += 1;
    }
    println!("clients per version: {clients_on:?}");
    for version in ["v1", "v3"] {
        let n = clients_on.get(version).copied().unwrap_or(0);
        assert!((30..=70).contains(&n), "{version} has {n} of {clients} clients at a 50% split: {clients_on:?}");
    }
    assert_eq!((m.v1.count() + m.v3.count()) as usize, clients * requests);

    // Weights lowered: with the canary at 0 there is no sticky route to v3, so a client pinned to v3 falls
    // through to the split, lands on v1 and is re-pinned there.
    m.set_traffic(sticky(0)).await;
    let visit = browse(&http, m.listen, CookieJar::with(COOKIE, "v3"), 20).await;
    assert!(visit.versions.iter().all(|v| v == "v1"), "a v3 cookie at canary weight 0 gets v1: {visit:?}");
    assert_eq!(visit.set, [(COOKIE.to_string(), "v1".to_string())], "{visit:?}");

    m.stop().await;
    println!("took {:?}", started.elapsed());
}

/// The backend's request count once it stops moving (mirrored copies arrive after the answers).
async fn settled_count(backend: &Backend) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = backend.count();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = backend.count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_copies_reach_the_canary_but_only_stable_answers() {
    let started = Instant::now();
    let m = Mesh::start(mirrored(100)).await;

    let n = 500;
    let all = load(m.listen, "reviews", n, 8).await;
    assert_eq!((all.errors, all.non_2xx), (0, 0), "{all:?}");
    assert_eq!(all.of("v1"), n, "every answer comes from v1, never from the mirror: {all:?}");
    let copies = settled_count(&m.v3).await;
    println!("mirror 100%: {copies} copies of {n}");
    assert!(copies >= 450, "mirror 100% copies ~every request to v3: {copies} of {n}");

    m.set_traffic(mirrored(50)).await;
    let before = settled_count(&m.v3).await;
    let n = 1000;
    let half = load(m.listen, "reviews", n, 8).await;
    assert_eq!(half.of("v1"), n, "{half:?}");
    let copies = settled_count(&m.v3).await - before;
    let share = copies as f64 / n as f64;
    println!("mirror 50%: {copies} copies of {n}");
    assert!((0.35..=0.65).contains(&share), "mirror 50% copies 35-65% of requests: {copies} of {n}");

    m.stop().await;
    println!("took {:?}", started.elapsed());
}
