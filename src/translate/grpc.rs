//! What proxyless gRPC clients take differently from Envoy sidecars: the same objects, written in the form gRPC's
//! xDS client reads (gRFCs A28 routing, A31 timeouts, A32 circuit breaking, A33 faults, A42 ring hash, A44
//! retries, A50 outlier detection), and the notes `sluice validate` prints for fields gRPC does not implement.
//!
//! ```text
//!  Cluster   lb_policy LEAST_REQUEST, RANDOM ─▶ ROUND_ROBIN (gRPC has ROUND_ROBIN and RING_HASH only)
//!            outlier consecutive errors N   ─▶ failure-percentage ejection: ≥ 85% of ≥ N calls failed in one
//!                                              interval (gRPC implements success-rate and failure-percentage only)
//!  Route     timeout T (0 = none)           ─▶ max_stream_duration T, grpc-timeout header capped at T (gRPC reads
//!                                              neither `timeout` nor `max_grpc_timeout`)
//!            CORS per-filter config         ─▶ dropped (gRPC has no CORS filter and would refuse the route)
//!            request mirror policies        ─▶ dropped (gRPC does not mirror)
//! ```
//! Everything else (matchers, weights, retries, fault, circuit breakers, ring hash key, EDS) is the sidecar's form
//! already, and gRPC reads what it implements of it: [`grpc_notes`] names what it does not.

use super::mesh_filters::CORS;
use crate::model::Model;
use crate::model::mesh::{DestinationRule, HttpRoute, TrafficPolicy, VirtualService};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::google::protobuf::UInt32Value;

/// Envoy's default failure-percentage threshold, used for the ejection gRPC clients get instead of consecutive
/// errors.
const FAILURE_PERCENTAGE_THRESHOLD: u32 = 85;
/// Envoy's default `consecutive_5xx` (a DestinationRule's `outlierDetection` without counts enforces it).
const DEFAULT_CONSECUTIVE: u32 = 5;
/// The `retryOn` conditions gRPC implements (gRFC A44); it ignores the others.
const GRPC_RETRY_ON: [&str; 5] = ["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"];

/// The cluster as a proxyless gRPC client needs it, when that differs (`None`: it serves gRPC as it is).
/// - gRPC accepts `ROUND_ROBIN` and `RING_HASH` only, so istiod's `LEAST_REQUEST` default (and a DestinationRule's
///   `LEAST_REQUEST`/`RANDOM`) becomes `ROUND_ROBIN`, as istiod's generator for gRPC clients writes it.
/// - gRPC ignores consecutive-error ejection; an enforced count N becomes failure-percentage ejection: an
///   endpoint with at least N calls in one interval, 85% or more of them failed, is ejected (one that answers
///   only errors is, as N consecutive errors would eject it from an Envoy). Interval, ejection time and maximum
///   share are the rule's.
pub fn for_grpc(c: &Cluster) -> Option<Cluster> {
    let mut out = None::<Cluster>;
    let lb = cluster::LbPolicy::try_from(c.lb_policy).ok()?;
    if matches!(lb, cluster::LbPolicy::LeastRequest | cluster::LbPolicy::Random) {
        out.get_or_insert_with(|| c.clone()).lb_policy = cluster::LbPolicy::RoundRobin as i32;
    }
    if let Some(calls) = c.outlier_detection.as_ref().and_then(consecutive_enforced) {
        let o = out.get_or_insert_with(|| c.clone()).outlier_detection.as_mut()?;
        o.failure_percentage_threshold = Some(UInt32Value { value: FAILURE_PERCENTAGE_THRESHOLD });
        o.enforcing_failure_percentage = Some(UInt32Value { value: 100 });
        o.failure_percentage_minimum_hosts = Some(UInt32Value { value: 1 });
        o.failure_percentage_request_volume = Some(UInt32Value { value: calls });
    }
    out
}

