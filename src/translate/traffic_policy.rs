//! A DestinationRule's `trafficPolicy` → Cluster fields, and its consistent hash → route hash policies.
//!
//! ```text
//!  loadBalancer.simple            ─▶ lb_policy (ROUND_ROBIN, RANDOM; LEAST_REQUEST for LEAST_CONN, LEAST_REQUEST
//!                                    and when unset, as istiod)
//!  loadBalancer.consistentHash    ─▶ lb_policy RING_HASH (+ minimum ring size); the key ─▶ RouteAction.hash_policy
//!  connectionPool.tcp             ─▶ circuit_breakers.max_connections, connect_timeout (others stay 2^32-1)
//!  connectionPool.http            ─▶ circuit_breakers.{max_pending_requests, max_requests, max_retries},
//!                                    HttpProtocolOptions.common_http_protocol_options.max_requests_per_connection
//!  outlierDetection               ─▶ outlier_detection (counts left out: Envoy's defaults), panic threshold
//! ```

use super::cluster::{HTTP_PROTOCOL_OPTIONS, http2_options};
use super::pack;
use crate::model::mesh::{
    ConnectionPoolSettings, ConsistentHashLb, OutlierDetection, SimpleLb, TrafficPolicy, parse_proto_duration,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, OutlierDetection as EnvoyOutlier, cluster};
use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, HttpProtocolOptions as CoreHttpOptions};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy, hash_policy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value, UInt64Value};

/// `"1.5s"` → a protobuf Duration (validation refuses what does not parse; here it is left out).
pub(crate) fn proto_duration(text: &str) -> Option<Duration> {
    let d = parse_proto_duration(text)?;
    Some(Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

fn u32v(v: u32) -> UInt32Value {
    UInt32Value { value: v }
}

/// Sets the cluster fields the policy asks for; `http2` says how the upstream speaks (for protocol options).
pub(crate) fn apply(policy: &TrafficPolicy, c: &mut Cluster, http2: bool) {
    if let Some(lb) = &policy.load_balancer {
        if let Some(simple) = lb.simple {
            c.lb_policy = match simple {
                // LEAST_CONN is istiod's deprecated alias; UNSPECIFIED is istiod's default.
                SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => cluster::LbPolicy::LeastRequest,
                SimpleLb::Random => cluster::LbPolicy::Random,
                // PASSTHROUGH is refused by validation.
                SimpleLb::RoundRobin | SimpleLb::Passthrough => cluster::LbPolicy::RoundRobin,
            } as i32;
        }
        if let Some(hash) = &lb.consistent_hash {
            c.lb_policy = cluster::LbPolicy::RingHash as i32;
            if let Some(min) = hash.minimum_ring_size {
                let ring = cluster::RingHashLbConfig {
                    minimum_ring_size: Some(UInt64Value { value: min }),
                    ..Default::default()
                };
                c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(ring));
            }
        }
    }
    if let Some(pool) = &policy.connection_pool {
        connection_pool(pool, c, http2);
    }
    if let Some(o) = &policy.outlier_detection {
        outlier(o, c);
    }
}

fn connection_pool(pool: &ConnectionPoolSettings, c: &mut Cluster, http2: bool) {
    // As istiod: each limit the rule sets (above 0) replaces istiod's 2^32-1 default; the others keep it.
    let breakers = c.circuit_breakers.get_or_insert_with(super::defaults::circuit_breakers);
    let Some(t) = breakers.thresholds.first_mut() else { return };
    let set = |field: &mut Option<UInt32Value>, v: Option<u32>| {
        if let Some(v) = v.filter(|v| *v > 0) {
            *field = Some(u32v(v));
        }
    };
    if let Some(tcp) = &pool.tcp {
        set(&mut t.max_connections, tcp.max_connections);
        if let Some(d) = tcp.connect_timeout.as_deref().and_then(proto_duration) {
            c.connect_timeout = Some(d);
        }
    }
    if let Some(http) = &pool.http {
        set(&mut t.max_pending_requests, http.http1_max_pending_requests);
        set(&mut t.max_requests, http.http2_max_requests);
        set(&mut t.max_retries, http.max_retries);
        if let Some(n) = http.max_requests_per_connection.filter(|n| *n > 0) {
            let mut options = if http2 { http2_options() } else { http1_options() };
            let common = CoreHttpOptions { max_requests_per_connection: Some(u32v(n)), ..Default::default() };
            options.common_http_protocol_options = Some(common);
            c.typed_extension_protocol_options.insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&options));
        }
    }
}

fn http1_options() -> HttpProtocolOptions {
    use http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig};
    HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Http1ProtocolOptions::default())),
        })),
        ..Default::default()
    }
}

fn outlier(o: &OutlierDetection, c: &mut Cluster) {
    // As istiod: a count left out is not written, so Envoy's default applies (5 consecutive 5xx, enforced;
    // gateway errors off); a count above 0 is enforced on every host; an explicit 0 turns that check off.
    // Success-rate ejection is off, and `minHealthPercent` (default 0) is the panic threshold.
    let count = |v: Option<u32>| v.map(u32v);
    let enforcing = |v: Option<u32>| v.map(|n| u32v(if n > 0 { 100 } else { 0 }));
    c.outlier_detection = Some(EnvoyOutlier {
        consecutive_5xx: count(o.consecutive_5xx_errors),
        enforcing_consecutive_5xx: enforcing(o.consecutive_5xx_errors),
        consecutive_gateway_failure: count(o.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforcing(o.consecutive_gateway_errors),
        interval: o.interval.as_deref().and_then(proto_duration),
        base_ejection_time: o.base_ejection_time.as_deref().and_then(proto_duration),
        max_ejection_percent: o.max_ejection_percent.filter(|p| *p > 0).map(u32v),
        enforcing_success_rate: Some(u32v(0)),
        ..Default::default()
    });
    let lb = c.common_lb_config.get_or_insert_with(Default::default);
    lb.healthy_panic_threshold = Some(Percent { value: f64::from(o.min_health_percent.unwrap_or(0)) });
}

/// The route hash policy of a consistent-hash load balancer (empty when the policy hashes nothing).
pub(crate) fn hash_policy(policy: Option<&TrafficPolicy>) -> Vec<HashPolicy> {
    let Some(h) = policy.and_then(|p| p.load_balancer.as_ref()).and_then(|lb| lb.consistent_hash.as_ref()) else {
        return Vec::new();
    };
    hash_key(h).map(|spec| HashPolicy { policy_specifier: Some(spec), terminal: false }).into_iter().collect()
}

fn hash_key(h: &ConsistentHashLb) -> Option<hash_policy::PolicySpecifier> {
    use hash_policy::PolicySpecifier as P;
    if let Some(name) = &h.http_header_name {
        return Some(P::Header(hash_policy::Header { header_name: name.clone(), regex_rewrite: None }));
    }
    if let Some(cookie) = &h.http_cookie {
        return Some(P::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            path: cookie.path.clone().unwrap_or_default(),
            ttl: cookie.ttl.as_deref().and_then(proto_duration),
            ..Default::default()
        }));
    }
    if h.use_source_ip == Some(true) {
        return Some(P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true }));
    }
    let name = h.http_query_parameter_name.clone()?;
    Some(P::QueryParameter(hash_policy::QueryParameter { name }))
}
