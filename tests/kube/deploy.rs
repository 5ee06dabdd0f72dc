//! Release tasks that deploy, against the kmock API emulator (`tests/common/kmock.rs`): `spec.deploy` creates the
//! canary's Deployment as a copy of the stable one, `status.rollout` follows it as the test plays the Deployment
//! controller (pods, EndpointSlices, Deployment status), the canary gets no weight before it has ready endpoints,
//! and `spec.finalize.loser` scales or deletes the loser only once the proxies no longer route to it.
//!
//! - `deploy_then_promote_finalize_scales_the_stable_after_envoy_acked`: a real Envoy; it is stopped (SIGSTOP, by
//!   PID) across the finalize, so the scale-down must wait for its ACK; nothing else in the namespace changes.
//! - `finalize_with_delete_deletes_the_stable`, `abort_scales_the_canary_to_zero`,
//!   `abort_with_delete_deletes_the_canary_and_never_recreates_it`: the other actions (no proxy connected: nothing
//!   to wait for), and a second Deployment task (a new leader) repeats nothing.
//! - `a_follower_writes_no_deployment_until_it_leads`: without the lease, no Deployment write.

use crate::common;

use common::kmock::{Kmock, api, create, obj, patch, resource_version};
use common::{Backend, Envoy, captured_log, load, start_envoy};
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sluice::server::{Options, Sluice};
use sluice::source::kube::DEPLOY_TICK;
use sluice::store::Store;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Generous bound for anything the Deployment task does: a few of its ticks, on a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

/// The Deployment controller's part: the Deployment's status says how many replicas are updated and ready.
async fn deployment_status(client: &kube::Client, name: &str, ready: i32) {
    let p = json!({"metadata": {"resourceVersion": resource_version()},
                   "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": ready}});
    let a = api(client, "apps/v1", "Deployment");
    a.patch_status(name, &PatchParams::default(), &Patch::Merge(p)).await.expect("deployment status");
}

async fn get(client: &kube::Client, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    match api(client, api_version, kind).get(name).await {
        Ok(o) => Some(serde_json::to_value(o).unwrap()),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("get {kind} {name}: {e}"),
    }
}

async fn deployment(client: &kube::Client, name: &str) -> Option<Value> {
    get(client, "apps/v1", "Deployment", name).await
}

