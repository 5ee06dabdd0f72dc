//! Istio and Gateway API routing objects from a Kubernetes API emulator (PyPI `kmock`, `tests/common/kmock.rs`)
//! through Sluice's watchers to a real Envoy:
//!
//! - a DestinationRule with subsets v1/v3 and a VirtualService 80/20 between them: Envoy's route holds the two
//!   subset clusters at 80 and 20, and measured traffic splits within the statistical bound;
//! - a malformed VirtualService beside it (a weight that is not a number) is skipped, logged naming
//!   `namespace/name` and the field, and counted; an untranslated field of the good one is logged and counted;
//! - HTTPRoute `status.parents` written back: `Conflicted` beside the VirtualService, `Accepted` otherwise;
//! - a cluster without the Istio and Gateway API CRDs (routing and gateway kinds): Sluice logs it, gets ready and
//!   serves Services anyway.

use crate::common;

use common::kmock::{Kmock, create, obj};
use common::{Backend, assert_share, load, start_envoy};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use sluice::model::ObjectKey;
use sluice::server::{Options, Sluice};
use sluice::store::Store;
use std::time::Duration;
use tokio::sync::watch;

const V1_CLUSTER: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const V3_CLUSTER: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";

/// Backends v1 and v3 behind `reviews`, and a DestinationRule with their subsets.
async fn reviews_with_subsets(client: &kube::Client) -> (Backend, Backend) {
    let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
    reviews(client, &[("v1", &v1), ("v3", &v3)]).await;
    let subsets = json!([{"name": "v1", "labels": {"version": "v1"}}, {"name": "v3", "labels": {"version": "v3"}}]);
    create(client, istio("DestinationRule", "reviews", json!({"host": "reviews", "subsets": subsets}))).await;
    (v1, v3)
}

/// Service reviews with one pod and one EndpointSlice per (version, backend).
async fn reviews(client: &kube::Client, backends: &[(&str, &Backend)]) {
    service_with_pods(client, "reviews", backends).await;
}

