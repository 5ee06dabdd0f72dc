//! Istio and Gateway API routing objects through a real Envoy 1.40 to real local backends: a VirtualService
//! 80/20 split between DestinationRule subsets, a header match (`end-user: jason`), a fault abort, an HTTPRoute
//! (GAMMA) with two weighted backendRefs, and a ReleasePolicy added to a service that has a VirtualService
//! (the policy's split applies inside the VirtualService's route, whose fault and headers are kept).
//! Each model is loaded through the config-file parser, then every split is measured against the 99.999% bound.

use crate::common;

use common::http::{Client, client, get_response};
use common::{Backend, Envoy, assert_share, reviews_yaml, start_envoy};
use futures::StreamExt;
use sluice::server::{Options, Sluice};
use sluice::source;
use sluice::store::Store;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const DR: &str = r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v3
    labels: {version: v3}
"#;

/// The body of a response Envoy's fault filter aborted.
const FAULT_BODY: &str = "fault filter abort";

/// Status (and body, for 2xx) of `n` requests to `reviews`, 8 at a time.
#[derive(Debug, Default)]
struct Tally {
    by_status: BTreeMap<u16, usize>,
    by_body: BTreeMap<String, usize>,
    errors: usize,
    with_header: usize,
    /// 503s whose body is the fault filter's (`fault filter abort`), not an upstream's.
    fault_aborts: usize,
}

impl Tally {
    fn status(&self, s: u16) -> usize {
        self.by_status.get(&s).copied().unwrap_or(0)
    }
    fn body(&self, b: &str) -> usize {
        self.by_body.get(b).copied().unwrap_or(0)
    }
}

async fn tally(http: &Client, listen: SocketAddr, headers: &[(&str, &str)], n: usize, header: &str) -> Tally {
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| get_response(http, listen, "reviews", "/", headers))
        .buffer_unordered(8)
        .collect()
        .await;
    let mut t = Tally::default();
    for r in results {
        match r {
            Ok(resp) => {
                *t.by_status.entry(resp.status).or_default() += 1;
                t.fault_aborts += usize::from(resp.status == 503 && resp.body == FAULT_BODY);
                if resp.status == 200 {
                    *t.by_body.entry(resp.body).or_default() += 1;
                }
                t.with_header += usize::from(resp.headers.contains_key(header));
            }
            Err(_) => t.errors += 1,
        }
    }
    t
}

struct Mesh {
    sluice: Sluice,
    _envoy: Envoy,
    listen: SocketAddr,
    base: String,
    _v1: Backend,
    _v3: Backend,
}

impl Mesh {
    async fn start() -> Mesh {
        let (v1, v3) = (Backend::start("v1").await, Backend::start("v3").await);
        let base = reviews_yaml(v1.port(), v3.port());
        let store = Store::new();
        store.register_source(source::SOURCE);
        store.set_part(source::SOURCE, source::parse_str(&base, "base.yaml").expect("base config"));
        let sluice = Sluice::start_with(Options::local(), store, serde_json::Value::Null).await.expect("start");
        let (envoy, listen) = start_envoy(sluice.xds_addr(), "envoy-1", false).await;
        sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the config");
        Mesh { sluice, _envoy: envoy, listen, base, _v1: v1, _v3: v3 }
    }