async fn status(client: &kube::Client) -> Value {
    let p = get(client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews").await.expect("the policy");
    p.get("status").cloned().unwrap_or(Value::Null)
}

/// Polls `check` every 100 ms until it returns `Some`, failing after [`BOUND`] with `what` and the last status.
async fn until<T>(client: &kube::Client, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(start.elapsed() < BOUND, "{what}: not within {BOUND:?}; status: {:#}", status(client).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

pub(crate) fn pod(name: &str, app: &str, version: &str) -> Value {
    obj("v1", "Pod", name, json!({"app": app, "version": version}), json!({"spec": {"containers": []}}))
}

/// An EndpointSlice of Service reviews with one endpoint per pod, all at `port` on 127.0.0.1.
pub(crate) fn slice(name: &str, port: u16, pods: &[&str], ready: bool) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| {
            json!({"addresses": ["127.0.0.1"], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "name": p, "namespace": "default"}})
        })
        .collect();
    obj(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        name,
        json!({"kubernetes.io/service-name": "reviews"}),
        json!({"addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}], "endpoints": endpoints}),
    )
}

pub(crate) fn deployment_of(name: &str, app: &str, version: &str, image: &str) -> Value {
    let labels = json!({"app": app, "version": version});
    obj(
        "apps/v1",
        "Deployment",
        name,
        labels.clone(),
        json!({"spec": {"replicas": 2, "selector": {"matchLabels": labels},
               "template": {"metadata": {"labels": labels, "annotations": {"sidecar.istio.io/inject": "false"}},
                            "spec": {"containers": [{"name": app, "image": image, "ports": [{"containerPort": 9080}]},
                                                    {"name": "proxy", "image": "envoyproxy/envoy:v1.40"}]}}},
               "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}}),
    )
}

/// Service reviews: selector app=reviews, port 9080 (`http`).
pub(crate) fn reviews_service() -> Value {
    obj(
        "v1",
        "Service",
        "reviews",
        json!({"app": "reviews"}),
        json!({"spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": 9080}]}}),
    )
}

const POLICY_UID: &str = "0b6c3cc2-5d7e-4f1a-9a40-4c1d2b7e9f00";

/// The cluster: Service reviews (selector app=reviews), its stable Deployment reviews-v1 with two ready pods, an
/// unrelated Deployment ratings-v1 (also `version: v1`), and the policy with `deploy` and `finalize`.
async fn cluster(client: &kube::Client, v1_port: u16, finalize: Value) {
    create(client, reviews_service()).await;
    create(client, deployment_of("reviews-v1", "reviews", "v1", "istio/examples-bookinfo-reviews-v1:1.20")).await;
    create(client, deployment_of("ratings-v1", "ratings", "v1", "istio/examples-bookinfo-ratings-v1:1.20")).await;
    for p in ["reviews-v1-a", "reviews-v1-b"] {
        create(client, pod(p, "reviews", "v1")).await;
    }
    create(client, slice("reviews-v1", v1_port, &["reviews-v1-a", "reviews-v1-b"], true)).await;
    let spec = json!({"service": "reviews", "stable": "v1", "canary": "v3", "traffic": {"canaryWeight": 2000},
                      "deploy": {"images": {"reviews": "istio/examples-bookinfo-reviews-v3:1.20"}},
                      "finalize": finalize});
    let mut policy = obj("sluice.dev/v1alpha1", "ReleasePolicy", "reviews", json!({}), json!({"spec": spec}));
    policy["metadata"]["generation"] = json!(1);
    policy["metadata"]["uid"] = json!(POLICY_UID);
    create(client, policy).await;
}

/// Sets `spec.action` as a GitOps edit would (a new generation).
async fn act(client: &kube::Client, action: &str, generation: i64) {
    let p = json!({"metadata": {"generation": generation}, "spec": {"action": action}});
    patch(client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews", p).await;
}

/// Sluice in process, watching the emulator, leading: the status writer and the Deployment task run.
pub(crate) struct Running {
    pub(crate) sluice: Sluice,
    _stop: watch::Sender<bool>,
    pub(crate) leading: watch::Sender<bool>,
}

async fn sluice(kmock: &Kmock) -> Running {
    sluice_leading(kmock, true).await
}

pub(crate) async fn sluice_leading(kmock: &Kmock, leads: bool) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    let watching = sluice::source::kube::start(kmock.client().await, &[], store.clone(), stop_rx.clone());
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    let (leading, leader) = watch::channel(leads);
    let releases = sluice.releases().clone();
    let deploy = sluice::source::kube::manage_deployments(
        kmock.client().await,
        releases.clone(),
        watching.observed.clone(),
        watching.owners,
        leader.clone(),
        stop_rx.clone(),
    );
    tokio::spawn(deploy);
    tokio::spawn(sluice::source::kube::write_status(
        kmock.client().await,
        releases,
        watching.observed,
        leader,
        stop_rx,
    ));
    tokio::time::timeout(BOUND, sluice.store().wait_ready()).await.expect("every kind listed");
    Running { sluice, _stop: stop, leading }
}

/// Every object of the kinds the test cluster holds, by `Kind/name`, for a before/after comparison.
async fn everything(client: &kube::Client) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for (v, k) in
        [("v1", "Service"), ("v1", "Pod"), ("discovery.k8s.io/v1", "EndpointSlice"), ("apps/v1", "Deployment")]
    {
        for o in api(client, v, k).list(&ListParams::default()).await.expect("list").items {
            out.insert(format!("{k}/{}", o.metadata.name.clone().unwrap()), serde_json::to_value(o).unwrap());
        }
    }
    out
}

