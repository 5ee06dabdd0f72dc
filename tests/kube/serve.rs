//! Kubernetes mode against a Kubernetes API emulator (PyPI `kmock`, `tests/common/kmock.rs`): Services, Pods,
//! EndpointSlices and ReleasePolicies created in the emulator reach a real Envoy through Sluice's watchers.
//!
//! - a weight split by version within the statistical bound; a patched weight followed within 2 s;
//! - a terminating endpoint drains (in EDS as DRAINING, no new requests), a not-ready one leaves EDS;
//! - an emulator restart that forces a relist (410 Gone) with an object deleted meanwhile: the object goes, and
//!   no empty or partial push happens (Envoy removes no cluster, no update is empty, no request fails);
//! - a malformed ReleasePolicy beside a good one: the good one is served, the bad one is logged and counted.

use crate::common;

use common::kmock::{Kmock, api, create, obj, patch};
use common::{Backend, Envoy, LoadLoop, assert_share, load, start_envoy};
use serde_json::{Value, json};
use sluice::model::ObjectKey;
use sluice::server::{Options, Sluice};
use sluice::source::kube::BACKOFF_MAX;
use sluice::store::Store;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const V1_CLUSTER: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V3_CLUSTER: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";

fn pod(name: &str, version: &str) -> Value {
    obj(
        "v1",
        "Pod",
        name,
        json!({"app": "reviews", "version": version}),
        json!({"spec": {"containers": [{"name": "reviews", "image": "reviews"}]}, "status": {"podIP": "127.0.0.1"}}),
    )
}

