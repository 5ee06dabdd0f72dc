//! NACK containment with a real Envoy 1.40: a rule Envoy refuses (a regex RE2 cannot compile, set through the
//! library, which skips validation) freezes nothing. Envoy NACKs the route configuration that holds every service;
//! Sluice finds the refused virtual host, keeps only that one at Envoy's last good version, and every other
//! change goes on: a weight change and an abort of another release reach Envoy within 2 s. The refused release's
//! status names what was refused and why, CSDS reports it, and a fixed policy clears it.

use crate::common;

use common::http::{client, get_with};
use common::{Backend, start_envoy};
use sluice::model::{Model, ObjectKey, Rule, RuleMatch, StringMatch, Target};
use sluice::release::Verb;
use sluice::server::{Options, Sluice};
use sluice::source;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn service(name: &str, v1: u16, v3: u16) -> String {
    let mut yaml = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  \
         ports: [{{name: http, port: 9080}}]\n---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\n\
         metadata: {{name: {name}-v3}}\nspec: {{service: {name}, stable: v1, canary: v3, traffic: {{canaryWeight: 0}}}}\n"
    );
    for (v, port) in [("v1", v1), ("v3", v3)] {
        yaml.push_str(&format!(
            "---\napiVersion: sluice.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}-{v}, labels: {{app: \
             {name}, version: {v}}}}}\nspec: {{address: 127.0.0.1, ports: {{http: {port}}}}}\n"
        ));
    }
    yaml
}

/// The bodies of `n` requests to `host` (each backend answers its name).
async fn answers(listen: SocketAddr, host: &str, n: usize) -> Vec<String> {
    let http = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, body) = get_with(&http, listen, host, "/", &[]).await.expect("an answer");
        assert_eq!(status, 200, "{host}: {body}");
        out.push(body);
    }
    out
}

/// Polls until 20 requests in a row to `host` all reach `backend`; returns how long that took (panics past 10 s).
async fn until_all(listen: SocketAddr, host: &str, backend: &str) -> Duration {
    let started = Instant::now();
    loop {
        if answers(listen, host, 20).await.iter().all(|b| b == backend) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{host} never moved to {backend}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_rule(model: &Model, regex: &str) -> Model {
    let mut m = model.clone();
    let policy = m.policies.get_mut(&ObjectKey::new("default", "reviews-v3")).expect("policy");
    let header = StringMatch { name: "x-user".into(), regex: Some(regex.into()), ..Default::default() };
    let matches = RuleMatch { headers: vec![header], ..Default::default() };
    policy.spec.traffic.rules = vec![Rule { name: "testers".into(), to: Target::Canary, matches }];
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rule_is_contained_and_other_releases_go_on_delta() {
    contained("envoy-contain-delta", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rule_is_contained_and_other_releases_go_on_sotw() {
    contained("envoy-contain-sotw", true).await;
}

async fn contained(node: &str, sotw: bool) {
    let backends = [
        Backend::start("reviews-v1").await,
        Backend::start("reviews-v3").await,
        Backend::start("ratings-v1").await,
        Backend::start("ratings-v3").await,
    ];
    let ports: Vec<u16> = backends.iter().map(Backend::port).collect();
    let yaml = format!("{}{}", service("reviews", ports[0], ports[1]), service("ratings", ports[2], ports[3]));
    let good = source::parse_str(&yaml, "mesh.yaml").expect("config");
    let sluice = Sluice::start(Options::local()).await.expect("start");
    sluice.store().set_model(good.clone());
    let (_envoy, listen) = start_envoy(sluice.xds_addr(), node, sotw).await;
    sluice.wait_acked(node, Duration::from_secs(20)).await.expect("Envoy ACKs the config");

    // The library path takes the model as given: a look-ahead RE2 refuses reaches translation.
    sluice.store().set_model(with_rule(&good, "(?=jason).*"));
    let reviews = ObjectKey::new("default", "reviews-v3");
    let started = Instant::now();
    let refused = loop {
        let view = sluice.releases().get(&reviews).expect("reviews-v3");
        if let Some(c) = view.status.conditions.iter().find(|c| c.kind == "Refused") {
            break c.message.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no Refused condition: {:?}", view.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("reviews-v3 Refused: {refused}");
    assert!(refused.contains(node) && refused.contains("reviews.default.svc.cluster.local:9080"), "{refused}");
    assert!(refused.contains("invalid perl operator"), "with Envoy's reason: {refused}");
    let view = sluice.releases().get(&reviews).unwrap();
    assert_eq!(view.status.proxies.acked, 0, "the proxy does not hold reviews' current routes");
    assert!(
        answers(listen, "reviews", 20).await.iter().all(|b| b == "reviews-v1"),
        "reviews keeps its last good routes"
    );

    // Another release moves on, within 2 s each time.
    let ratings = ObjectKey::new("default", "ratings-v3");
    sluice.releases().set_weight(&ratings, 10_000).expect("weight");
    let took = until_all(listen, "ratings", "ratings-v3").await;
    println!("ratings-v3 at 100% reached Envoy after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    sluice.releases().act(&ratings, Verb::Abort).expect("abort");
    let took = until_all(listen, "ratings", "ratings-v1").await;
    println!("ratings-v3 abort reached Envoy after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let ratings_view = sluice.releases().get(&ratings).unwrap();
    let p = &ratings_view.status.proxies;
    assert_eq!((p.acked, p.total), (1, 1), "the other release counts the proxy as ACKed: {p:?}");

    // CSDS (and `sluice proxy-status`) report the held-back route configuration as an error with the reason.
    let status = &sluice.registry().get(node)[0];
    let refusals: Vec<String> = status.refused().map(|(_, r)| r.unit.to_string()).collect();
    assert_eq!(refusals, ["sluice-listen (virtual host reviews.default.svc.cluster.local:9080)"]);

    // A policy without the bad rule reaches Envoy, and the refusal clears.
    sluice.store().set_model(with_rule(&good, "jason"));
    sluice.wait_acked(node, Duration::from_secs(5)).await.expect("the fixed policy is ACKed");
    let view = sluice.releases().get(&reviews).unwrap();
    assert!(!view.status.conditions.iter().any(|c| c.kind == "Refused"), "{:?}", view.status.conditions);
    let http = client();
    let (_, body) = get_with(&http, listen, "reviews", "/", &[("x-user", "jason")]).await.expect("answer");
    assert_eq!(body, "reviews-v3", "the fixed rule applies");
    sluice.shutdown().await;
}
