//! Release changes sent to any of three real `sluice serve --kube` replicas (kmock API emulator, a shared
//! `--api-token-file`): a follower forwards them to the leader, which answers only once the change is in the
//! ReleasePolicy status.
//!
//! - 50 weights and verbs sent round-robin to the three replicas, each through one of four clients (REST, the
//!   dashboard's `send()` request with its Origin and `Sec-Fetch-Site: same-origin`, the `sluice release` CLI,
//!   gRPC): every one answers 2xx, applied once and in order. The oracle is the release machine itself (a plan of
//!   manual pauses: a resume applied twice would skip one; weights are distinct), checked in each answer and in
//!   the ReleasePolicy status right after it.
//! - The leader SIGKILLed right after it answered a weight change (sent to a follower) in a timed pause: every
//!   surviving replica and the status keep that weight, a change sent meanwhile reaches the new leader, and the
//!   new leader ends the pause at its stored time and goes on to the end of the plan.

use crate::common;

use bytes::Bytes;
use common::kmock::{Kmock, api, reviews_release};
use common::{SluiceChild, until};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice::proto::release_service_client::ReleaseServiceClient;
use sluice::proto::{ActRequest, ReleaseRef, SetWeightRequest};
use sluice::release::{Record, Verb};
use std::time::{Duration, Instant};

const PATH: &str = "/api/v1/namespaces/default/releases/reviews";
const TOKEN: &str = "replicas-share-this-token";

/// Three replicas sharing a token file, with the ReleasePolicy `reviews` (`spec`) in the emulator.
struct Cluster {
    _kmock: Kmock,
    client: kube::Client,
    dir: tempfile::TempDir,
    replicas: Vec<(String, Option<SluiceChild>)>,
}

impl Cluster {
    async fn start(spec: Value, lease_secs: u64) -> Cluster {
        let kmock = Kmock::start();
        let client = kmock.client().await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        reviews_release(&client, spec).await;
        let flags = ["--api-token-file", token.to_str().unwrap()];
        let mut replicas = Vec::new();
        for id in ["replica-a", "replica-b", "replica-c"] {
            let r = kmock.replica_with(id, lease_secs, dir.path(), &flags).await;
            replicas.push((id.to_string(), Some(r)));
        }
        let cluster = Cluster { _kmock: kmock, client, dir, replicas };
        until("a leader's first status", Duration::from_secs(10), || async {
            cluster.status().await["stepStartedAt"].is_string().then_some(())
        })
        .await;
        cluster
    }

    fn replica(&self, i: usize) -> &SluiceChild {
        self.replicas[i].1.as_ref().expect("a running replica")
    }

    fn running(&self) -> impl Iterator<Item = &SluiceChild> {
        self.replicas.iter().filter_map(|(_, r)| r.as_ref())
    }

    async fn status(&self) -> Value {
        let rp = api(&self.client, "sluice.dev/v1alpha1", "ReleasePolicy").get("reviews").await.expect("policy get");
        rp.data.get("status").cloned().unwrap_or(Value::Null)
    }

    async fn holder(&self) -> Option<String> {
        let lease = api(&self.client, "coordination.k8s.io/v1", "Lease").get("sluice").await.ok()?;
        lease.data["spec"]["holderIdentity"].as_str().map(String::from)
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.dir.path().join("token")
    }
}

/// One REST request to a replica → (status, JSON body).
async fn call(replica: &SluiceChild, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{}{path}", replica.admin));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await.expect("answer").expect("ok");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

/// A weight or verb.
#[derive(Clone, Copy, Debug)]
enum Op {
    Weight(u32),
    Act(Verb),
}

impl Op {
    fn rest(self) -> (String, String) {
        match self {
            Op::Weight(w) => (format!("{PATH}/weight"), json!({ "canaryWeight": w }).to_string()),
            Op::Act(v) => (format!("{PATH}/{}", v.name()), String::new()),
        }
    }

    fn apply(self, oracle: &mut Record) {
        match self {
            Op::Weight(w) => oracle.set_weight(w).expect("the oracle takes the weight"),
            Op::Act(v) => oracle.act(v, 0).expect("the oracle takes the verb"),
        }
    }
}

/// How a change is sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Rest,
    /// Exactly what the dashboard's `send()` sends from a page the replica served.
    Dashboard,
    Cli,
    Grpc,
}

/// (phase, step, canary weight) as an answer tells it.
type Seen = (String, u64, u64);

fn seen_rest(v: &Value) -> Seen {
    let s = &v["status"];
    let weight = s["weights"]["v3"].as_u64().unwrap_or_else(|| panic!("no weight in {v}"));
    (s["phase"].as_str().unwrap().to_string(), s["step"].as_u64().unwrap(), weight)
}