fn signal(envoy: &Envoy, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &envoy.pid().to_string()]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {}", envoy.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_then_promote_finalize_scales_the_stable_after_envoy_acked() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    cluster(&client, v1.port(), json!({"loser": "ScaleToZero"})).await;
    let before = everything(&client).await;
    let running = sluice(&kmock).await;
    let (envoy, listen): (Envoy, SocketAddr) = start_envoy(running.sluice.xds_addr(), "envoy-1", false).await;

    // The copy: name, labels, selector, pod template, image (only the named container's), replicas, owner.
    let started = Instant::now();
    let canary = until(&client, "canary Deployment created", async || deployment(&client, "reviews-v3").await).await;
    println!("canary Deployment seen {:?} after Envoy was up", started.elapsed());
    assert_eq!(canary["metadata"]["labels"], json!({"app": "reviews", "version": "v3"}));
    assert_eq!(canary["spec"]["selector"]["matchLabels"], json!({"app": "reviews", "version": "v3"}));
    assert_eq!(canary["spec"]["template"]["metadata"]["labels"], json!({"app": "reviews", "version": "v3"}));
    let images: Vec<&Value> =
        canary["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().map(|c| &c["image"]).collect();
    assert_eq!(images, [&json!("istio/examples-bookinfo-reviews-v3:1.20"), &json!("envoyproxy/envoy:v1.40")]);
    assert_eq!(canary["spec"]["replicas"], 2, "the stable's count");
    let owner = &canary["metadata"]["ownerReferences"];
    assert_eq!(
        owner,
        &json!([{"apiVersion": "sluice.dev/v1alpha1", "kind": "ReleasePolicy", "name": "reviews",
                  "uid": POLICY_UID, "controller": true}])
    );

    // No ready canary pod: status shows the rollout waiting and the weight held at 0, with the reason.
    // The rollout and the release's weights reach status in separate writes: wait for both.
    let s = until(&client, "rollout and weights in status", async || {
        let s = status(&client).await;
        (s["rollout"]["deployment"] == "reviews-v3" && s["weights"].is_object()).then_some(s)
    })
    .await;
    assert_eq!(
        (s["rollout"]["replicas"].as_i64(), s["rollout"]["readyReplicas"].as_i64()),
        (Some(2), Some(0)),
        "{s:#}"
    );
    assert_eq!(condition(&s["rollout"]["conditions"], "RolledOut").unwrap()["status"], "False", "{s:#}");
    assert_eq!(s["weights"], json!({"v1": 10000, "v3": 0}), "{s:#}");
    assert_eq!(condition(&s["conditions"], "CanaryWeightHeld").unwrap()["reason"], "CanaryNotReady", "{s:#}");
    let c = load(listen, "reviews", 200, 4).await;
    assert_eq!((c.of("v1"), c.errors), (200, 0), "{c:?}");

    // Pods created, not ready yet; then one ready replica; then both (the test plays the Deployment controller).
    for p in ["reviews-v3-a", "reviews-v3-b"] {
        create(&client, pod(p, "reviews", "v3")).await;
    }
    create(&client, slice("reviews-v3", v3.port(), &["reviews-v3-a", "reviews-v3-b"], false)).await;
    deployment_status(&client, "reviews-v3", 1).await;
    let s = until(&client, "one ready replica in status", async || {
        let s = status(&client).await;
        (s["rollout"]["readyReplicas"] == 1).then_some(s)
    })
    .await;
    assert_eq!(s["weights"]["v3"], 0, "endpoints not ready: no weight: {s:#}");
    assert_eq!(
        condition(&s["rollout"]["conditions"], "RolledOut").unwrap()["message"],
        "1 of 2 replicas ready, 2 updated"
    );
    let p = json!({"endpoints": [
        {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "reviews-v3-a"}},
        {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "reviews-v3-b"}}]});
    patch(&client, "discovery.k8s.io/v1", "EndpointSlice", "reviews-v3", p).await;
    deployment_status(&client, "reviews-v3", 2).await;
    let s = until(&client, "rolled out with weight", async || {
        let s = status(&client).await;
        let done = condition(&s["rollout"]["conditions"], "RolledOut").is_some_and(|c| c["status"] == "True");
        (done && s["weights"]["v3"] == 2000 && s["proxies"]["acked"] == 1).then_some(s)
    })
    .await;
    assert!(condition(&s["conditions"], "CanaryWeightHeld").is_none(), "{s:#}");
    let c = load(listen, "reviews", 400, 4).await;
    assert!(c.of("v3") > 0 && c.of("v1") > 0 && c.errors == 0, "{c:?}");

    // Promote: nothing is scaled (the stable may not lose before finalize).
    act(&client, "Promote", 2).await;
    until(&client, "promoted and ACKed", async || {
        let s = status(&client).await;
        (s["phase"] == "Promoted" && s["proxies"]["acked"] == 1).then_some(())
    })
    .await;
    // Finalize while Envoy cannot ACK (stopped): the stable keeps its replicas, and status says why.
    signal(&envoy, "-STOP");
    act(&client, "Finalize", 3).await;
    let s = until(&client, "finalized, loser waiting", async || {
        let s = status(&client).await;
        let waiting =
            condition(&s["rollout"]["conditions"], "Loser").is_some_and(|c| c["reason"] == "WaitingForProxies");
        (s["phase"] == "Finalized" && waiting).then_some(s)
    })
    .await;
    assert_eq!(
        s["rollout"]["loser"],
        json!({"version": "v1", "deployment": "reviews-v1", "action": "ScaleToZero", "done": false})
    );
    tokio::time::sleep(2 * DEPLOY_TICK).await;
    assert_eq!(deployment(&client, "reviews-v1").await.unwrap()["spec"]["replicas"], 2, "scaled before Envoy ACKed");
    // Envoy resumes, ACKs the config without v1: only then is the stable scaled to zero.
    signal(&envoy, "-CONT");
    let resumed = Instant::now();
    until(&client, "stable scaled to zero", async || {
        (deployment(&client, "reviews-v1").await?["spec"]["replicas"] == 0).then_some(())
    })
    .await;
    println!("stable scaled to zero {:?} after Envoy resumed (tick {DEPLOY_TICK:?})", resumed.elapsed());
    let dump = envoy.admin_get("/config_dump").await;
    assert!(!dump.contains("outbound|9080|v1|reviews"), "Envoy still holds v1 when it was scaled down");
    let s = until(&client, "loser done in status", async || {
        let s = status(&client).await;
        (s["rollout"]["loser"]["done"] == true).then_some(s)
    })
    .await;
    assert_eq!(condition(&s["rollout"]["conditions"], "Loser").unwrap()["reason"], "ScaledToZero");

    // Nothing else changed: the canary was added, the stable's replicas set to 0, and the rest is as it was.
    let mut after = everything(&client).await;
    assert!(after.remove("Deployment/reviews-v3").is_some());
    for name in ["reviews-v3", "reviews-v3-a", "reviews-v3-b"] {
        after.remove(&format!("EndpointSlice/{name}"));
        after.remove(&format!("Pod/{name}"));
    }
    after.get_mut("Deployment/reviews-v1").unwrap()["spec"]["replicas"] = json!(2);
    assert_eq!(after, before, "objects the policy does not name were changed");
    drop(envoy);
}

