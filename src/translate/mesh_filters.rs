//! The HTTP filters mesh routes need: fault injection and CORS, each configured per route
//! (`typed_per_filter_config`); sidecar listeners always carry both filters.
//!
//! ```text
//!  HCM http_filters: envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.router
//!  route.typed_per_filter_config: {fault: HTTPFault{delay, abort}, cors: CorsPolicy}
//! ```

use super::mesh_route::fraction;
use super::pack;
use super::traffic_policy::proto_duration;
use crate::model::Model;
use crate::model::mesh::{CorsPolicy as IstioCors, HttpFaultInjection, HttpRoute, StringMatch};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{HttpFilter, http_filter};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;

pub(crate) const FAULT: &str = "envoy.filters.http.fault";
pub(crate) const CORS: &str = "envoy.filters.http.cors";

/// The per-route fault config: a fixed delay and/or an abort with an HTTP status, each for a share.
pub(crate) fn fault(f: &HttpFaultInjection) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| FaultDelay {
            fault_delay_secifier: proto_duration(&d.fixed_delay).map(fault_delay::FaultDelaySecifier::FixedDelay),
            percentage: Some(fraction(d.percentage)),
        }),
        abort: f.abort.as_ref().map(|a| FaultAbort {
            error_type: Some(match a.grpc_status.as_deref().and_then(crate::model::grpc_code) {
                Some(code) => fault_abort::ErrorType::GrpcStatus(code),
                None => fault_abort::ErrorType::HttpStatus(u32::from(a.http_status)),
            }),
            percentage: Some(fraction(a.percentage)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The per-route CORS policy.
pub(crate) fn cors(c: &IstioCors) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: c.allow_origins.iter().filter_map(origin).collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age.as_deref().and_then(proto_duration).map(|d| d.seconds.to_string()).unwrap_or_default(),
        allow_credentials: c.allow_credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}

fn origin(sm: &StringMatch) -> Option<StringMatcher> {
    use string_matcher::MatchPattern;
    let pattern = if let Some(v) = &sm.exact {
        MatchPattern::Exact(v.clone())
    } else if let Some(v) = &sm.prefix {
        MatchPattern::Prefix(v.clone())
    } else {
        MatchPattern::SafeRegex(RegexMatcher { regex: sm.regex.clone()?, engine_type: None })
    };
    Some(StringMatcher { match_pattern: Some(pattern), ignore_case: false })
}

/// The filters before the router in every sidecar HTTP connection manager: fault and CORS, as istiod puts
/// them. Always present (both do nothing without a route's config), so a VirtualService that starts using them
/// changes routes only: a listener change would leave open keep-alive connections on the old filter chain.
pub(crate) fn http_filters() -> Vec<HttpFilter> {
    vec![filter(FAULT, pack(&HttpFault::default())), filter(CORS, pack(&Cors::default()))]
}

/// Proxyless gRPC clients implement the fault filter (gRFC A33) but not CORS: they get fault only, and only
/// while some mesh route uses it.
pub(crate) fn proxyless_filters(model: &Model) -> Vec<HttpFilter> {
    let mut routes = model.virtual_services.values().flat_map(|v| v.spec.http.iter());
    if routes.any(|h: &HttpRoute| h.fault.is_some()) {
        vec![filter(FAULT, pack(&HttpFault::default()))]
    } else {
        Vec::new()
    }
}

fn filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
