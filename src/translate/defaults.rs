//! What istiod writes where a user wrote nothing: the values operators moving from istiod rely on without
//! knowing it, where Envoy's own defaults differ. One place, so every route and cluster builder agrees and
//! `docs/istio-defaults.md` has one thing to describe.
//!
//! ```text
//!  RouteAction   timeout 0s (Envoy: 15 s)            max_grpc_timeout = the timeout (grpc-timeout honoured)
//!                retry_policy: 2 retries on connect-failure,refused-stream,unavailable,cancelled,
//!                              retriable-status-codes; previous_hosts; 5 host selection attempts
//!                              (VirtualService `retries` replaces it; `attempts: 0` removes it)
//!  Cluster       circuit breakers 2^32-1 for connections, pending, requests, retries (Envoy: 1024/1024/1024/3)
//!                connect_timeout 10s (Envoy: 5s), lb_policy LEAST_REQUEST (Envoy: ROUND_ROBIN)
//!  HCM           stream_idle_timeout 0s (Envoy: 5 min), websocket upgrades, normalize_path
//! ```
//! istiod's source for each: `pilot/pkg/networking/core/route/retry/retry.go` (`DefaultPolicy`,
//! `ConvertPolicy`), `route/route.go` (`setTimeout`), `cluster_traffic_policy.go`
//! (`getDefaultCircuitBreakerThresholds`, `applyLoadBalancer`), MeshConfig `connectTimeout`.

use super::{pack, seconds};
use crate::model::mesh::HttpRetry;
use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, circuit_breakers::Thresholds};
use envoy_types::pb::envoy::config::route::v3::{RetryPolicy, RouteAction, retry_policy};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};

/// Cluster `connect_timeout`: MeshConfig's default `connectTimeout`.
pub(crate) const CONNECT_TIMEOUT_SECS: i64 = 10;

/// istiod's default `retryOn` (also kept when a VirtualService sets `attempts` without `retryOn`).
pub(crate) const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;
const HOST_SELECTION_ATTEMPTS: i64 = 5;
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";

/// Fills the timeout and retry fields of a route action as istiod does: `timeout` (0 = none: a VirtualService
/// without one never cuts a slow answer), the same value as the cap on a gRPC client's `grpc-timeout` header, and
/// the retry policy: `retries` converted when given, else istiod's default. `hashed`: the route sends to one
/// destination with a consistent hash, whose retries must not move to another host.
///
/// The `grpc-timeout` cap is the deprecated `max_grpc_timeout`, as istiod writes it: its replacement,
/// `max_stream_duration`, makes Envoy ignore the route's `timeout` altogether (measured: a `timeout: 0.5s` route
/// then served a 5 s answer).
#[allow(deprecated)]
pub(crate) fn route_action(
    action: &mut RouteAction,
    timeout: Option<Duration>,
    retries: Option<&HttpRetry>,
    hashed: bool,
) {
    let timeout = timeout.unwrap_or(seconds(0));
    action.max_grpc_timeout = Some(timeout);
    action.timeout = Some(timeout);
    action.retry_policy = match retries {
        None => Some(default_retry_policy(hashed)),
        Some(r) => retry_policy(r, hashed),
    };
}

/// istiod's `DefaultPolicy()` (without the host predicate on a consistent-hash route).
pub(crate) fn default_retry_policy(hashed: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.to_string(),
        num_retries: Some(UInt32Value { value: DEFAULT_RETRIES }),
        retry_host_predicate: if hashed { Vec::new() } else { vec![previous_hosts()] },
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        ..Default::default()
    }
}

/// istiod's inbound retry policy: a request reset before it reached the app was never processed, so two
/// retries of it are safe for any method (the app closed an idle connection as the request arrived).
pub(crate) fn inbound_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "reset-before-request".to_string(),
        num_retries: Some(UInt32Value { value: DEFAULT_RETRIES }),
        ..Default::default()
    }
}