/// Service `service` (port 9080) with one pod and one EndpointSlice per (version, backend).
pub(super) async fn service_with_pods(client: &kube::Client, service: &str, backends: &[(&str, &Backend)]) {
    let spec = json!({"spec": {"selector": {"app": service}, "ports": [{"name": "http", "port": 9080}]}});
    create(client, obj("v1", "Service", service, json!({"app": service}), spec)).await;
    for (version, backend) in backends {
        let name = format!("{service}-{version}");
        let pod = json!({"spec": {"containers": [{"name": service, "image": service}]}});
        create(client, obj("v1", "Pod", &name, json!({"app": service, "version": version}), pod)).await;
        let endpoint = json!({"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                              "targetRef": {"kind": "Pod", "name": name, "namespace": "default"}});
        let slice = json!({"addressType": "IPv4", "endpoints": [endpoint],
                           "ports": [{"name": "http", "port": backend.port(), "protocol": "TCP"}]});
        let labels = json!({"kubernetes.io/service-name": service});
        create(client, obj("discovery.k8s.io/v1", "EndpointSlice", &name, labels, slice)).await;
    }
}

fn istio(kind: &str, name: &str, spec: Value) -> Value {
    obj("networking.istio.io/v1", kind, name, json!({}), json!({"spec": spec}))
}

/// Every `weighted_clusters` entry (cluster, weight) anywhere in Envoy's config dump.
fn weighted_clusters(v: &Value, out: &mut Vec<(String, u64)>) {
    match v {
        Value::Object(m) => {
            if let Some(cs) = m.get("weighted_clusters").and_then(|w| w["clusters"].as_array()) {
                out.extend(
                    cs.iter()
                        .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c["weight"].as_u64().unwrap_or(0))),
                );
            }
            m.values().for_each(|x| weighted_clusters(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| weighted_clusters(x, out)),
        _ => {}
    }
}

/// `metric{kind="KIND"}` as a scraper reads it from /metrics.
fn counter(metric: &str, kind: &str) -> u64 {
    let text = sluice::telemetry::render();
    let prefix = format!("{metric}{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or_else(|| panic!("no {prefix}in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_virtual_service_split_from_the_cluster_reaches_envoy_and_a_malformed_one_is_skipped() {
    let log = common::captured_log();
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (_v1, _v3) = reviews_with_subsets(&client).await;
    // Istio's virtual-service-reviews-80-20 sample (v3 for v2), with an `exportTo` Sluice does not translate.
    let route = json!([{"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                       {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}]);
    let good = json!({"hosts": ["reviews"], "exportTo": ["*"], "http": [{"route": route}]});
    create(&client, istio("VirtualService", "reviews", good)).await;
    let svc = json!({"spec": {"ports": [{"name": "http", "port": 9080}]}});
    create(&client, obj("v1", "Service", "ratings", json!({}), svc)).await;
    for name in ["reviews", "ratings"] {
        let spec = json!({"parentRefs": [{"group": "", "kind": "Service", "name": name, "port": 9080}],
                          "rules": [{"backendRefs": [{"name": name, "port": 9080}]}]});
        create(&client, obj("gateway.networking.k8s.io/v1", "HTTPRoute", name, json!({}), json!({"spec": spec}))).await;
    }
    let bad =
        json!({"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings"}, "weight": "lots"}]}]});
    create(&client, istio("VirtualService", "ratings", bad)).await;

    let (_stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    let watching = sluice::source::kube::start(client.clone(), &[], store.clone(), stop_rx.clone());
    // This replica leads (as the Lease holder would): it writes HTTPRoute status.
    let (_leading, leader) = watch::channel(true);
    let statused = watching.statused;
    tokio::spawn(sluice::source::kube::write_api_status(client.clone(), store.clone(), statused, leader, stop_rx));
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    let (envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");

    // The route Envoy holds: the two subset clusters at the VirtualService's weights.
    let dump = envoy
        .wait_for(Duration::from_secs(5), |d| {
            let mut w = Vec::new();
            weighted_clusters(d, &mut w);
            !w.is_empty()
        })
        .await;
    let mut weights = Vec::new();
    weighted_clusters(&dump, &mut weights);
    weights.sort();
    // Sluice scales weights to a fixed total; the shares are the VirtualService's.
    let total: u64 = weights.iter().map(|w| w.1).sum();
    let shares: Vec<(&str, f64)> = weights.iter().map(|(c, w)| (c.as_str(), *w as f64 / total as f64)).collect();
    assert_eq!(shares, [(V1_CLUSTER, 0.8), (V3_CLUSTER, 0.2)], "{weights:?}");
    let split = load(listen, "reviews", 2000, 8).await;
    println!("VirtualService 80/20 from the cluster: {split:?}");
    assert_eq!((split.errors, split.non_2xx), (0, 0), "{split:?}");
    assert_share("VirtualService 80/20: v3", split.of("v3"), 2000, 0.2);

    // The malformed one is skipped, logged with its name and field, and counted; the good one's extra field too.
    let model = sluice.store().subscribe().borrow().clone();
    assert_eq!(model.virtual_services.keys().collect::<Vec<_>>(), [&ObjectKey::new("default", "reviews")]);
    assert_eq!(model.destination_rules.len(), 1);
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    // The log is the process's, shared with the other tests of `tests/kube`: find this test's lines by kind.
    let skipped = |l: &&str| l.contains("skipping invalid object") && l.contains("VirtualService");
    let line = text.lines().find(skipped).expect("the skip is logged");
    assert!(line.contains("default/ratings"), "{line}");
    assert!(line.contains("spec.http[0].route[0].weight"), "{line}");
    let extra = |l: &&str| l.contains("not supported by Sluice") && l.contains("VirtualService");
    let line = text.lines().find(extra).expect("the extra field is logged");
    assert!(line.contains("default/reviews") && line.contains("spec.exportTo"), "{line}");
    assert_eq!(counter("sluice_kube_invalid_objects_total", "VirtualService"), 1);
    assert!(counter("sluice_unsupported_fields_total", "VirtualService") >= 1);

    // HTTPRoute status.parents written back: reviews' route loses to its VirtualService, ratings' is accepted
    // (the malformed VirtualService naming ratings is not in effect).
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"));
    let routes = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &ar);
    for (name, accepted, reason) in [("reviews", "False", "Conflicted"), ("ratings", "True", "Accepted")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let conditions = loop {
            let route = routes.get(name).await.unwrap_or_else(|e| {
                let log = std::fs::read_to_string(kmock.kubeconfig().with_file_name("kmock.log")).unwrap_or_default();
                panic!("HTTPRoute {name}: {e}\n{log}")
            });
            let c = route.data["status"]["parents"][0]["conditions"].clone();
            if c.is_array() {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "no status.parents on HTTPRoute {name}: {route:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let get = |t: &str| conditions.as_array().unwrap().iter().find(|c| c["type"] == t).cloned().unwrap();
        let a = get("Accepted");
        assert_eq!((a["status"].as_str(), a["reason"].as_str()), (Some(accepted), Some(reason)), "{name}: {a}");
        assert!(a["lastTransitionTime"].is_string(), "{a}");
        assert_eq!(get("ResolvedRefs")["status"], "True", "{name}: {conditions}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mesh_crds_sluice_gets_ready_and_serves_services() {
    let log = common::captured_log();
    let kmock = Kmock::start_omitting(&[
        "networking.istio.io/v1/virtualservices",
        "networking.istio.io/v1/destinationrules",
        "networking.istio.io/v1/sidecars",
        "gateway.networking.k8s.io/v1/httproutes",
        "networking.istio.io/v1/gateways",
        "gateway.networking.k8s.io/v1/gateways",
        "gateway.networking.k8s.io/v1/gatewayclasses",
        "gateway.networking.k8s.io/v1beta1/referencegrants",
    ]);
    let client = kmock.client().await;
    let v1 = Backend::start("v1").await;
    reviews(&client, &[("v1", &v1)]).await;

    let (_stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    sluice::source::kube::start(client.clone(), &[], store.clone(), stop_rx);
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready())
        .await
        .expect("ready although the mesh kinds are not served");
    let (_envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
    let all = load(listen, "reviews", 50, 4).await;
    assert_eq!(all.of("v1"), 50, "{all:?}");
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    let gateways =
        ["Gateway.networking.istio.io", "Gateway.gateway.networking.k8s.io", "GatewayClass", "ReferenceGrant"];
    for kind in ["VirtualService", "DestinationRule", "Sidecar", "HTTPRoute"].into_iter().chain(gateways) {
        assert!(
            text.lines().any(|l| l.contains("CRD not installed") && l.contains(kind)),
            "the missing {kind} CRD is logged:\n{text}"
        );
    }
}

/// Two VirtualServices for `reviews` in the cluster: the older one (by `creationTimestamp`, as istiod decides)
/// routes, whatever the names; the other is reported, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_virtual_services_for_one_host_the_older_routes() {
    let log = common::captured_log();
    let kmock = Kmock::start();
    let client = kmock.client().await;
    let (_v1, _v3) = reviews_with_subsets(&client).await;
    // `aaa-newer` sorts first by name, but `zzz-older` was created first.
    for (name, subset, created) in
        [("aaa-newer", "v1", "2026-02-01T00:00:00Z"), ("zzz-older", "v3", "2026-01-01T00:00:00Z")]
    {
        let mut vs = istio(
            "VirtualService",
            name,
            json!({"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}),
        );
        vs["metadata"]["creationTimestamp"] = json!(created);
        create(&client, vs).await;
    }

    let (_stop, stop_rx) = watch::channel(false);
    let store = Store::new();
    sluice::source::kube::start(client.clone(), &[], store.clone(), stop_rx);
    let sluice = Sluice::start_with(Options::local(), store, Value::Null).await.expect("start");
    tokio::time::timeout(Duration::from_secs(10), sluice.store().wait_ready()).await.expect("every kind listed");
    let (_envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
    sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
    let all = load(listen, "reviews", 400, 8).await;
    assert_eq!((all.of("v3"), all.total()), (400, 400), "the older VirtualService routes: {all:?}");

    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    let line = text
        .lines()
        .find(|l| l.contains("conflict:") && l.contains("default/aaa-newer"))
        .unwrap_or_else(|| panic!("the conflict is logged:\n{text}"));
    assert!(line.contains("default/zzz-older (cluster) routes it and is older"), "{line}");
    drop(kmock);
}