    /// Serves `base + extra` (parsed as a config file) and waits until Envoy ACKs it.
    async fn serve(&self, extra: &str) {
        let text = format!("{}{extra}", self.base);
        let model = source::parse_str(&text, "mesh.yaml").unwrap_or_else(|e| panic!("config:\n{e}"));
        self.sluice.store().set_part(source::SOURCE, model);
        self.sluice.wait_acked("envoy-1", Duration::from_secs(20)).await.expect("Envoy ACKs the new config");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_and_gateway_routes_through_envoy() {
    let m = Mesh::start().await;
    let http = client();

    // virtual-service-reviews-80-20 shape, between subsets v1 and v3.
    m.serve(&format!(
        "{DR}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 80\n    - destination: {{host: reviews, subset: v3}}\n      weight: 20\n"
    ))
    .await;
    let split = tally(&http, m.listen, &[], 2000, "x").await;
    assert_eq!((split.errors, split.status(200)), (0, 2000), "{split:?}");
    println!("VirtualService 80/20: {split:?}");
    assert_share("VirtualService 80/20: v3", split.body("v3"), 2000, 0.2);

    // virtual-service-reviews-jason-v2-v3 shape: jason to v3, everyone else to v1.
    m.serve(&format!(
        "{DR}---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        end-user: {{exact: jason}}\n    route:\n    - destination: {{host: reviews, subset: v3}}\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n"
    ))
    .await;
    let jason = tally(&http, m.listen, &[("end-user", "jason")], 300, "x").await;
    assert_eq!(jason.body("v3"), 300, "every request of jason goes to v3: {jason:?}");
    let others = tally(&http, m.listen, &[("end-user", "alice")], 300, "x").await;
    assert_eq!(others.body("v1"), 300, "nobody else reaches v3: {others:?}");

    // ratings-test-abort shape: 30% of requests answered 503 by Envoy's fault filter.
    m.serve(&format!(
        "{DR}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - fault:\n      abort:\n        httpStatus: 503\n        percentage: {{value: 30}}\n    route:\n    - destination: {{host: reviews, subset: v1}}\n"
    ))
    .await;
    let faults = tally(&http, m.listen, &[], 2000, "x").await;
    assert_eq!(faults.errors + faults.status(200) + faults.status(503), 2000, "only 200 and 503: {faults:?}");
    println!("fault abort 30%: {faults:?}");
    assert_eq!(faults.fault_aborts, faults.status(503), "every 503 is the fault filter's: {faults:?}");
    assert_share("fault abort 30%: 503", faults.fault_aborts, 2000, 0.3);
    assert_eq!(faults.body("v1"), faults.status(200), "the rest reaches v1: {faults:?}");

    // An HTTPRoute (GAMMA) on the reviews Service with two weighted version-specific Services.
    let versioned = |v: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: reviews-{v}}}\nspec:\n  selector: {{app: reviews, version: {v}}}\n  ports: [{{name: http, port: 9080}}]\n"
        )
    };
    m.serve(&format!(
        "{}{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: reviews, port: 9080}}\n  rules:\n  - backendRefs:\n    - {{name: reviews-v1, port: 9080, weight: 70}}\n    - {{name: reviews-v3, port: 9080, weight: 30}}\n",
        versioned("v1"),
        versioned("v3")
    ))
    .await;
    let gamma = tally(&http, m.listen, &[], 2000, "x").await;
    assert_eq!((gamma.errors, gamma.status(200)), (0, 2000), "{gamma:?}");
    println!("HTTPRoute 70/30: {gamma:?}");
    assert_share("HTTPRoute 70/30: v3", gamma.body("v3"), 2000, 0.3);

    m.sluice.shutdown().await;
}

/// The documented precedence: a ReleasePolicy on a service that a VirtualService routes replaces the route's
/// destinations to the service by the policy's split, and keeps the route's match, fault and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_policy_applies_inside_the_virtual_service_route() {
    let m = Mesh::start().await;
    let http = client();
    let vs = format!(
        "{DR}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: all\n    headers:\n      response:\n        set: {{x-route: reviews-vs}}\n    fault:\n      abort:\n        httpStatus: 503\n        percentage: {{value: 20}}\n    route:\n    - destination: {{host: reviews, subset: v1}}\n"
    );
    m.serve(&vs).await;
    let before = tally(&http, m.listen, &[], 400, "x-route").await;
    assert_eq!(before.body("v3"), 0, "the VirtualService sends everything to v1: {before:?}");

    let policy = "---\napiVersion: sluice.dev/v1alpha1\nkind: ReleasePolicy\nmetadata: {name: reviews-v3}\nspec:\n  service: reviews\n  stable: v1\n  canary: v3\n  traffic:\n    canaryWeight: 5000\n    rules:\n    - name: jason\n      to: canary\n      match:\n        headers: [{name: end-user, exact: jason}]\n";
    m.serve(&format!("{vs}{policy}")).await;
    let after = tally(&http, m.listen, &[], 2000, "x-route").await;
    assert_eq!(after.errors + after.status(200) + after.status(503), 2000, "{after:?}");
    println!("policy 50% inside a VirtualService route with a 20% fault: {after:?}");
    assert_eq!(after.fault_aborts, after.status(503), "every 503 is the fault filter's: {after:?}");
    assert_share("the VirtualService's fault is kept: 503", after.fault_aborts, 2000, 0.2);
    let ok = after.status(200);
    assert_share("the policy's 50% split inside the route: v3", after.body("v3"), ok, 0.5);
    assert_eq!(after.with_header, 2000, "the route's response header is kept on every answer: {after:?}");
    let jason = tally(&http, m.listen, &[("end-user", "jason")], 300, "x").await;
    assert_eq!(jason.body("v3"), jason.status(200), "the policy's rule routes jason to v3: {jason:?}");
    assert!(jason.status(503) > 0 && jason.status(200) > 200, "its fault still applies to jason: {jason:?}");

    m.sluice.shutdown().await;
}