/// A VirtualService's `retries`, as istiod's `ConvertPolicy`: `attempts: 0` means no retry policy at all; fields
/// left out keep the defaults (`retryOn`, the previous-hosts predicate); numbers in `retryOn` become
/// `retriable_status_codes` (adding `retriable-status-codes` to `retry_on` when missing).
pub(crate) fn retry_policy(r: &HttpRetry, hashed: bool) -> Option<RetryPolicy> {
    if r.attempts == 0 {
        return None;
    }
    let mut out = default_retry_policy(hashed);
    out.num_retries = Some(UInt32Value { value: r.attempts });
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let (conditions, codes) = parse_retry_on(on);
        out.retry_on = conditions.join(",");
        if !codes.is_empty() && !out.retry_on.contains("retriable-status-codes") {
            if !out.retry_on.is_empty() {
                out.retry_on.push(',');
            }
            out.retry_on.push_str("retriable-status-codes");
        }
        out.retriable_status_codes = codes;
    }
    out.per_try_timeout = r.per_try_timeout.as_deref().and_then(super::traffic_policy::proto_duration);
    match r.retry_ignore_previous_hosts {
        Some(true) => out.retry_host_predicate = vec![previous_hosts()],
        Some(false) => out.retry_host_predicate.clear(),
        None => {}
    }
    if r.retry_remote_localities == Some(true) {
        let config = PreviousPrioritiesConfig { update_frequency: 2 };
        out.retry_priority = Some(retry_policy::RetryPriority {
            name: PREVIOUS_PRIORITIES.to_string(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(pack(&config))),
        });
    }
    if let Some(base) = r.backoff.as_deref().and_then(super::traffic_policy::proto_duration) {
        out.retry_back_off = Some(retry_policy::RetryBackOff { base_interval: Some(base), ..Default::default() });
    }
    Some(out)
}

/// `"5xx,503, reset"` → (`["5xx", "reset"]`, `[503]`): numbers that are HTTP status codes go to the codes.
fn parse_retry_on(text: &str) -> (Vec<String>, Vec<u32>) {
    let (mut conditions, mut codes) = (Vec::new(), Vec::new());
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if (100..=599).contains(&code) => codes.push(code),
            _ => conditions.push(part.to_string()),
        }
    }
    (conditions, codes)
}

fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: PREVIOUS_HOSTS.to_string(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack(
            &PreviousHostsPredicate::default(),
        ))),
    }
}

/// istiod's circuit breakers on every cluster: each threshold at 2^32-1, so Envoy's defaults (3 concurrent
/// retries, 1,024 connections, pending and active requests) never turn a burst into 503s. A DestinationRule's
/// `connectionPool` lowers the fields it sets (see `traffic_policy`).
pub(crate) fn circuit_breakers() -> CircuitBreakers {
    let max = Some(UInt32Value { value: u32::MAX });
    let thresholds = Thresholds {
        max_connections: max,
        max_pending_requests: max,
        max_requests: max,
        max_retries: max,
        ..Default::default()
    };
    CircuitBreakers { thresholds: vec![thresholds], ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(attempts: u32, on: Option<&str>) -> HttpRetry {
        HttpRetry { attempts, retry_on: on.map(String::from), ..Default::default() }
    }

    #[test]
    fn the_default_policy_is_istiods() {
        let p = default_retry_policy(false);
        assert_eq!(p.retry_on, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes");
        assert_eq!(p.num_retries, Some(UInt32Value { value: 2 }));
        assert!(p.retriable_status_codes.is_empty(), "istiod names no code: only the request header can");
        assert_eq!(p.retry_host_predicate[0].name, "envoy.retry_host_predicates.previous_hosts");
        assert_eq!(p.host_selection_retry_max_attempts, 5);
        assert!(default_retry_policy(true).retry_host_predicate.is_empty(), "a hashed route stays on its host");
    }

    #[test]
    fn virtual_service_retries_replace_the_default() {
        assert_eq!(retry_policy(&retry(0, None), false), None, "attempts: 0 means no retries");
        let kept = retry_policy(&retry(3, None), false).expect("policy");
        assert_eq!((kept.retry_on.as_str(), kept.num_retries), (DEFAULT_RETRY_ON, Some(UInt32Value { value: 3 })));
        let codes = retry_policy(&retry(3, Some("5xx, 503,gateway-error")), false).expect("policy");
        assert_eq!(codes.retry_on, "5xx,gateway-error,retriable-status-codes");
        assert_eq!(codes.retriable_status_codes, [503]);
        let only_codes = retry_policy(&retry(1, Some("503")), false).expect("policy");
        assert_eq!(
            (only_codes.retry_on.as_str(), only_codes.retriable_status_codes),
            ("retriable-status-codes", vec![503])
        );
        let named = retry_policy(&retry(1, Some("retriable-status-codes,502")), false).expect("policy");
        assert_eq!(named.retry_on, "retriable-status-codes", "not added twice");
    }

    #[test]
    fn a_route_without_timeout_never_times_out() {
        let mut a = RouteAction::default();
        route_action(&mut a, None, None, false);
        assert_eq!(a.timeout, Some(seconds(0)));
        #[allow(deprecated)]
        let grpc_cap = a.max_grpc_timeout;
        assert_eq!(grpc_cap, Some(seconds(0)));
        assert_eq!(a.max_stream_duration, None, "it would make Envoy ignore `timeout`");
        assert!(a.retry_policy.is_some());
        let half = Duration { seconds: 0, nanos: 500_000_000 };
        route_action(&mut a, Some(half), Some(&retry(0, None)), false);
        assert_eq!((a.timeout, a.retry_policy), (Some(half), None));
    }
}
