//! The file source and `sluice validate` with Istio VirtualService/DestinationRule and Gateway API HTTPRoute:
//! errors name `file:line`, the object and the field; fields Sluice does not translate are reported as warnings
//! (never silently dropped) and the rest of the object still applies.

use sluice::source;
use std::process::ExitCode;

const BASE: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: sluice.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec: {address: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
";

pub(super) fn validate(text: &str) -> (ExitCode, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    std::fs::write(&file, text).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = source::validate_to(std::slice::from_ref(&file), &mut out, &mut err).unwrap();
    let name = file.display().to_string();
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap(), name)
}

#[test]
fn unsupported_fields_are_warnings_with_their_lines() {
    let vs = "---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  exportTo: [\".\"]
  http:
  - name: first
    route:
    - destination: {host: reviews, subset: v1}
  - name: second
    directResponse: {status: 418}
    match:
    - uri: {prefix: /teapot}
      statPrefix: tea
    route:
    - destination: {host: reviews}
";
    let (code, out, err, file) = validate(&format!("{BASE}{vs}"));
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let expected = format!(
        "warning: {file}:27: VirtualService default/reviews: spec.exportTo: not supported by Sluice; ignored\n\
         warning: {file}:33: VirtualService default/reviews: spec.http[1].directResponse: not supported by Sluice; ignored\n\
         warning: {file}:36: VirtualService default/reviews: spec.http[1].match[0].statPrefix: not supported by Sluice; ignored\n\
         ok: 1 services, 1 workloads, 0 policies, 2 routing objects\n"
    );
    assert_eq!(out, expected);
    // The supported part applies.
    let model = source::parse_str(&format!("{BASE}{vs}"), "mesh.yaml").unwrap();
    assert_eq!(model.virtual_services.values().next().unwrap().spec.http.len(), 2);
}

#[test]
fn references_and_values_are_checked_with_file_lines() {
    let bad = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
  - fault:
      abort: {httpStatus: 700}
    route:
    - destination: {host: reviews, subset: v9}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection:
      interval: soon
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{kind: Service, name: reviews}]
  rules:
  - backendRefs:
    - {name: nope, port: 9080}
";
    let (code, out, err, f) = validate(&format!("{BASE}{bad}"));
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        format!(
            "{f}:31: VirtualService default/reviews: spec.http[1].fault.abort.httpStatus: must be between 200 and 599"
        ),
        format!(
            "{f}:33: VirtualService default/reviews: spec.http[1].route[0].destination.subset: no DestinationRule for `reviews` defines subset `v9`"
        ),
        format!("{f}:39: DestinationRule default/ratings: spec.host: no Service for host `ratings`"),
        format!(
            "{f}:42: DestinationRule default/ratings: spec.trafficPolicy.outlierDetection.interval: `soon` is not a duration (like 10s, 0.5s, 100ms)"
        ),
        format!("{f}:51: HTTPRoute default/reviews: spec.rules[0].backendRefs[0].name: no Service default/nope"),
    ];
    let mut got: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    got.sort_by_key(|l| l.split(':').nth(1).and_then(|n| n.parse::<usize>().ok()));
    assert_eq!(got, expected);
}

#[test]
fn type_errors_and_unknown_versions_name_the_line() {
    let bad = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: eighty
---
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: other}
spec: {}
";
    let err = source::parse_str(&format!("{BASE}{bad}"), "m.yaml").unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with("m.yaml:30: VirtualService default/reviews: spec.http[0].route[0].weight: invalid type"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("m.yaml:33: kind: unknown kind `VirtualService` of apiVersion `networking.istio.io/v2`"),
        "{err}"
    );
}

