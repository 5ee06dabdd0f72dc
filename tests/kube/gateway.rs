//! Ingress gateways from the cluster (kmock): Gateway API `GatewayClass`, `Gateway`, `HTTPRoute` and a
//! `kubernetes.io/tls` Secret, and Istio's Bookinfo `Gateway` + `VirtualService` (deploy/bookinfo-gateway.yaml):
//!
//! - the status Sluice writes: the class Accepted; the Gateway Accepted (`ListenersNotValid` while the HTTPS
//!   listener's Secret is missing) and Programmed, its HTTPS listener `ResolvedRefs` False `InvalidCertificateRef`,
//!   the HTTP listener with the route attached, `status.addresses` from its LoadBalancer Service; the route's
//!   parent Accepted by `sluice.dev/gateway-controller`; `observedGeneration` on every condition. Creating the
//!   Secret flips the listener (and keeps the untouched conditions' `lastTransitionTime`), and a real gateway
//!   Envoy then serves HTTPS with that certificate;
//! - Secrets: only `kubernetes.io/tls` ones are listed (an Opaque one is never seen), a malformed one is skipped
//!   naming `data[tls.key]` without quoting it;
//! - only the Lease holder writes: a replica that does not hold the Lease writes nothing until it takes it;
//! - Bookinfo's Istio Gateway and VirtualService from the cluster route a gateway Envoy to productpage.

use crate::common;

use common::Backend;
use common::https::{ask_as, wait_listening};
use common::kmock::{Kmock, api_in, create, obj, patch, resource_version};
use common::pki::{Ca, write_ca};
use serde_json::{Value, json};
use sluice::server::{Options, Sluice};
use sluice::store::Store;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const GW_V1: &str = "gateway.networking.k8s.io/v1";