/// The smallest enforced consecutive-error count (unset counts: Envoy's defaults, 5 enforced for 5xx and
/// gateway errors not enforced).
fn consecutive_enforced(o: &envoy_types::pb::envoy::config::cluster::v3::OutlierDetection) -> Option<u32> {
    let value = |v: &Option<UInt32Value>| v.as_ref().map(|v| v.value);
    let five = (value(&o.enforcing_consecutive_5xx).unwrap_or(100) > 0)
        .then(|| value(&o.consecutive_5xx).unwrap_or(DEFAULT_CONSECUTIVE));
    let gateway = (value(&o.enforcing_consecutive_gateway_failure).unwrap_or(0) > 0)
        .then(|| value(&o.consecutive_gateway_failure).unwrap_or(DEFAULT_CONSECUTIVE));
    five.into_iter().chain(gateway).filter(|n| *n > 0).min()
}

/// Rewrites a route configuration for gRPC clients (see the module docs), in place.
#[allow(deprecated)]
pub(crate) fn routes_for_grpc(config: &mut RouteConfiguration) {
    for vhost in &mut config.virtual_hosts {
        vhost.typed_per_filter_config.remove(CORS);
        for r in &mut vhost.routes {
            r.typed_per_filter_config.remove(CORS);
            let Some(route::Action::Route(action)) = &mut r.action else { continue };
            let timeout = action.timeout.take().filter(|t| t.seconds > 0 || t.nanos > 0);
            action.max_grpc_timeout = None;
            // gRPC does not mirror; a mirror-only cluster would be one it never asks for.
            action.request_mirror_policies.clear();
            action.max_stream_duration = timeout.map(|t| route_action::MaxStreamDuration {
                max_stream_duration: Some(t),
                grpc_timeout_header_max: Some(t),
                ..Default::default()
            });
            if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &mut action.cluster_specifier {
                for c in &mut w.clusters {
                    c.typed_per_filter_config.remove(CORS);
                }
            }
        }
    }
}

/// One field a proxyless gRPC client does not implement as an Envoy sidecar does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrpcNote {
    /// Where the object is: `mesh.yaml:12` (empty for objects from code).
    pub at: String,
    /// `VirtualService default/reviews`.
    pub object: String,
    /// The field path, as validation errors name it: `spec.http[0].rewrite`.
    pub field: String,
    pub note: String,
}

impl std::fmt::Display for GrpcNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.at.is_empty() {
            write!(f, "{}: ", self.at)?;
        }
        write!(f, "{}: {}: {}", self.object, self.field, self.note)
    }
}

/// What gRPC clients of the model's Services ignore or take in another form, per object and field, sorted.
pub fn grpc_notes(model: &Model) -> Vec<GrpcNote> {
    let mut out = Vec::new();
    for (key, vs) in model.virtual_services.iter() {
        let mut notes = Vec::new();
        virtual_service_notes(vs, &format!("VirtualService {key}"), &mut notes);
        out.extend(notes.into_iter().map(|n| GrpcNote { at: vs.provenance.at.clone(), ..n }));
    }
    for (key, dr) in model.destination_rules.iter() {
        let mut notes = Vec::new();
        destination_rule_notes(dr, &format!("DestinationRule {key}"), &mut notes);
        out.extend(notes.into_iter().map(|n| GrpcNote { at: dr.provenance.at.clone(), ..n }));
    }
    out
}

fn note(out: &mut Vec<GrpcNote>, object: &str, field: String, note: &str) {
    out.push(GrpcNote { at: String::new(), object: object.to_string(), field, note: note.to_string() });
}

fn virtual_service_notes(vs: &VirtualService, object: &str, out: &mut Vec<GrpcNote>) {
    for (i, http) in vs.spec.http.iter().enumerate() {
        http_notes(http, object, &format!("spec.http[{i}]"), out);
    }
}