fn endpoint(pod: &str, conditions: Value) -> Value {
    json!({"addresses": ["127.0.0.1"], "conditions": conditions,
           "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
}

/// One slice per backend: the slice's port is the backend's port (all backends listen on 127.0.0.1).
fn slice(name: &str, port: u16, pod: &str) -> Value {
    obj(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        name,
        json!({"kubernetes.io/service-name": "reviews"}),
        json!({"addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
               "endpoints": [endpoint(pod, json!({"ready": true}))]}),
    )
}

/// A ReleasePolicy at `metadata.generation` 1 (an API server counts spec changes there; kmock does not).
fn policy(name: &str, spec: Value) -> Value {
    let mut p = obj("sluice.dev/v1alpha1", "ReleasePolicy", name, json!({}), json!({"spec": spec}));
    p["metadata"]["generation"] = json!(1);
    p
}

async fn set_endpoint(client: &kube::Client, slice: &str, pod: &str, conditions: Value) {
    let p = json!({"endpoints": [endpoint(pod, conditions)]});
    patch(client, "discovery.k8s.io/v1", "EndpointSlice", slice, p).await;
}

/// reviews (v1, v3) in the emulator with a policy at 20%, Sluice watching it, one Envoy ACKing.
struct Mesh {
    kmock: Kmock,
    client: kube::Client,
    sluice: Sluice,
    envoy: Envoy,
    listen: SocketAddr,
    v1: Backend,
    v3: Backend,
    _stop: watch::Sender<bool>,
    _leading: watch::Sender<bool>,
}

async fn mesh(extra: &[(&str, &Backend)]) -> Mesh {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    let service = obj(
        "v1",
        "Service",
        "reviews",
        json!({"app": "reviews"}),
        json!({"spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": "http"}]}}),
    );
    create(&client, service).await;
    for (name, version, backend) in [("reviews-v1", "v1", &v1), ("reviews-v3", "v3", &v3)] {
        create(&client, pod(name, version)).await;
        create(&client, slice(name, backend.port(), name)).await;
    }
    for (name, backend) in extra {
        create(&client, pod(name, "v1")).await;
        create(&client, slice(name, backend.port(), name)).await;
    }
    create(
        &client,
        policy(
            "reviews",
            json!({"service": "reviews", "stable": "v1", "canary": "v3",
                                             "traffic": {"canaryWeight": 2000}}),
        ),
    )
    .await;
    let (stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    let watching = sluice::source::kube::start(kmock.client().await, &[], store.clone(), stop_rx.clone());
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    let (leading, leader) = watch::channel(true);
    let releases = sluice.releases().clone();
    let writer = sluice::source::kube::write_status(kmock.client().await, releases, watching.observed, leader, stop_rx);
    tokio::spawn(writer);
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    let (envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
    Mesh { kmock, client, sluice, envoy, listen, v1, v3, _stop: stop, _leading: leading }
}

/// The health of each endpoint of `cluster` in Envoy's EDS (`HEALTHY`, `DRAINING`, ...), by port.
fn eds_hosts(dump: &Value, cluster: &str) -> Vec<(u64, String)> {
    let configs = dump["configs"].as_array().into_iter().flatten();
    let eds = configs.filter_map(|c| c["dynamic_endpoint_configs"].as_array()).flatten();
    let assignment = eds.map(|c| &c["endpoint_config"]).find(|c| c["cluster_name"] == cluster);
    let lb = assignment.and_then(|a| a["endpoints"].as_array()).into_iter().flatten();
    lb.filter_map(|l| l["lb_endpoints"].as_array())
        .flatten()
        .map(|e| {
            let port = e["endpoint"]["address"]["socket_address"]["port_value"].as_u64().unwrap_or(0);
            (port, e["health_status"].as_str().unwrap_or("HEALTHY").to_string())
        })
        .collect()
}

/// The EDS health Envoy holds for each host of `cluster` (`/clusters`: `HEALTHY`, `DRAINING`, ...), by port.
async fn eds_status(envoy: &Envoy, cluster: &str) -> Vec<(u64, String)> {
    let v: Value = serde_json::from_str(&envoy.admin_get("/clusters?format=json").await).expect("/clusters is JSON");
    let clusters = v["cluster_statuses"].as_array().into_iter().flatten();
    let hosts = clusters.filter(|c| c["name"] == cluster).filter_map(|c| c["host_statuses"].as_array()).flatten();
    hosts
        .map(|h| {
            let port = h["address"]["socket_address"]["port_value"].as_u64().unwrap_or(0);
            let eds = h["health_status"]["eds_health_status"].as_str().unwrap_or("HEALTHY");
            (port, eds.to_string())
        })
        .collect()
}

/// Sends batches of requests until one batch shows `version` at `share` or more; returns how long that took.
async fn until_share(listen: SocketAddr, version: &str, share: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let c = load(listen, "reviews", 100, 4).await;
        if c.of(version) as f64 / 100.0 >= share {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{version} not at {share} after {limit:?}: last batch {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routes_by_version_follows_weight_edits_and_endpoint_readiness() {
    let m = mesh(&[]).await;

    let split = load(m.listen, "reviews", 2000, 8).await;
    assert_eq!((split.errors, split.non_2xx), (0, 0), "{split:?}");
    assert_share("v3 at canaryWeight 2000", split.of("v3"), 2000, 0.2);

    // A patched weight reaches Envoy within 2 s.
    let spec = json!({"spec": {"traffic": {"canaryWeight": 8000}}});
    patch(&m.client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews", spec).await;
    let took = until_share(m.listen, "v3", 0.65, Duration::from_secs(2)).await;
    println!("patched weight followed after {took:?}");
    let split = load(m.listen, "reviews", 2000, 8).await;
    assert_share("v3 at canaryWeight 8000", split.of("v3"), 2000, 0.8);

    // Terminating but serving: still in EDS as DRAINING, and no new requests.
    let draining = json!({"ready": false, "serving": true, "terminating": true});
    set_endpoint(&m.client, "reviews-v3", "reviews-v3", draining).await;
    let v3_port = u64::from(m.v3.port());
    let start = Instant::now();
    while eds_status(&m.envoy, V3_CLUSTER).await != [(v3_port, "DRAINING".to_string())] {
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", eds_status(&m.envoy, V3_CLUSTER).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = m.v3.count();
    let all = load(m.listen, "reviews", 300, 4).await;
    assert_eq!((all.of("v1"), m.v3.count() - before), (300, 0), "a draining endpoint gets no new requests: {all:?}");

    // Not ready: gone from EDS.
    set_endpoint(&m.client, "reviews-v3", "reviews-v3", json!({"ready": false})).await;
    m.envoy.wait_for(Duration::from_secs(2), |d| eds_hosts(d, V3_CLUSTER).is_empty()).await;
    assert_eq!(eds_hosts(&m.envoy.wait_for(Duration::from_secs(1), |_| true).await, V1_CLUSTER).len(), 1);

    // Ready again: traffic comes back.
    set_endpoint(&m.client, "reviews-v3", "reviews-v3", json!({"ready": true})).await;
    until_share(m.listen, "v3", 0.65, Duration::from_secs(2)).await;
    assert!(m.v1.count() > 0);
    drop(m.sluice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emulator_restart_relists_without_an_empty_push() {
    let v1b = Backend::start("v1").await;
    let mut m = mesh(&[("reviews-v1b", &v1b)]).await;
    let v1b_port = u64::from(v1b.port());
    m.envoy.wait_for(Duration::from_secs(2), |d| eds_hosts(d, V1_CLUSTER).len() == 2).await;
    let removed_before = m.envoy.stat("cluster_manager.cluster_removed").await.unwrap_or(0);

    // Every model the store publishes during the restart, as the publisher sees it.
    let mut models = m.sluice.store().subscribe();
    let (done, mut finished) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                changed = models.changed() => if changed.is_err() { break },
                _ = finished.wait_for(|f| *f) => break,
            }
            let model = models.borrow_and_update().clone();
            seen.push((model.services.len(), model.endpoints_of(&ObjectKey::new("default", "reviews")).len()));
        }
        seen
    });
    let traffic = LoadLoop::start(m.listen, "reviews", 2, 50);

    // The emulator goes down; meanwhile reviews-v1b is deleted (its watch event is missed); it comes back with
    // every old watch expired (410 Gone), so Sluice must relist.
    m.kmock.stop();
    m.kmock.drop_object("discovery.k8s.io/v1/endpointslices", "reviews-v1b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    m.kmock.restart_expiring_watches();
    let start = Instant::now();
    m.envoy.wait_for(Duration::from_secs(30), |d| eds_hosts(d, V1_CLUSTER).iter().all(|(p, _)| *p != v1b_port)).await;
    println!("relisted after the restart in {:?}", start.elapsed());

    // Converges: a weight edit after the restart reaches Envoy. Each kind's watch retries on its own backoff, so
    // the policy watch may still be waiting out its last retry (at most twice BACKOFF_MAX with jitter).
    let spec = json!({"spec": {"traffic": {"canaryWeight": 9000}}});
    patch(&m.client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews", spec).await;
    let took = until_share(m.listen, "v3", 0.75, BACKOFF_MAX * 2 + Duration::from_secs(3)).await;
    println!("a weight edit after the restart followed after {took:?}");

    let report = traffic.stop().await;
    println!("during the restart: {}", report.summary());
    assert_eq!((report.counts.errors, report.counts.non_2xx), (0, 0), "{}", report.summary());
    let removed = m.envoy.stat("cluster_manager.cluster_removed").await.unwrap_or(0);
    assert_eq!(removed, removed_before, "Envoy removed a cluster during the restart");
    for cluster in [V1_CLUSTER, V3_CLUSTER] {
        let empty = m.envoy.stat(&format!("cluster.{cluster}.update_empty")).await.unwrap_or(0);
        assert_eq!(empty, 0, "{cluster} got an empty EDS update");
    }
    done.send_replace(true);
    let seen = watcher.await.unwrap();
    println!("models published during the restart (services, reviews endpoints): {seen:?}");
    assert!(seen.iter().all(|(services, endpoints)| *services == 1 && *endpoints >= 2), "{seen:?}");
    assert_eq!(seen.last().map(|s| s.1), Some(2), "the relist removed reviews-v1b: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_policy_beside_a_good_one_is_skipped_logged_and_counted() {
    let log = common::captured_log();
    // The recorder before the watch: its count of the invalid object must not go to the no-op recorder when the
    // watch is faster than `Sluice::start_with` (which installs it too).
    sluice::telemetry::prom::install();

    let kmock = Kmock::start();
    let client = kmock.client().await;
    let svc = |name: &str| {
        obj("v1", "Service", name, json!({}), json!({"spec": {"ports": [{"name": "http", "port": 9080}]}}))
    };
    create(&client, svc("reviews")).await;
    create(&client, svc("ratings")).await;
    create(&client, policy("good", json!({"service": "reviews", "stable": "v1", "canary": "v3"}))).await;
    create(&client, policy("bad", json!({"service": "ratings", "stable": "v1", "canary": "v1"}))).await;

    let (_stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    sluice::source::kube::start(client.clone(), &[], store.clone(), stop_rx);
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    sluice.wait_published(Duration::from_secs(10)).await.expect("first snapshot");

    let releases: Vec<String> = sluice.releases().list(None).into_iter().map(|r| r.metadata.name).collect();
    assert_eq!(releases, ["good"], "the good policy is served, the bad one skipped");
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    // The log and the recorder are the process's, shared with the other tests of `tests/kube`: this one's lines
    // are those naming its objects, and it is the only test there that meets an invalid ReleasePolicy.
    let skipped =
        |l: &&str| l.contains("skipping invalid object") && l.contains("ReleasePolicy") && l.contains("default/bad");
    let line = text.lines().find(skipped).expect("the skip is logged");
    assert!(line.contains("spec.canary: must differ from spec.stable"), "{line}");
    // /metrics as a scraper reads it.
    let metrics = sluice::telemetry::render();
    let counted = metrics.lines().find(|l| l.starts_with("sluice_kube_invalid_objects_total{kind=\"ReleasePolicy\"}"));
    let counted: u64 = counted.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(counted, 1);

    // Fixed in place: served; deleted: its delete applies whether it was valid or not.
    let fix = json!({"spec": {"canary": "v2"}});
    patch(&client, "sluice.dev/v1alpha1", "ReleasePolicy", "bad", fix).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sluice.releases().list(None).len() != 2 {
        assert!(Instant::now() < deadline, "the fixed policy was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `status` of the ReleasePolicy `name` as stored in the emulator.
async fn stored_status(client: &kube::Client, name: &str) -> Value {
    let o = api(client, "sluice.dev/v1alpha1", "ReleasePolicy")
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("getting {name}: {e}"));
    o.data.get("status").cloned().unwrap_or(Value::Null)
}

/// Waits until the stored status satisfies `ok`; returns it.
async fn status_until(client: &kube::Client, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = stored_status(client, "reviews").await;
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "status never showed {what}: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The release view `GET /api/v1/.../releases/reviews` answers, and a REST verb on it.
async fn rest(admin: SocketAddr, method: &str, verb: &str) -> Value {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let uri = format!("http://{admin}/api/v1/namespaces/default/releases/reviews{verb}");
    let req = hyper::Request::builder().method(method).uri(uri).body(Full::default()).unwrap();
    let resp = client.request(req).await.expect("the REST API answers");
    assert!(resp.status().is_success(), "{method} {verb}: {}", resp.status());
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_written_to_the_cluster_follows_the_release() {
    let m = mesh(&[]).await;
    let admin = m.sluice.admin_addr().expect("admin port");

    // The first status: the spec's weight, one Envoy that ACKed, both versions with their one ready endpoint.
    let status = status_until(&m.client, "the first status", |s| s["proxies"]["acked"] == 1).await;
    let view = rest(admin, "GET", "").await;
    assert_eq!(status["phase"], view["status"]["phase"], "{status:#}");
    assert_eq!(status["weights"], json!({"v1": 8000, "v3": 2000}), "{status:#}");
    assert_eq!(status["weights"], view["status"]["weights"]);
    assert_eq!(status["proxies"], json!({"acked": 1, "total": 1}));
    assert_eq!(status["observedGeneration"], 1);
    let endpoints: Vec<(Value, Value)> =
        status["versions"].as_array().unwrap().iter().map(|v| (v["name"].clone(), v["ready"].clone())).collect();
    assert_eq!(endpoints, [(json!("v1"), json!(1)), (json!("v3"), json!(1))]);
    let conditions = status["conditions"].as_array().unwrap();
    let applied = conditions.iter().find(|c| c["type"] == "TrafficApplied").expect("TrafficApplied condition");
    assert_eq!((&applied["status"], &applied["reason"]), (&json!("True"), &json!("AllProxiesAcked")));

    // A weight patch (generation 2): the status follows with the new weights and generation.
    let spec = json!({"metadata": {"generation": 2}, "spec": {"traffic": {"canaryWeight": 7000}}});
    patch(&m.client, "sluice.dev/v1alpha1", "ReleasePolicy", "reviews", spec).await;
    let status = status_until(&m.client, "generation 2", |s| s["observedGeneration"] == 2).await;
    assert_eq!(status["weights"], json!({"v1": 3000, "v3": 7000}), "{status:#}");
    assert_eq!(status["phase"], "Progressing");

    // Promote through the REST API: the stored status says Promoted with all traffic on the canary.
    let promoted = rest(admin, "POST", "/promote").await;
    assert_eq!(promoted["status"]["phase"], "Promoted");
    let status = status_until(&m.client, "Promoted", |s| s["phase"] == "Promoted").await;
    assert_eq!(status["weights"], json!({"v1": 0, "v3": 10000}), "{status:#}");
    assert_eq!(status["observedGeneration"], 2, "a verb changes no spec");
    assert_eq!(status["weights"], rest(admin, "GET", "").await["status"]["weights"]);
}
