//! Who drives a release with two real `sluice serve --kube` replicas against the kmock API emulator: the Lease
//! holder steps it; the follower serves the state the holder stored in the ReleasePolicy status (checked through
//! the follower's own REST view), forwards verbs to it (refusing one already forwarded, naming the leader), and,
//! once the leader is frozen (SIGSTOP) and then killed, takes over within the lease duration and goes on from the
//! stored step and step start to the end.

use crate::common;

use bytes::Bytes;
use common::kmock::{Kmock, api, obj};
use common::{SluiceChild, until};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::api::PostParams;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// Lease duration: long enough that the follower's check below (the stored pause's end plus a margin) comes
/// before the frozen leader's lease can expire (its last renewal is at most a third of it before the freeze).
const LEASE_SECS: u64 = 5;
/// The pause the leader is frozen in.
const FROZEN_PAUSE_MS: u64 = 2000;
/// The later pauses, run in full by the new leader.
const PAUSE_MS: u64 = 1000;
const PATH: &str = "/api/v1/namespaces/default/releases/reviews";

/// One request to a replica's admin port → (status, JSON body).
async fn call(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    call_with(admin, method, path, &[], body).await
}

/// [`call`] with `headers` added.
async fn call_with(admin: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.unwrap().expect("answer");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// (step, canary weight) as a replica's REST view shows it (what it serves over xDS).
async fn view(replica: &SluiceChild) -> (u64, u64, String) {
    let (code, v) = call(replica.admin, "GET", PATH, "").await;
    assert_eq!(code, 200, "{v}");
    let s = &v["status"];
    (s["step"].as_u64().unwrap(), s["weights"]["v3"].as_u64().unwrap(), s["phase"].as_str().unwrap().to_string())
}

async fn status(client: &kube::Client) -> Value {
    let rp = api(client, "sluice.dev/v1alpha1", "ReleasePolicy").get("reviews").await.expect("policy get");
    rp.data.get("status").cloned().unwrap_or(Value::Null)
}

async fn lease(client: &kube::Client) -> Value {
    match api(client, "coordination.k8s.io/v1", "Lease").get("sluice").await {
        Ok(l) => l.data["spec"].clone(),
        Err(kube::Error::Api(e)) if e.code == 404 => Value::Null,
        Err(e) => panic!("lease get: {e}"),
    }
}

fn millis(rfc3339: &str) -> u64 {
    let t: k8s_openapi::jiff::Timestamp = rfc3339.parse().expect("an RFC 3339 time");
    t.as_millisecond() as u64
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_steps_the_follower_serves_its_state_and_takes_over_from_the_stored_step() {
    let _serial = crate::serial().await;
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = obj("v1", "Service", "reviews", json!({}), json!({"spec": {"ports": [{"name": "http", "port": 9080}]}}));
    api(&client, "v1", "Service").create(&PostParams::default(), &serde_json::from_value(svc).unwrap()).await.unwrap();
    let pause = |ms: u64| json!({"pause": {"duration": format!("{ms}ms")}});
    let steps = json!([
        {"setWeight": 1000}, {"pause": {}},
        {"setWeight": 2000}, pause(FROZEN_PAUSE_MS),
        {"setWeight": 4000}, pause(PAUSE_MS),
        {"setWeight": 6000}, pause(PAUSE_MS),
        {"setWeight": 8000},
    ]);
    let spec = json!({"spec": {"service": "reviews", "stable": "v1", "canary": "v3", "steps": steps}});
    let mut policy = obj("sluice.dev/v1alpha1", "ReleasePolicy", "reviews", json!({}), spec);
    policy["metadata"]["generation"] = json!(1);
    let policies = api(&client, "sluice.dev/v1alpha1", "ReleasePolicy");
    policies.create(&PostParams::default(), &serde_json::from_value(policy).unwrap()).await.unwrap();

    let a = kmock.replica("replica-a", LEASE_SECS, dir.path()).await;
    until("replica-a holds the lease", Duration::from_secs(5), || async {
        (lease(&client).await["holderIdentity"] == "replica-a").then_some(())
    })
    .await;
    until("the leader's status at the manual pause", Duration::from_secs(5), || async {
        let s = status(&client).await;
        (s["step"] == 1 && s["stepStartedAt"].is_string()).then_some(())
    })
    .await;
    let b = kmock.replica("replica-b", LEASE_SECS, dir.path()).await;
    assert_eq!(view(&b).await, (1, 1000, "Progressing".into()), "the follower serves the stored step");

    // A verb sent to the follower is forwarded to the leader; one already forwarded (marked by a replica) is
    // refused, naming the leader: a replica never forwards twice. A follower names the leader from its first read
    // of the Lease, which may come after it serves the stored step: wait (bounded) for that.
    let forwarded = [("x-sluice-forwarded-by", "replica-z")];
    until("replica-b names the leader", Duration::from_secs(LEASE_SECS), || async {
        let (code, v) = call_with(b.admin, "POST", &format!("{PATH}/resume"), &forwarded, "").await;
        assert_eq!(code, 409, "the follower refuses the forwarded verb: {v}");
        v["leader"].is_string().then_some(())
    })
    .await;
    for (path, body) in [(format!("{PATH}/resume"), ""), (format!("{PATH}/weight"), r#"{"canaryWeight": 5000}"#)] {
        let (code, v) = call_with(b.admin, "POST", &path, &forwarded, body).await;
        assert_eq!((code, v["leader"].as_str(), v["reason"].as_str()), (409, Some("replica-a"), Some("NotLeader")));
        assert!(v["error"].as_str().unwrap().contains("driven by the leading replica replica-a"), "{v}");
    }
    assert_eq!(view(&b).await, (1, 1000, "Progressing".into()), "refused verbs changed nothing");
    let (code, v) = call(b.admin, "POST", &format!("{PATH}/resume"), "").await;
    assert_eq!((code, &v["status"]["step"], &v["status"]["weights"]["v3"]), (200, &json!(3), &json!(2000)), "{v}");

    // Freeze the leader in the timed pause, as soon as its status shows it.
    let stored = until("the leader's status at the timed pause", Duration::from_secs(5), || async {
        let s = status(&client).await;
        (s["step"] == 3).then_some(s)
    })
    .await;
    let pid = a.pid();
    let stop = std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill -STOP");
    assert!(stop.success());
    let frozen = Instant::now();
    let step_started = millis(stored["stepStartedAt"].as_str().unwrap());
    let due = step_started + FROZEN_PAUSE_MS;
    assert!(now_ms() < due, "the leader was frozen after its pause ended (machine too loaded to test this)");
    let renewed = millis(lease(&client).await["renewTime"].as_str().unwrap());
    println!("leader frozen {} ms into its {FROZEN_PAUSE_MS} ms pause", now_ms() - step_started);

    // Past the pause's end, the follower still serves the stored step: it runs no timer of its own.
    until("the follower's view of the stored step", Duration::from_secs(3), || async {
        (view(&b).await == (3, 2000, "Progressing".into())).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis((due + 300).saturating_sub(now_ms()))).await;
    let sampled = now_ms();
    let seen = view(&b).await;
    let b_log = std::fs::read_to_string(dir.path().join("replica-b.log")).unwrap();
    assert!(
        !b_log.contains("leadership changed"),
        "the follower led before the leader's lease ran out (sampled {} ms before it)",
        (renewed + LEASE_SECS * 1000) as i64 - sampled as i64
    );
    assert_eq!(seen, (3, 2000, "Progressing".into()), "the follower stepped on its own");

    // The follower takes the lease once the frozen leader's runs out, and goes on from the stored step: the
    // pause that ended meanwhile ends at once (step 5, 4000), then each later pause runs in full.
    let (took, mut history) = until("replica-b leads", Duration::from_secs(2 * LEASE_SECS + 2), || async {
        let v = view(&b).await;
        (lease(&client).await["holderIdentity"] == "replica-b").then(|| (frozen.elapsed(), vec![(Instant::now(), v)]))
    })
    .await;
    println!("replica-b took the lease {took:?} after the leader froze (lease {LEASE_SECS} s)");
    assert!(took <= Duration::from_millis(LEASE_SECS * 1000 * 4 / 3 + 1000), "took {took:?}");
    a.kill9();
    let start = Instant::now();
    while history.last().is_none_or(|(_, v)| v.0 != 9) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the release did not reach the end of its plan: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let v = view(&b).await;
        if history.last().map(|(_, last)| last) != Some(&v) {
            history.push((Instant::now(), v));
        }
    }
    let steps: Vec<(u64, u64)> = history.iter().map(|(_, (s, w, _))| (*s, *w)).collect();
    println!("follower-turned-leader view: {steps:?}");
    assert!(steps.first().is_some_and(|s| s.0 >= 3), "restarted below the stored step: {steps:?}");
    let mut tail: Vec<(u64, u64)> = steps.iter().copied().filter(|s| s.0 > 3).collect();
    tail.dedup();
    assert_eq!(tail, [(5, 4000), (7, 6000), (9, 8000)], "every step, in order");
    // The new leader stored every step; a verb on it applies and is stored too.
    let end = until("the new leader's status at the end of the plan", Duration::from_secs(5), || async {
        let s = status(&client).await;
        (s["step"] == 9 && s["weights"]["v3"] == 8000).then_some(s)
    })
    .await;
    // By the stored times (no polling noise): the two later pauses ran in full after the takeover, and the frozen
    // pause, already over, did not start again (that would add FROZEN_PAUSE_MS).
    let acquired = millis(lease(&client).await["acquireTime"].as_str().unwrap());
    let ended = millis(end["stepStartedAt"].as_str().unwrap()) - acquired;
    println!("the plan ended {ended} ms after replica-b acquired the lease (two {PAUSE_MS} ms pauses)");
    assert!(ended >= 2 * PAUSE_MS, "pauses cut short: {ended} ms");
    assert!(ended < 2 * PAUSE_MS + FROZEN_PAUSE_MS, "the stored pause started over: {ended} ms");
    let (code, v) = call(b.admin, "POST", &format!("{PATH}/promote"), "").await;
    assert_eq!((code, v["status"]["phase"].as_str()), (200, Some("Promoted")), "{v}");
    until("the Promoted status", Duration::from_secs(5), || async {
        let s = status(&client).await;
        (s["phase"] == "Promoted" && s["weights"]["v3"] == 10000).then_some(())
    })
    .await;
}