/// The file watcher logs and counts each untranslated field: `/metrics` shows the count by kind. (The only test
/// in `tests/source` that installs the process-wide recorder, so the count is this file's alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_counts_unsupported_fields_in_metrics() {
    sluice::telemetry::install().expect("only this test of tests/source installs the recorder");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  exportTo: [\".\"]\n  tcp: [{route: [{destination: {host: reviews}}]}]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
    std::fs::write(&file, format!("{BASE}{vs}")).unwrap();
    let store = sluice::store::Store::new();
    store.register_source(source::SOURCE);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let watcher =
        tokio::spawn(source::watch(vec![file], store.clone(), std::time::Duration::from_millis(20), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.model().virtual_services.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the file was not loaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = sluice::telemetry::render();
    let line = text.lines().find(|l| l.starts_with("sluice_unsupported_fields_total{")).unwrap_or_default();
    assert_eq!(line, "sluice_unsupported_fields_total{kind=\"VirtualService\"} 2", "{text}");
    let _ = stop.send(true);
    watcher.await.unwrap();
}

/// Regexes Envoy's RE2 refuses and empty prefixes in VirtualService and HTTPRoute matches fail `sluice validate`
/// with `file:line` and the field (a route Envoy NACKs would freeze every later route change on the proxy).
#[test]
fn matchers_envoy_refuses_fail_validation() {
    let bad = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {regex: \"(?!jason).*\"}
      queryParams:
        q: {prefix: \"\"}
      uri: {regex: \"/api/(v1\"}
    route:
    - destination: {host: reviews}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{kind: Service, name: reviews}]
  rules:
  - matches:
    - path: {type: RegularExpression, value: \"/a{1000}{1000}\"}
    backendRefs:
    - {name: reviews, port: 9080}
";
    let (code, out, err, f) = validate(&format!("{BASE}{bad}"));
    assert_eq!(code, ExitCode::FAILURE, "{out}");
    let fields: Vec<&str> = err.lines().map(|l| l.split(": ").nth(2).unwrap_or(l)).collect();
    assert_eq!(
        fields,
        [
            "spec.http[0].match[0].headers.end-user.regex",
            "spec.http[0].match[0].queryParams.q.prefix",
            "spec.http[0].match[0].uri.regex",
            "spec.rules[0].matches[0].path.value"
        ],
        "{err}"
    );
    assert!(err.lines().all(|l| l.starts_with(&f)), "each names the file and line: {err}");
    assert!(err.contains("invalid perl operator") && err.contains("bad repetition operator"), "{err}");
}

/// A gRPC status to abort with is a `google.rpc.Code` name, as istiod reads it; fields a proxyless gRPC client
/// does not implement are named as notes (the config is valid: sidecars apply them).
#[test]
fn grpc_status_names_are_checked_and_grpc_notes_are_printed() {
    let vs = |abort: &str| {
        format!(
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - fault:
      abort: {abort}
    rewrite: {{uri: /v2}}
    route:
    - destination: {{host: reviews, subset: v1}}
"
        )
    };
    let (code, _, err, f) = validate(&format!("{BASE}{}", vs("{grpcStatus: unavailable}")));
    assert_eq!(code, ExitCode::FAILURE);
    assert_eq!(
        err.trim(),
        format!(
            "{f}:29: VirtualService default/reviews: spec.http[0].fault.abort.grpcStatus: \"unavailable\" is not a \
             gRPC status name (e.g. UNAVAILABLE, UNAUTHENTICATED)"
        )
    );
    let (code, _, err, _) = validate(&format!("{BASE}{}", vs("{grpcStatus: UNAVAILABLE, httpStatus: 503}")));
    assert_eq!(code, ExitCode::FAILURE);
    assert!(err.contains("spec.http[0].fault.abort.httpStatus: cannot be set with grpcStatus"), "{err}");

    let (code, out, err, f) = validate(&format!("{BASE}{}", vs("{grpcStatus: UNAVAILABLE}")));
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(
        out.contains(&format!(
            "note: {f}:24: VirtualService default/reviews: spec.http[0].rewrite: gRPC clients do not rewrite; \
             calls keep their path"
        )),
        "{out}"
    );
}