fn http_notes(http: &HttpRoute, object: &str, path: &str, out: &mut Vec<GrpcNote>) {
    for (j, m) in http.matches.iter().enumerate() {
        let at = format!("{path}.match[{j}]");
        if !m.query_params.is_empty() {
            note(out, object, format!("{at}.queryParams"), "gRPC never matches a route with query parameters");
        }
        if m.scheme.is_some() || m.authority.is_some() {
            note(out, object, at.clone(), "gRPC ignores scheme and authority matches (pseudo-headers)");
        }
        if m.method.is_some() {
            note(out, object, format!("{at}.method"), "gRPC calls are all POST; the match is on `:method`");
        }
    }
    if http.rewrite.is_some() {
        note(out, object, format!("{path}.rewrite"), "gRPC clients do not rewrite; calls keep their path");
    }
    if http.redirect.is_some() {
        note(out, object, format!("{path}.redirect"), "gRPC fails a call on a redirect route (UNAVAILABLE)");
    }
    if http.mirror.is_some() || http.mirror_percentage.is_some() {
        note(out, object, format!("{path}.mirror"), "gRPC clients do not mirror");
    }
    if http.headers.is_some() || http.route.iter().any(|d| d.headers.is_some()) {
        note(out, object, format!("{path}.headers"), "gRPC clients do not add or remove headers");
    }
    if http.cors_policy.is_some() {
        note(out, object, format!("{path}.corsPolicy"), "dropped for gRPC clients (no CORS filter)");
    }
    if let Some(r) = &http.retries {
        let on = r.retry_on.as_deref().unwrap_or_default();
        let ignored: Vec<&str> =
            on.split(',').map(str::trim).filter(|c| !c.is_empty() && !GRPC_RETRY_ON.contains(c)).collect();
        if !ignored.is_empty() {
            let msg = format!("gRPC retries on {} only; it ignores {}", GRPC_RETRY_ON.join(", "), ignored.join(", "));
            note(out, object, format!("{path}.retries.retryOn"), &msg);
        }
        if r.attempts > 4 {
            note(out, object, format!("{path}.retries.attempts"), "gRPC makes at most 5 attempts (4 retries)");
        }
        if r.per_try_timeout.is_some() {
            note(out, object, format!("{path}.retries.perTryTimeout"), "gRPC ignores a per-try timeout");
        }
    }
}

fn destination_rule_notes(dr: &DestinationRule, object: &str, out: &mut Vec<GrpcNote>) {
    if let Some(p) = &dr.spec.traffic_policy {
        policy_notes(p, object, "spec.trafficPolicy", out);
    }
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if let Some(p) = &s.traffic_policy {
            policy_notes(p, object, &format!("spec.subsets[{i}].trafficPolicy"), out);
        }
    }
}

fn policy_notes(p: &TrafficPolicy, object: &str, path: &str, out: &mut Vec<GrpcNote>) {
    use crate::model::mesh::SimpleLb;
    if let Some(lb) = &p.load_balancer {
        if matches!(lb.simple, Some(SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Random)) {
            note(out, object, format!("{path}.loadBalancer.simple"), "gRPC clients balance ROUND_ROBIN");
        }
        if let Some(h) = &lb.consistent_hash
            && h.http_header_name.is_none()
        {
            let msg = "gRPC hashes on httpHeaderName only; with a cookie, source IP or query parameter each call \
                       picks a random ring position";
            note(out, object, format!("{path}.loadBalancer.consistentHash"), msg);
        }
    }
    if let Some(pool) = &p.connection_pool {
        if pool.tcp.is_some() {
            note(out, object, format!("{path}.connectionPool.tcp"), "gRPC clients ignore TCP connection limits");
        }
        if let Some(h) = &pool.http
            && (h.http1_max_pending_requests.is_some()
                || h.max_retries.is_some()
                || h.max_requests_per_connection.is_some())
        {
            let msg = "gRPC clients limit http2MaxRequests (calls in flight) only";
            note(out, object, format!("{path}.connectionPool.http"), msg);
        }
    }
    if let Some(o) = &p.outlier_detection {
        let n = o.consecutive_5xx_errors.or(o.consecutive_gateway_errors).unwrap_or(DEFAULT_CONSECUTIVE);
        let msg = format!(
            "gRPC clients eject by failure percentage: an endpoint with {FAILURE_PERCENTAGE_THRESHOLD}% or more of \
             at least {n} calls failed in one interval (gRPC has no consecutive-error ejection); minHealthPercent \
             does not apply"
        );
        note(out, object, format!("{path}.outlierDetection"), &msg);
    }
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
