//! The objects of Istio's published Bookinfo samples that the tests load unchanged in content (the same kinds,
//! names, hosts, subsets and fields as `samples/bookinfo/networking/*.yaml`, written in flow style here).

/// `destination-rule-all-mtls.yaml`: every Bookinfo service's subsets, with `tls.mode: ISTIO_MUTUAL`.
pub const DESTINATION_RULE_ALL_MTLS: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: productpage}
spec:
  host: productpage
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v2-mysql, labels: {version: v2-mysql}}
  - {name: v2-mysql-vm, labels: {version: v2-mysql-vm}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details}
spec:
  host: details
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// The four Bookinfo Services (port 9080), for configs that load the samples above.
pub fn bookinfo_services() -> String {
    ["productpage", "details", "reviews", "ratings"]
        .iter()
        .map(|s| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {s}}}\nspec:\n  selector: {{app: {s}}}\n  \
                 ports: [{{name: http, port: 9080}}]\n---\n"
            )
        })
        .collect()
}

/// A VirtualService for `reviews` sending everything to `subset` (the `virtual-service-reviews-*` shape).
pub fn reviews_to(name: &str, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec:\n  hosts: \
         [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
    )
}

/// `gateway-api/bookinfo-gateway.yaml`: Gateway `bookinfo-gateway` (class `istio`, one HTTP listener on 80 taking
/// routes of its own namespace) and HTTPRoute `bookinfo` with the sample's five path matches to productpage:9080.
pub const GATEWAY_API_BOOKINFO_GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  rules:
  - matches:
    - path: {type: Exact, value: /productpage}
    - path: {type: PathPrefix, value: /static}
    - path: {type: Exact, value: /login}
    - path: {type: Exact, value: /logout}
    - path: {type: PathPrefix, value: /api/v1/products}
    backendRefs: [{name: productpage, port: 9080}]
";