async fn send(cluster: &Cluster, replica: &SluiceChild, via: Via, op: Op) -> Seen {
    let (path, body) = op.rest();
    match via {
        Via::Rest | Via::Dashboard => {
            let mut headers = vec![bearer(), ("accept", "application/json".to_string())];
            if via == Via::Dashboard {
                headers.push(("origin", format!("http://{}", replica.admin)));
                headers.push(("sec-fetch-site", "same-origin".into()));
                headers.push(("sec-fetch-mode", "cors".into()));
            }
            if !body.is_empty() {
                headers.push(("content-type", "application/json".into()));
            }
            let (code, v) = call(replica, "POST", &path, &headers, &body).await;
            assert_eq!(code, 200, "{via:?} {op:?} to {}: {v}", replica.admin);
            seen_rest(&v)
        }
        Via::Cli => {
            let mut args = vec!["release".to_string(), "--server".into(), format!("http://{}", replica.admin)];
            args.extend(["--token-file".into(), cluster.token_file().to_str().unwrap().to_string()]);
            match op {
                Op::Weight(w) => {
                    args.extend(["weight".into(), "reviews".into(), format!("{}.{:02}", w / 100, w % 100)])
                }
                Op::Act(v) => args.extend([v.name().to_string(), "reviews".into()]),
            }
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(&args).output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "sluice {args:?}: {text}");
            // The CLI prints phase and weights; the step is read from the status (stored before the answer).
            let step = cluster.status().await["step"].as_u64().unwrap();
            let phase = text.split("phase ").nth(1).and_then(|t| t.split(',').next()).unwrap_or_default();
            (phase.to_string(), step, cli_weight(&text))
        }
        Via::Grpc => {
            let mut client = ReleaseServiceClient::connect(format!("http://{}", replica.xds)).await.expect("gRPC");
            let r#ref = Some(ReleaseRef { namespace: "default".into(), name: "reviews".into() });
            let answer = match op {
                Op::Weight(w) => client.set_weight(authorized(SetWeightRequest { r#ref, canary_weight: w })).await,
                Op::Act(v) => client.act(authorized(ActRequest { r#ref, verb: proto_verb(v) as i32 })).await,
            };
            let release = answer.unwrap_or_else(|e| panic!("gRPC {op:?} to {}: {e}", replica.xds)).into_inner();
            let s = release.status.expect("status");
            (s.phase, u64::from(s.step), u64::from(s.canary_weight))
        }
    }
}

/// `v3=30.01%` in the CLI's summary → 3001.
fn cli_weight(text: &str) -> u64 {
    let pct = text.split("v3=").nth(1).and_then(|t| t.split('%').next()).expect("v3's weight in the CLI output");
    let (int, frac) = pct.split_once('.').unwrap_or((pct, ""));
    int.parse::<u64>().unwrap() * 100 + format!("{frac:0<2}").parse::<u64>().unwrap()
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

fn proto_verb(v: Verb) -> sluice::proto::Verb {
    match v {
        Verb::Pause => sluice::proto::Verb::Pause,
        Verb::Resume => sluice::proto::Verb::Resume,
        Verb::Promote => sluice::proto::Verb::Promote,
        Verb::Abort => sluice::proto::Verb::Abort,
        Verb::Finalize => sluice::proto::Verb::Finalize,
    }
}

fn oracle_seen(r: &Record) -> Seen {
    (format!("{:?}", r.state.phase), r.state.step as u64, u64::from(r.canary_weight()))
}

fn stored_seen(s: &Value) -> Seen {
    let w = s["weights"]["v3"].as_u64().unwrap_or_default();
    (s["phase"].as_str().unwrap_or_default().to_string(), s["step"].as_u64().unwrap_or_default(), w)
}

/// Cycle of five: a weight, a resume that leaves a manual pause (one step on), a pause, a weight while paused, a
/// resume out of the pause (no step on). Weights are distinct and none is a step's.
fn op(i: usize) -> Op {
    let weight = 101 + 37 * i as u32;
    match i % 5 {
        0 | 3 => Op::Weight(weight),
        1 | 4 => Op::Act(Verb::Resume),
        _ => Op::Act(Verb::Pause),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_changes_sent_round_robin_to_three_replicas_apply_once_and_in_order() {
    // Manual pauses only: nothing moves but the changes sent.
    let steps: Vec<Value> = (1..=12).flat_map(|k| [json!({"setWeight": 500 * k}), json!({"pause": {}})]).collect();
    let spec = json!({"service": "reviews", "stable": "v1", "canary": "v3", "steps": steps});
    let mut oracle = Record::new(sluice::release::api::spec_from_json(spec.to_string().as_bytes()).unwrap(), 0);
    let cluster = Cluster::start(spec, 4).await;
    assert_eq!(stored_seen(&cluster.status().await), oracle_seen(&oracle), "the leader's first status");
    let leader = cluster.holder().await.expect("a lease holder");
    println!("leader: {leader}");

    let vias = [Via::Rest, Via::Dashboard, Via::Cli, Via::Grpc];
    let mut took: Vec<(Via, bool, Duration)> = Vec::new();
    for i in 0..50 {
        let (op, target) = (op(i), i % 3);
        let via = vias[(i / 3) % vias.len()];
        let (id, replica) = (&cluster.replicas[target].0, cluster.replica(target));
        op.apply(&mut oracle);
        let started = Instant::now();
        let answer = send(&cluster, replica, via, op).await;
        took.push((via, *id != leader, started.elapsed()));
        assert_eq!(answer, oracle_seen(&oracle), "#{i} {op:?} via {via:?} to {id}: the answer");
        // Answered only once stored: the status already says so (nothing else moves this release).
        let stored = cluster.status().await;
        assert_eq!(stored_seen(&stored), oracle_seen(&oracle), "#{i} {op:?} via {via:?} to {id}: the status");
    }
    let ms = |forwarded: bool, via: Option<Via>| {
        let t: Vec<f64> = took
            .iter()
            .filter(|(v, f, _)| *f == forwarded && via.is_none_or(|x| x == *v))
            .map(|(_, _, d)| d.as_secs_f64() * 1000.0)
            .collect();
        (t.iter().sum::<f64>() / t.len().max(1) as f64, t.iter().copied().fold(0.0, f64::max), t.len())
    };
    for via in vias {
        let (here, there) = (ms(false, Some(via)), ms(true, Some(via)));
        println!(
            "{via:?}: at the leader {:.1} ms avg (n={}), forwarded {:.1} ms avg, max {:.1} (n={})",
            here.0, here.2, there.0, there.1, there.2
        );
    }
    let (avg, max, n) = ms(true, None);
    println!(
        "every forwarded change: {avg:.1} ms avg, {max:.1} ms max (n={n}); at the leader: {:.1} ms avg",
        ms(false, None).0
    );
    assert!(max < 10_000.0, "a forwarded change took {max} ms");
    // The leader's part of each: from its change applied to the record read back from the status it wrote.
    let waits: Vec<u64> = cluster
        .log(&leader)
        .lines()
        .filter(|l| l.contains("release change stored in the cluster"))
        .filter_map(|l| l.split("waited_ms=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(waits.len(), 50, "the leader stored every change before answering it");
    let avg = waits.iter().sum::<u64>() as f64 / waits.len() as f64;
    println!("hand-over wait at the leader: {avg:.1} ms avg, {} ms max", waits.iter().max().unwrap());

    // Every replica serves the final state.
    for r in cluster.running() {
        until("every replica serves the final state", Duration::from_secs(5), || async {
            let (code, v) = call(r, "GET", PATH, &[bearer()], "").await;
            (code == 200 && seen_rest(&v) == oracle_seen(&oracle)).then_some(())
        })
        .await;
    }
    let followers: Vec<usize> = (0..3).filter(|i| cluster.replicas[*i].0 != leader).collect();
    let follower = cluster.replica(followers[0]);
    // A request already forwarded once is not forwarded again: the follower answers NotLeader itself.
    let (path, body) = Op::Weight(7777).rest();
    let forwarded =
        [bearer(), ("x-sluice-forwarded-by", "replica-z".to_string()), ("content-type", "application/json".into())];
    let (code, v) = call(follower, "POST", &path, &forwarded, &body).await;
    assert_eq!(
        (code, v["reason"].as_str(), v["leader"].as_str()),
        (409, Some("NotLeader"), Some(leader.as_str())),
        "{v}"
    );
    // A wrong token stops at the follower's own guard; a refusal by the leader comes back as the leader said it.
    let (code, v) = call(follower, "POST", &path, &[("authorization", "Bearer nope".into())], &body).await;
    assert_eq!(code, 401, "{v}");
    let (code, v) = call(follower, "POST", &format!("{PATH}/finalize"), &[bearer()], "").await;
    assert_eq!((code, v["reason"].as_str()), (409, Some("Refused")), "{v}");
    let mut grpc = ReleaseServiceClient::connect(format!("http://{}", follower.xds)).await.unwrap();
    let r#ref = Some(ReleaseRef { namespace: "default".into(), name: "reviews".into() });
    let err = grpc.act(authorized(ActRequest { r#ref, verb: sluice::proto::Verb::Finalize as i32 })).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains(&leader), "{err}");
    assert_eq!(stored_seen(&cluster.status().await), oracle_seen(&oracle), "refusals changed nothing");
    let leader_log = cluster.log(&leader);
    assert!(!leader_log.contains("not stored"), "{leader_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_answered_just_before_the_leader_dies_is_kept_and_the_plan_goes_on() {
    const LEASE_SECS: u64 = 3;
    const PAUSE_MS: u64 = 15_000;
    let steps = json!([
        {"setWeight": 1000}, {"pause": {"duration": format!("{PAUSE_MS}ms")}},
        {"setWeight": 5000}, {"pause": {"duration": "1s"}},
        {"setWeight": 8000},
    ]);
    let spec = json!({"service": "reviews", "stable": "v1", "canary": "v3", "steps": steps});
    let mut cluster = Cluster::start(spec, LEASE_SECS).await;
    let leader = cluster.holder().await.expect("a lease holder");
    let l = cluster.replicas.iter().position(|(id, _)| *id == leader).unwrap();
    let (f1, f2) = ((l + 1) % 3, (l + 2) % 3);
    // Every follower knows where the leader is before the test starts timing the kill.
    until("the followers follow the stored step", Duration::from_secs(5), || async {
        let (_, v) = call(cluster.replica(f1), "GET", PATH, &[bearer()], "").await;
        (v["status"]["step"] == 1).then_some(())
    })
    .await;

    let headers = [bearer(), ("content-type", "application/json".to_string())];
    let (path, body) = Op::Weight(3000).rest();
    let sent = Instant::now();
    let (code, v) = call(cluster.replica(f1), "POST", &path, &headers, &body).await;
    let answered = sent.elapsed();
    assert_eq!((code, seen_rest(&v)), (200, ("Progressing".into(), 1, 3000)), "{v}");
    let child = cluster.replicas[l].1.take().unwrap();
    child.kill9();
    println!(
        "weight 3000 forwarded by {} and answered in {answered:?}; leader {leader} killed",
        cluster.replicas[f1].0
    );
    let stored = cluster.status().await;
    assert_eq!(stored_seen(&stored), ("Progressing".into(), 1, 3000), "answered before stored: {stored}");

    // A change sent while no replica leads waits for the new leader (the old one refuses connections).
    let resent = Instant::now();
    let (code, v) = call(cluster.replica(f2), "POST", &path, &headers, &body).await;
    let waited = resent.elapsed();
    assert_eq!((code, seen_rest(&v)), (200, ("Progressing".into(), 1, 3000)), "{v}");
    let next = cluster.holder().await.expect("a new leader");
    assert_ne!(next, leader);
    println!(
        "the same weight, sent to {} right after the kill, answered by the new leader {next} in {waited:?}",
        cluster.replicas[f2].0
    );
    assert!(waited <= Duration::from_secs(2 * LEASE_SECS + 2), "{waited:?}");
    for r in cluster.running() {
        let (_, v) = call(r, "GET", PATH, &[bearer()], "").await;
        assert_eq!(seen_rest(&v), ("Progressing".into(), 1, 3000), "{} after the takeover: {v}", r.admin);
    }
    let started_at = stored["stepStartedAt"].as_str().unwrap().to_string();
    assert_eq!(cluster.status().await["stepStartedAt"], started_at, "the new leader keeps the pause's start");

    // The new leader ends the pause at its stored end and goes on to the end of the plan, on every replica.
    let mut history = vec![];
    let start = Instant::now();
    while history.last().is_none_or(|s: &Seen| s.1 != 5) {
        assert!(start.elapsed() < Duration::from_millis(PAUSE_MS + 10_000), "the plan stopped: {history:?}");
        let s = stored_seen(&cluster.status().await);
        if history.last() != Some(&s) {
            history.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let steps: Vec<(u64, u64)> = history.iter().map(|(_, s, w)| (*s, *w)).collect();
    println!("the status after the takeover: {steps:?}");
    let mut tail = steps.clone();
    tail.dedup();
    assert_eq!(tail.first(), Some(&(1, 3000)));
    assert_eq!(tail.last(), Some(&(5, 8000)), "the end of the plan");
    assert!(tail.windows(2).all(|w| w[0].0 < w[1].0), "steps in order: {tail:?}");
    let end = cluster.status().await;
    assert_eq!(end["phase"], "Progressing", "{end}");
    let ms = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().unwrap().as_millisecond();
    let pause_ran = ms(end["stepStartedAt"].as_str().unwrap()) - ms(&started_at);
    println!("from the timed pause's start to the plan's end: {pause_ran} ms ({PAUSE_MS} ms + 1 s pause)");
    assert!(pause_ran >= (PAUSE_MS + 1000) as i64, "a pause was cut short: {pause_ran} ms");
    assert!(pause_ran < (2 * PAUSE_MS) as i64, "the pause started over: {pause_ran} ms");
    for r in cluster.running() {
        until("every replica at the end of the plan", Duration::from_secs(5), || async {
            let (_, v) = call(r, "GET", PATH, &[bearer()], "").await;
            (seen_rest(&v).1 == 5 && seen_rest(&v).2 == 8000).then_some(())
        })
        .await;
    }
    assert!(cluster.log(&next).contains("leading: going on from the stored release state"));
}
