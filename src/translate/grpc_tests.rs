use super::*;
use crate::model::{InterceptionMode, ProxyInfo};
use envoy_types::pb::envoy::config::route::v3::Route;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: grpc, port: 9090, appProtocol: grpc}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {exact: /grpc.testing.TestService/UnaryCall}}]
    timeout: 3s
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}]}
    rewrite: {uri: /other}
    retries: {attempts: 5, retryOn: "5xx,unavailable"}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 10s, maxEjectionPercent: 50}
"#;

fn model() -> Model {
    crate::source::file::parse_str(MESH, "mesh.yaml").expect("valid mesh")
}

fn proxy(mode: InterceptionMode) -> ProxyInfo {
    ProxyInfo { mode, ..ProxyInfo::listening("c", "default", "127.0.0.1:1".parse().expect("addr")) }
}

/// The routes of the `echo` virtual host for a proxy of `mode`.
fn echo_routes(mode: InterceptionMode) -> Vec<Route> {
    let m = model();
    let scope = super::super::route_scope(&m, &proxy(mode));
    let configs = super::super::route_configs(&m, &scope);
    let vhost = configs.iter().flat_map(|c| &c.virtual_hosts).find(|v| v.name.starts_with("echo."));
    vhost.expect("echo's virtual host").routes.clone()
}

fn action(r: &Route) -> &envoy_types::pb::envoy::config::route::v3::RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
#[allow(deprecated)]
fn a_timeout_is_a_max_stream_duration_for_grpc_clients_and_cors_is_dropped() {
    let grpc = echo_routes(InterceptionMode::Proxyless);
    let three = envoy_types::pb::google::protobuf::Duration { seconds: 3, nanos: 0 };
    let msd = action(&grpc[0]).max_stream_duration.as_ref().expect("the 3 s route has a max stream duration");
    assert_eq!(msd.max_stream_duration, Some(three));
    assert_eq!(msd.grpc_timeout_header_max, Some(three), "a longer grpc-timeout is capped at 3 s");
    assert_eq!(action(&grpc[0]).timeout, None, "gRPC reads no `timeout`");
    assert!(!grpc[0].typed_per_filter_config.contains_key(CORS), "gRPC would refuse a CORS config");
    assert_eq!(action(&grpc[1]).max_stream_duration, None, "the default route has no limit");

    let envoy = echo_routes(InterceptionMode::Listen("127.0.0.1:15001".parse().expect("addr")));
    assert_eq!(action(&envoy[0]).timeout, Some(three), "sidecars keep istiod's form");
    assert_eq!(action(&envoy[0]).max_stream_duration, None);
    assert!(envoy[0].typed_per_filter_config.contains_key(CORS));
}

#[test]
fn grpc_clusters_balance_round_robin_and_eject_by_failure_percentage() {
    let m = model();
    let clusters = super::super::clusters(&m);
    let c = clusters.iter().find(|c| c.name.contains("echo")).expect("echo's cluster");
    assert_eq!(c.lb_policy, cluster::LbPolicy::LeastRequest as i32, "istiod's default for sidecars");
    let g = for_grpc(c).expect("gRPC needs another form");
    assert_eq!(g.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    let o = g.outlier_detection.expect("outlier detection kept");
    let v = |x: Option<UInt32Value>| x.map(|v| v.value);
    assert_eq!(v(o.consecutive_5xx), Some(3), "Envoy's form is kept beside");
    assert_eq!(v(o.failure_percentage_request_volume), Some(3), "3 calls, as 3 consecutive errors");
    assert_eq!(v(o.failure_percentage_threshold), Some(FAILURE_PERCENTAGE_THRESHOLD));
    assert_eq!(v(o.enforcing_failure_percentage), Some(100));
    assert_eq!(v(o.failure_percentage_minimum_hosts), Some(1), "gRPC's default 5 would never eject of 2 hosts");
    assert_eq!(o.interval.map(|d| d.seconds), Some(1));

    let mut plain = c.clone();
    plain.lb_policy = cluster::LbPolicy::RingHash as i32;
    plain.outlier_detection = None;
    assert_eq!(for_grpc(&plain), None, "a ring-hash cluster without outlier detection serves gRPC as it is");
    let mut off = c.clone();
    off.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    off.outlier_detection.as_mut().expect("o").enforcing_consecutive_5xx = Some(UInt32Value { value: 0 });
    assert_eq!(for_grpc(&off), None, "`consecutive5xxErrors: 0` turns ejection off for gRPC too");
}

#[test]
fn validate_notes_name_the_fields_grpc_does_not_implement() {
    let notes = grpc_notes(&model());
    let fields: Vec<&str> = notes.iter().map(|n| n.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.http[0].rewrite",
            "spec.http[0].corsPolicy",
            "spec.http[0].retries.retryOn",
            "spec.http[0].retries.attempts",
            "spec.trafficPolicy.outlierDetection",
        ]
    );
    assert_eq!(notes[0].object, "VirtualService default/echo");
    assert!(notes[0].to_string().starts_with("mesh.yaml:"), "{}", notes[0]);
    assert!(notes[2].note.ends_with("it ignores 5xx"), "{}", notes[2]);
}