/// Service NAME in `ns` (port 9080) with one ready pod (version v1) at `backend`.
async fn service(client: &kube::Client, ns: &str, name: &str, backend: &Backend) {
    let in_ns = |mut o: Value| {
        o["metadata"]["namespace"] = json!(ns);
        o
    };
    let spec = json!({"spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]}});
    create(client, in_ns(obj("v1", "Service", name, json!({"app": name}), spec))).await;
    let pod_name = format!("{name}-v1");
    let pod = json!({"spec": {"containers": [{"name": name, "image": name}]}});
    create(client, in_ns(obj("v1", "Pod", &pod_name, json!({"app": name, "version": "v1"}), pod))).await;
    let endpoint = json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                          "targetRef": {"kind": "Pod", "name": pod_name, "namespace": ns}});
    let slice = json!({"addressType": "IPv4", "endpoints": [endpoint],
                       "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}]});
    let labels = json!({"kubernetes.io/service-name": name});
    create(client, in_ns(obj("discovery.k8s.io/v1", "EndpointSlice", &pod_name, labels, slice))).await;
}

/// The class, the Gateway `gw` (HTTP on `http`, HTTPS on `https` for bookinfo.example.com with the Secret
/// `gw-cert`), its LoadBalancer Service, and the route `bookinfo` to productpage: all at generation 1.
async fn gateway_objects(client: &kube::Client, http: u16, https: u16) {
    let mut class = obj(
        GW_V1,
        "GatewayClass",
        "sluice",
        json!({}),
        json!({"spec": {"controllerName": "sluice.dev/gateway-controller"}}),
    );
    class["metadata"].as_object_mut().unwrap().remove("namespace");
    let tls = json!({"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "gw-cert"}]});
    let listeners = json!([{"name": "http", "port": http, "protocol": "HTTP"},
                           {"name": "https", "port": https, "protocol": "HTTPS",
                            "hostname": "bookinfo.example.com", "tls": tls}]);
    let gw =
        obj(GW_V1, "Gateway", "gw", json!({}), json!({"spec": {"gatewayClassName": "sluice", "listeners": listeners}}));
    let route = json!({"spec": {"parentRefs": [{"name": "gw"}],
                                "rules": [{"backendRefs": [{"name": "productpage", "port": 9080}]}]}});
    let route = obj(GW_V1, "HTTPRoute", "bookinfo", json!({}), route);
    for mut o in [class, gw, route] {
        o["metadata"]["generation"] = json!(1);
        create(client, o).await;
    }
    // The gateway pods' Service, as a cloud load balancer would leave it.
    let front = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]},
                       "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
    let labels = json!({"gateway.networking.k8s.io/gateway-name": "gw"});
    create(client, obj("v1", "Service", "gw-sluice", labels, front)).await;
}

/// A `type` Secret in `default` with these data keys (base64 as the API stores them).
fn secret(name: &str, kind: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let data: serde_json::Map<String, Value> = (data.iter())
        .map(|(k, v)| (k.to_string(), json!(base64::engine::general_purpose::STANDARD.encode(v))))
        .collect();
    obj("v1", "Secret", name, json!({}), json!({"type": kind, "data": data}))
}

/// `status` of KIND NAME (`ns` `None`: cluster-scoped), once `ready` holds for it (10 s at most).
async fn status_when(
    client: &kube::Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let api = api_in(client, if kind == "Secret" { "v1" } else { GW_V1 }, kind, ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = api.get(name).await.expect("get").data.get("status").cloned().unwrap_or(Value::Null);
        if ready(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{kind} {name}: status never as expected: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The condition of type `kind` in a `conditions` list.
fn cond<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    let list = conditions.as_array().unwrap_or_else(|| panic!("no conditions: {conditions}"));
    list.iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind} in {conditions:#}"))
}

fn is(c: &Value, status: &str, reason: &str) -> bool {
    c["status"] == status && c["reason"] == reason
}

/// Whether every condition anywhere in `v` observed `generation` and carries a transition time.
fn all_observe(v: &Value, generation: i64) -> bool {
    match v {
        Value::Object(m) => m.iter().all(|(k, v)| match (k.as_str(), v) {
            ("conditions", Value::Array(cs)) => {
                cs.iter().all(|c| c["observedGeneration"] == generation && c["lastTransitionTime"].is_string())
            }
            _ => all_observe(v, generation),
        }),
        Value::Array(items) => items.iter().all(|v| all_observe(v, generation)),
        _ => true,
    }
}

fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
    let list = status["listeners"].as_array().unwrap_or_else(|| panic!("no listeners: {status:#}"));
    list.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no listener {name}: {status:#}"))
}

/// `metric{kind="KIND"}` from /metrics.
fn counter(metric: &str, kind: &str) -> u64 {
    let text = sluice::telemetry::render();
    let prefix = format!("{metric}{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or_else(|| panic!("no {prefix}in:\n{text}"))
}

/// Sluice in this process on the emulator's objects, writing Gateway API status as the Lease holder would (while
/// the returned sender lives).
async fn sluice_on(client: &kube::Client, stop: watch::Receiver<bool>) -> (Sluice, watch::Sender<bool>) {
    let store = Store::new();
    let watching = sluice::source::kube::start(client.clone(), &[], store.clone(), stop.clone());
    let (leading, leader) = watch::channel(true);
    tokio::spawn(sluice::source::kube::write_api_status(
        client.clone(),
        store.clone(),
        watching.statused,
        leader,
        stop,
    ));
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    (sluice, leading)
}

/// The first statuses, with the Secret missing: the class Accepted; the Gateway Accepted with ListenersNotValid,
/// Programmed, addressed by its LoadBalancer Service, its HTTPS listener unresolved and the route on its HTTP
/// listener; the route Accepted by Sluice's Gateway controller; every condition at generation 1. Returns the
/// Gateway's status.
async fn first_statuses(client: &kube::Client) -> Value {
    let class = status_when(client, "GatewayClass", None, "sluice", |s| s["conditions"].is_array()).await;
    assert!(is(cond(&class["conditions"], "Accepted"), "True", "Accepted"), "{class:#}");
    assert!(all_observe(&class, 1), "{class:#}");

    let gw = status_when(client, "Gateway", Some("default"), "gw", |s| s["listeners"].is_array()).await;
    println!("Gateway status before the Secret: {gw:#}");
    assert!(is(cond(&gw["conditions"], "Accepted"), "True", "ListenersNotValid"), "{gw:#}");
    assert!(is(cond(&gw["conditions"], "Programmed"), "True", "Programmed"), "{gw:#}");
    assert_eq!(gw["addresses"], json!([{"type": "IPAddress", "value": "203.0.113.7"}]));
    let refs = cond(&listener(&gw, "https")["conditions"], "ResolvedRefs");
    assert!(is(refs, "False", "InvalidCertificateRef"), "{gw:#}");
    assert!(is(cond(&listener(&gw, "https")["conditions"], "Programmed"), "False", "Invalid"), "{gw:#}");
    assert_eq!((listener(&gw, "http")["attachedRoutes"].as_u64()), Some(1), "{gw:#}");
    assert_eq!(
        listener(&gw, "http")["supportedKinds"],
        json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}])
    );
    assert!(all_observe(&gw, 1), "{gw:#}");

    let route = status_when(client, "HTTPRoute", Some("default"), "bookinfo", |s| s["parents"].is_array()).await;
    let parent = &route["parents"][0];
    assert_eq!(
        (parent["controllerName"].as_str(), parent["parentRef"]["name"].as_str()),
        (Some("sluice.dev/gateway-controller"), Some("gw"))
    );
    assert!(is(cond(&parent["conditions"], "Accepted"), "True", "Accepted"), "{route:#}");
    assert!(all_observe(&route, 1), "{route:#}");
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_status_is_written_and_the_https_listener_comes_with_its_cluster_secret() {
    let log = common::captured_log();
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let backend = Backend::start("v1").await;
    service(&client, "default", "productpage", &backend).await;
    let [http, https] = common::free_addrs().map(|a: SocketAddr| a.port());
    gateway_objects(&client, http, https).await;
    // Never listed (the field selector), so never reported: an Opaque Secret. Reported, naming the field: a TLS
    // Secret whose key is a certificate.
    create(&client, secret("unrelated-opaque", "Opaque", &[("password", "hunter2")])).await;
    let ca = Ca::new("gateway-ca");
    let leaf = ca.host(&["bookinfo.example.com"]);
    let bad = [("tls.crt", leaf.cert_pem.as_str()), ("tls.key", leaf.cert_pem.as_str())];
    create(&client, secret("bad-cert", "kubernetes.io/tls", &bad)).await;

    let (_stop, stop_rx) = watch::channel(false);
    let (sluice, _leading) = sluice_on(&client, stop_rx).await;
    let gw = first_statuses(&client).await;
    let refs = cond(&listener(&gw, "https")["conditions"], "ResolvedRefs").clone();

    // The gateway proxy: HTTP is served; HTTPS is not while its certificate is missing.
    let envoy = common::mesh::gateway_envoy(&sluice, "gw-proxy", "default/gw").await;
    let http_addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let https_addr: SocketAddr = format!("127.0.0.1:{https}").parse().unwrap();
    let got = common::http::get_with(&common::http::client(), http_addr, "anything.example", "/productpage", &[]).await;
    assert_eq!(got.expect("HTTP through the gateway"), (200, "v1".to_string()));
    assert!(tokio::net::TcpStream::connect(https_addr).await.is_err(), "no HTTPS listener without its certificate");

    // The Secret appears: the listener resolves and is programmed; untouched conditions keep their times.
    tokio::time::sleep(Duration::from_millis(1100)).await; // transition times have whole seconds
    let kept = cond(&listener(&gw, "http")["conditions"], "Programmed")["lastTransitionTime"].clone();
    let good = [("tls.crt", leaf.cert_pem.as_str()), ("tls.key", leaf.key_pem.as_str())];
    create(&client, secret("gw-cert", "kubernetes.io/tls", &good)).await;
    let gw = status_when(&client, "Gateway", Some("default"), "gw", |s| {
        is(cond(&listener(s, "https")["conditions"], "ResolvedRefs"), "True", "ResolvedRefs")
    })
    .await;
    println!("Gateway status with the Secret: {gw:#}");
    assert!(is(cond(&listener(&gw, "https")["conditions"], "Programmed"), "True", "Programmed"), "{gw:#}");
    assert!(is(cond(&gw["conditions"], "Accepted"), "True", "Accepted"), "{gw:#}");
    assert_eq!(listener(&gw, "https")["attachedRoutes"], 1, "{gw:#}");
    assert_eq!(cond(&listener(&gw, "http")["conditions"], "Programmed")["lastTransitionTime"], kept);
    let flipped = &cond(&listener(&gw, "https")["conditions"], "ResolvedRefs")["lastTransitionTime"];
    assert_ne!(flipped, &refs["lastTransitionTime"], "a condition that changed status gets a new time");

    // ... and the gateway Envoy serves HTTPS with the Secret's certificate.
    sluice.wait_acked("gw-proxy", Duration::from_secs(20)).await.expect("the gateway ACKs the HTTPS listener");
    wait_listening(https_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let cafile = write_ca(&ca, dir.path(), "ca");
    let answers =
        ask_as(https_addr, "bookinfo.example.com", &cafile, &json!([{"method": "GET", "path": "/productpage"}]));
    assert_eq!((answers[0]["status"].as_u64(), answers[0]["body"].as_str()), (Some(200), Some("v1")), "{answers:?}");
    drop(envoy);

    // A new generation of the route with the same meaning: its status follows the generation.
    let p = json!({"metadata": {"generation": 2}, "spec": {"hostnames": ["bookinfo.example.com"]}});
    patch(&client, GW_V1, "HTTPRoute", "bookinfo", p).await;
    status_when(&client, "HTTPRoute", Some("default"), "bookinfo", |s| all_observe(s, 2)).await;

    // Secrets: the Opaque one never reached Sluice; the malformed TLS one is skipped, named, counted, unquoted.
    let model = sluice.store().subscribe().borrow().clone();
    let secrets: Vec<String> = model.secrets.keys().map(ToString::to_string).collect();
    assert_eq!(secrets, ["default/gw-cert"]);
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(!text.contains("unrelated-opaque"), "an Opaque Secret was listed:\n{text}");
    let line = text.lines().find(|l| l.contains("skipping invalid object") && l.contains("default/bad-cert"));
    let line = line.unwrap_or_else(|| panic!("the bad Secret is logged:\n{text}"));
    assert!(line.contains("data[tls.key]"), "{line}");
    let body = leaf.cert_pem.lines().nth(1).unwrap();
    assert!(!line.contains(body) && !text.contains(leaf.key_pem.lines().nth(1).unwrap()), "{line}");
    assert_eq!(counter("sluice_kube_invalid_objects_total", "Secret"), 1);
    sluice.shutdown().await;
}

/// A Lease another replica holds (renewed now, for an hour).
async fn foreign_lease(client: &kube::Client) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now())).unwrap();
    let spec = json!({"spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600, "renewTime": now}});
    create(client, obj("coordination.k8s.io/v1", "Lease", "sluice", json!({}), spec)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_lease_writes_no_gateway_status_until_it_takes_the_lease() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let backend = Backend::start("v1").await;
    service(&client, "default", "productpage", &backend).await;
    let [http, https] = common::free_addrs().map(|a: SocketAddr| a.port());
    gateway_objects(&client, http, https).await;
    foreign_lease(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let replica = kmock.replica("replica-a", 2, dir.path()).await; // ready: every kind listed

    // Three of its lease periods: it does not lead, and writes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (kind, ns, name) in [
        ("GatewayClass", None, "sluice"),
        ("Gateway", Some("default"), "gw"),
        ("HTTPRoute", Some("default"), "bookinfo"),
    ] {
        let o = api_in(&client, GW_V1, kind, ns).get(name).await.expect("get");
        assert!(
            o.data.get("status").is_none_or(Value::is_null),
            "{kind} {name} written by a follower: {o:?}\n{}",
            replica.log_tail()
        );
    }

    // The holder goes away: the replica takes the Lease and writes every status.
    api_in(&client, "coordination.k8s.io/v1", "Lease", Some("default"))
        .delete("sluice", &Default::default())
        .await
        .expect("delete lease");
    let gw = status_when(&client, "Gateway", Some("default"), "gw", |s| s["listeners"].is_array()).await;
    assert!(all_observe(&gw, 1), "{gw:#}");
    status_when(&client, "GatewayClass", None, "sluice", |s| s["conditions"].is_array()).await;
    status_when(&client, "HTTPRoute", Some("default"), "bookinfo", |s| s["parents"].is_array()).await;
    let lease = api_in(&client, "coordination.k8s.io/v1", "Lease", Some("default")).get("sluice").await.expect("lease");
    assert_eq!(lease.data["spec"]["holderIdentity"], "replica-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_istio_gateway_and_virtual_service_from_the_cluster_reach_the_gateway_proxy() {
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let backend = Backend::start("v1").await;
    service(&client, "bookinfo", "productpage", &backend).await;
    // deploy/bookinfo-gateway.yaml's Gateway and VirtualService as written, but for the server port: the test
    // binds the gateway's listener on a free port instead of 8080.
    let text = std::fs::read_to_string(common::repo().join("deploy/bookinfo-gateway.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &Value| v["apiVersion"] == "networking.istio.io/v1")
        .collect();
    assert_eq!(docs.len(), 2, "a Gateway and a VirtualService");
    let port = common::free_port();
    for mut doc in docs {
        if doc["kind"] == "Gateway" {
            assert_eq!(doc["spec"]["servers"][0]["port"]["number"], 8080);
            doc["spec"]["servers"][0]["port"]["number"] = json!(port);
        }
        doc["metadata"]["resourceVersion"] = json!(resource_version());
        create(&client, doc).await;
    }

    let (_stop, stop_rx) = watch::channel(false);
    let (sluice, _leading) = sluice_on(&client, stop_rx).await;
    let _envoy = common::mesh::gateway_envoy(&sluice, "bookinfo-gateway-1", "bookinfo/bookinfo-gateway").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let http = common::http::client();
    for (path, want) in [("/productpage", (200, "v1")), ("/api/v1/products", (200, "v1")), ("/nothing", (404, ""))] {
        let (status, body) = common::http::get_with(&http, addr, "bookinfo.example.com", path, &[]).await.expect(path);
        assert_eq!(status, want.0, "{path}: {body}");
        if status == 200 {
            assert_eq!(body, want.1, "{path}");
        }
    }
    let dump = sluice_config_dump(&sluice, "bookinfo-gateway-1").await;
    assert!(dump.contains(&format!("\"127.0.0.1_{port}\"")) && dump.contains(&format!("\"http.{port}\"")), "{dump}");
    sluice.shutdown().await;
}

/// Sluice's `/debug/config_dump?proxy=ID`, as text.
async fn sluice_config_dump(sluice: &Sluice, proxy: &str) -> String {
    let path = format!("/debug/config_dump?proxy={proxy}");
    let admin = sluice.admin_addr().expect("admin port");
    let (status, body) =
        common::http::get_with(&common::http::client(), admin, "localhost", &path, &[]).await.expect("config_dump");
    assert_eq!(status, 200, "{body}");
    body
}