/// Runs a release to its end without proxies and returns once `done` holds of the Deployments.
async fn without_proxies(finalize: Value, verbs: &[&str]) -> (Kmock, kube::Client, Running) {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    cluster(&client, 9, finalize).await;
    let running = sluice(&kmock).await;
    until(&client, "canary Deployment created", async || deployment(&client, "reviews-v3").await).await;
    for (i, verb) in verbs.iter().enumerate() {
        act(&client, verb, 2 + i as i64).await;
    }
    (kmock, client, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_with_delete_deletes_the_stable() {
    let log = captured_log();
    let (kmock, client, _running) = without_proxies(json!({"loser": "Delete"}), &["Promote", "Finalize"]).await;
    until(&client, "stable deleted", async || deployment(&client, "reviews-v1").await.is_none().then_some(())).await;
    assert!(deployment(&client, "reviews-v3").await.is_some(), "the winner stays");
    assert!(deployment(&client, "ratings-v1").await.is_some(), "another app's v1 stays");
    let s = until(&client, "loser done", async || {
        let s = status(&client).await;
        (s["rollout"]["loser"]["done"] == true).then_some(s)
    })
    .await;
    assert_eq!(condition(&s["rollout"]["conditions"], "Loser").unwrap()["reason"], "Deleted", "{s:#}");
    // A second replica taking over repeats nothing: the canary exists (owned), the stable is gone.
    let again = sluice(&kmock).await;
    tokio::time::sleep(2 * DEPLOY_TICK).await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(text.contains("canary Deployment created"), "the first replica's create is logged");
    assert!(!text.contains("creating the canary Deployment failed"), "a create was repeated:\n{text}");
    assert!(!text.contains("handling the loser failed"), "a delete was repeated:\n{text}");
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_scales_the_canary_to_zero() {
    // `scaleDownLoser: true` is the shorthand for `loser: ScaleToZero`; after an abort the loser is the canary.
    let (_kmock, client, _running) = without_proxies(json!({"scaleDownLoser": true}), &["Abort"]).await;
    until(&client, "canary scaled to zero", async || {
        (deployment(&client, "reviews-v3").await?["spec"]["replicas"] == 0).then_some(())
    })
    .await;
    let stable = deployment(&client, "reviews-v1").await.unwrap();
    assert_eq!(stable["spec"]["replicas"], 2, "the stable won: untouched");
    let s = status(&client).await;
    assert_eq!(s["rollout"]["loser"]["version"], "v3", "{s:#}");
    // Aborted: the canary is not created again.
    tokio::time::sleep(2 * DEPLOY_TICK).await;
    assert_eq!(deployment(&client, "reviews-v3").await.unwrap()["spec"]["replicas"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_with_delete_deletes_the_canary_and_never_recreates_it() {
    let (_kmock, client, _running) = without_proxies(json!({"loser": "Delete"}), &["Abort"]).await;
    until(&client, "canary deleted", async || deployment(&client, "reviews-v3").await.is_none().then_some(())).await;
    assert_eq!(deployment(&client, "reviews-v1").await.unwrap()["spec"]["replicas"], 2, "the stable won: untouched");
    let s = until(&client, "the release ended in status", async || {
        let s = status(&client).await;
        condition(&s["rollout"]["conditions"], "Deployed").is_some_and(|c| c["reason"] == "ReleaseEnded").then_some(s)
    })
    .await;
    assert_eq!(s["rollout"]["loser"]["done"], true, "{s:#}");
    tokio::time::sleep(2 * DEPLOY_TICK).await;
    assert!(deployment(&client, "reviews-v3").await.is_none(), "an aborted release's canary came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_writes_no_deployment_until_it_leads() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    cluster(&client, 9, json!({"loser": "Delete"})).await;
    let running = sluice_leading(&kmock, false).await;
    tokio::time::sleep(2 * DEPLOY_TICK).await;
    assert!(deployment(&client, "reviews-v3").await.is_none(), "a follower created the canary");
    running.leading.send_replace(true);
    until(&client, "canary Deployment created", async || deployment(&client, "reviews-v3").await).await;
}
