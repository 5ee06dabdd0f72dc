//! Checks of the mesh routing objects: each on its own (`validate`, paths under `spec.`) and against the rest
//! of the model ([`check_references`]: hosts, subsets, backends). Shared by the file source and `sluice
//! validate`, and meant for a cluster watcher's status conditions.

use super::{
    ConsistentHashLb, DestinationRuleSpec, HttpRoute, HttpRouteSpec, PathMatchType, StringMatch, TrafficPolicy,
    ValueMatchType, VirtualServiceSpec, service_of_host,
};
use crate::model::{FieldError, Model, ObjectKey, pattern};
use std::time::Duration;

/// Parses a protobuf-style duration as Istio writes them: `10s`, `0.5s`, `100ms`, `1m`, `1h`.
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = n * scale;
    (0.0..1e9).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

fn duration(path: &str, value: Option<&String>, out: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| parse_proto_duration(v).is_none()) {
        out.push(FieldError::new(path, format!("`{v}` is not a duration (like 10s, 0.5s, 100ms)")));
    }
}

fn percent(path: &str, value: Option<f64>, out: &mut Vec<FieldError>) {
    if let Some(v) = value.filter(|v| !(0.0..=100.0).contains(v)) {
        out.push(FieldError::new(path, format!("{v} is not between 0 and 100")));
    }
}

/// One `StringMatch`: exactly one of its forms (none for a presence test where `allow_empty`), and as Envoy
/// will check it: no empty `prefix` (where `prefix_min` says Envoy refuses one), a regex RE2 compiles within
/// Envoy's program-size limit.
fn string_match(path: &str, m: &StringMatch, allow_empty: bool, out: &mut Vec<FieldError>) {
    match m.count() {
        0 if allow_empty => {}
        1 => {}
        _ => out.push(FieldError::new(path, "needs exactly one of exact, prefix, regex")),
    }
    regex(&format!("{path}.regex"), m.regex.as_deref(), out);
}

/// A `StringMatch` that becomes an Envoy `StringMatcher` (headers, query parameters, pseudo-headers), whose
/// `prefix` must not be empty.
fn value_match(path: &str, m: &StringMatch, allow_empty: bool, out: &mut Vec<FieldError>) {
    string_match(path, m, allow_empty, out);
    if let Some(Err(e)) = m.prefix.as_deref().map(pattern::check_prefix) {
        out.push(FieldError::new(format!("{path}.prefix"), e));
    }
}

fn regex(path: &str, re: Option<&str>, out: &mut Vec<FieldError>) {
    if let Some(Err(e)) = re.map(pattern::check_regex) {
        out.push(FieldError::new(path, e));
    }
}

fn header_name(path: &str, name: &str, out: &mut Vec<FieldError>) {
    if let Err(e) = pattern::check_header_name(name) {
        out.push(FieldError::new(path, e));
    }
}

impl VirtualServiceSpec {
    /// Every problem of this spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.hosts.is_empty() {
            out.push(FieldError::new("spec.hosts", "must name at least one host"));
        }
        for (i, http) in self.http.iter().enumerate() {
            validate_http(&format!("spec.http[{i}]"), http, &mut out);
        }
        for (i, tls) in self.tls.iter().enumerate() {
            validate_tls_route(&format!("spec.tls[{i}]"), tls, &mut out);
        }
        out
    }
}

fn validate_tls_route(path: &str, tls: &super::TlsRoute, out: &mut Vec<FieldError>) {
    if tls.matches.is_empty() {
        out.push(FieldError::new(format!("{path}.match"), "needs at least one match with sniHosts"));
    }
    for (j, m) in tls.matches.iter().enumerate() {
        if m.sni_hosts.is_empty() {
            out.push(FieldError::new(format!("{path}.match[{j}].sniHosts"), "must name at least one SNI host"));
        }
        for (k, h) in m.sni_hosts.iter().enumerate() {
            if !super::is_listener_hostname(h) && h != "*" {
                let msg = format!("`{h}` is not a DNS name or `*.` wildcard");
                out.push(FieldError::new(format!("{path}.match[{j}].sniHosts[{k}]"), msg));
            }
        }
    }
    if tls.route.is_empty() {
        out.push(FieldError::new(format!("{path}.route"), "needs at least one destination"));
    }
    for (j, r) in tls.route.iter().enumerate() {
        if r.destination.host.is_empty() {
            out.push(FieldError::new(format!("{path}.route[{j}].destination.host"), "must not be empty"));
        }
    }
}

fn validate_http(path: &str, http: &HttpRoute, out: &mut Vec<FieldError>) {
    match (http.route.is_empty(), http.redirect.is_some()) {
        (true, false) => out.push(FieldError::new(format!("{path}.route"), "needs a route or a redirect")),
        (false, true) => out.push(FieldError::new(format!("{path}.redirect"), "cannot be combined with route")),
        _ => {}
    }
    for (j, m) in http.matches.iter().enumerate() {
        let p = format!("{path}.match[{j}]");
        if let Some(sm) = &m.uri {
            string_match(&format!("{p}.uri"), sm, false, out);
        }
        for (field, sm) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
            if let Some(sm) = sm {
                value_match(&format!("{p}.{field}"), sm, false, out);
            }
        }
        for (field, map) in
            [("headers", &m.headers), ("queryParams", &m.query_params), ("withoutHeaders", &m.without_headers)]
        {
            for (name, sm) in map {
                value_match(&format!("{p}.{field}.{name}"), sm, true, out);
                if field != "queryParams" {
                    header_name(&format!("{p}.{field}.{name}"), name, out);
                }
            }
        }
    }
    for (j, d) in http.route.iter().enumerate() {
        if d.destination.host.is_empty() {
            out.push(FieldError::new(format!("{path}.route[{j}].destination.host"), "must not be empty"));
        }
        if d.weight.is_some_and(|w| w > 100) {
            out.push(FieldError::new(format!("{path}.route[{j}].weight"), "must be between 0 and 100"));
        }
    }
    if !http.route.is_empty()
        && http.route.iter().map(|d| d.weight.unwrap_or(0)).sum::<u32>() == 0
        && http.route.len() > 1
    {
        out.push(FieldError::new(format!("{path}.route"), "the weights of several destinations must not all be 0"));
    }
    duration(&format!("{path}.timeout"), http.timeout.as_ref(), out);
    if let Some(r) = &http.retries {
        duration(&format!("{path}.retries.perTryTimeout"), r.per_try_timeout.as_ref(), out);
        duration(&format!("{path}.retries.backoff"), r.backoff.as_ref(), out);
        // As istiod's validation: `attempts: 0` turns retries off, so a setting for the retries is a mistake.
        let set = [r.per_try_timeout.is_some(), r.retry_on.is_some(), r.retry_remote_localities == Some(true)];
        if r.attempts == 0 && set.iter().any(|b| *b) {
            let msg = "is 0 (no retries), so perTryTimeout, retryOn and retryRemoteLocalities cannot be set";
            out.push(FieldError::new(format!("{path}.retries.attempts"), msg));
        }
    }
    if let Some(f) = &http.fault {
        if let Some(d) = &f.delay {
            duration(&format!("{path}.fault.delay.fixedDelay"), Some(&d.fixed_delay), out);
            percent(&format!("{path}.fault.delay.percentage.value"), d.percentage.map(|p| p.value), out);
        }
        if let Some(a) = &f.abort {
            match (&a.grpc_status, a.http_status) {
                (None, code) if !(200..=599).contains(&code) => {
                    out.push(FieldError::new(format!("{path}.fault.abort.httpStatus"), "must be between 200 and 599"));
                }
                (Some(_), code) if code != 0 => {
                    let msg = "cannot be set with grpcStatus: an abort has one status";
                    out.push(FieldError::new(format!("{path}.fault.abort.httpStatus"), msg));
                }
                (Some(name), _) if crate::model::grpc_code(name).is_none() => {
                    let msg = format!("{name:?} is not a gRPC status name (e.g. UNAVAILABLE, UNAUTHENTICATED)");
                    out.push(FieldError::new(format!("{path}.fault.abort.grpcStatus"), msg));
                }
                _ => {}
            }
            percent(&format!("{path}.fault.abort.percentage.value"), a.percentage.map(|p| p.value), out);
        }
    }
    percent(&format!("{path}.mirrorPercentage.value"), http.mirror_percentage.map(|p| p.value), out);
    if let Some(code) = http.redirect.as_ref().and_then(|r| r.redirect_code)
        && !matches!(code, 301 | 302 | 303 | 307 | 308)
    {
        out.push(FieldError::new(format!("{path}.redirect.redirectCode"), "must be 301, 302, 303, 307 or 308"));
    }
    if let Some(c) = &http.cors_policy {
        duration(&format!("{path}.corsPolicy.maxAge"), c.max_age.as_ref(), out);
        for (k, o) in c.allow_origins.iter().enumerate() {
            value_match(&format!("{path}.corsPolicy.allowOrigins[{k}]"), o, false, out);
        }
    }
    if let Some(re) = http.rewrite.as_ref().and_then(|r| r.uri_regex_rewrite.as_ref()) {
        regex(&format!("{path}.rewrite.uriRegexRewrite.match"), Some(&re.pattern), out);
    }
}

impl DestinationRuleSpec {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if self.host.is_empty() {
            out.push(FieldError::new("spec.host", "must not be empty"));
        }
        if let Some(p) = &self.traffic_policy {
            validate_policy("spec.trafficPolicy", p, &mut out);
        }
        for (i, s) in self.subsets.iter().enumerate() {
            let path = format!("spec.subsets[{i}]");
            if !crate::model::is_dns_label(&s.name) {
                out.push(FieldError::new(format!("{path}.name"), format!("`{}` is not a DNS label", s.name)));
            }
            if self.subsets[..i].iter().any(|o| o.name == s.name) {
                out.push(FieldError::new(format!("{path}.name"), format!("duplicate subset `{}`", s.name)));
            }
            if let Some(p) = &s.traffic_policy {
                validate_policy(&format!("{path}.trafficPolicy"), p, &mut out);
            }
        }
        out
    }
}

fn validate_policy(path: &str, p: &TrafficPolicy, out: &mut Vec<FieldError>) {
    if let Some(lb) = &p.load_balancer {
        if lb.simple.is_some() && lb.consistent_hash.is_some() {
            out.push(FieldError::new(format!("{path}.loadBalancer"), "needs one of simple, consistentHash"));
        }
        if lb.simple == Some(super::SimpleLb::Passthrough) {
            let msg = "PASSTHROUGH is not supported (Sluice serves EDS clusters); use ROUND_ROBIN or LEAST_REQUEST";
            out.push(FieldError::new(format!("{path}.loadBalancer.simple"), msg));
        }
        if let Some(h) = &lb.consistent_hash {
            validate_hash(&format!("{path}.loadBalancer.consistentHash"), h, out);
        }
    }
    if let Some(tcp) = p.connection_pool.as_ref().and_then(|c| c.tcp.as_ref()) {
        duration(&format!("{path}.connectionPool.tcp.connectTimeout"), tcp.connect_timeout.as_ref(), out);
    }
    if let Some(tls) = &p.tls {
        super::tls_validate::client_tls(&format!("{path}.tls"), tls, out);
    }
    for (i, level) in p.port_level_settings.iter().enumerate() {
        let at = format!("{path}.portLevelSettings[{i}]");
        if level.port.number == 0 {
            out.push(FieldError::new(format!("{at}.port.number"), "must be between 1 and 65535"));
        }
        if p.port_level_settings[..i].iter().any(|o| o.port.number == level.port.number) {
            out.push(FieldError::new(format!("{at}.port.number"), format!("duplicate port {}", level.port.number)));
        }
        if let Some(tls) = &level.tls {
            super::tls_validate::client_tls(&format!("{at}.tls"), tls, out);
        }
    }
    if let Some(o) = &p.outlier_detection {
        duration(&format!("{path}.outlierDetection.interval"), o.interval.as_ref(), out);
        duration(&format!("{path}.outlierDetection.baseEjectionTime"), o.base_ejection_time.as_ref(), out);
        if o.max_ejection_percent.is_some_and(|v| v > 100) {
            out.push(FieldError::new(format!("{path}.outlierDetection.maxEjectionPercent"), "must be 0..100"));
        }
    }
}

fn validate_hash(path: &str, h: &ConsistentHashLb, out: &mut Vec<FieldError>) {
    let keys = [h.http_header_name.is_some(), h.http_cookie.is_some(), h.use_source_ip == Some(true)]
        .into_iter()
        .chain([h.http_query_parameter_name.is_some()])
        .filter(|b| *b)
        .count();
    if keys != 1 {
        let msg = "needs exactly one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName";
        out.push(FieldError::new(path, msg));
    }
    if let Some(c) = &h.http_cookie {
        duration(&format!("{path}.httpCookie.ttl"), c.ttl.as_ref(), out);
    }
}

/// The HTTPRoute filter types Sluice translates.
pub const HTTP_ROUTE_FILTERS: [&str; 5] =
    ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "RequestMirror"];

impl HttpRouteSpec {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if !self.parent_refs.iter().any(|p| p.is_service() || p.is_gateway()) {
            let msg = "needs a parent of kind Service (GAMMA mesh routes) or Gateway (gateway.networking.k8s.io)";
            out.push(FieldError::new("spec.parentRefs", msg));
        }
        for (i, h) in self.hostnames.iter().enumerate() {
            if !super::is_listener_hostname(h) {
                let msg = format!("`{h}` is not a DNS name or `*.` wildcard (no IP addresses)");
                out.push(FieldError::new(format!("spec.hostnames[{i}]"), msg));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            for (j, m) in rule.matches.iter().enumerate() {
                let p = format!("{path}.matches[{j}]");
                if let Some(path_match) = m.path.as_ref().filter(|pm| pm.kind == Some(PathMatchType::RegularExpression))
                {
                    regex(&format!("{p}.path.value"), Some(path_match.value.as_deref().unwrap_or("/")), &mut out);
                }
                for (field, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                    for (k, v) in list.iter().enumerate() {
                        if field == "headers" {
                            header_name(&format!("{p}.{field}[{k}].name"), &v.name, &mut out);
                        }
                        if v.kind == Some(ValueMatchType::RegularExpression) {
                            regex(&format!("{p}.{field}[{k}].value"), Some(&v.value), &mut out);
                        }
                    }
                }
            }
            for (j, b) in rule.backend_refs.iter().enumerate() {
                if !b.backend().is_service() {
                    out.push(FieldError::new(format!("{path}.backendRefs[{j}].kind"), "only Service backends"));
                }
            }
            for (j, f) in rule.filters.iter().enumerate() {
                if let Some(m) = f.request_mirror.as_ref().filter(|m| m.percent.is_some_and(|p| p > 100)) {
                    let _ = m;
                    out.push(FieldError::new(format!("{path}.filters[{j}].requestMirror.percent"), "must be 0..100"));
                }
            }
            if let Some(t) = &rule.timeouts {
                duration(&format!("{path}.timeouts.request"), t.request.as_ref(), &mut out);
                duration(&format!("{path}.timeouts.backendRequest"), t.backend_request.as_ref(), &mut out);
            }
        }
        out
    }
}

/// A problem of one object found against the rest of the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferenceProblem {
    /// `VirtualService`, `DestinationRule` or `HTTPRoute`.
    pub kind: &'static str,
    pub key: ObjectKey,
    pub error: FieldError,
}

/// Hosts, subsets and backends that name nothing in the model (conflicts between objects are [`super::conflicts`]).
pub fn check_references(model: &Model) -> Vec<ReferenceProblem> {
    let mut out = Vec::new();
    let mut push = |kind, key: &ObjectKey, path: String, msg: String| {
        out.push(ReferenceProblem { kind, key: key.clone(), error: FieldError::new(path, msg) })
    };
    for (key, vs) in &model.virtual_services {
        // A VirtualService bound to a Gateway names the hosts outside clients ask for, not Services.
        let gateway_bound = vs.spec.gateways.iter().any(|g| g != "mesh");
        for (i, g) in vs.spec.gateways.iter().enumerate() {
            if let Some(gw) = super::gateway_ref(g, &key.namespace).filter(|gw| !model.gateways.contains_key(gw)) {
                push("VirtualService", key, format!("spec.gateways[{i}]"), format!("no Gateway {gw}"));
            }
        }
        for (i, host) in vs.spec.hosts.iter().enumerate().filter(|_| !gateway_bound) {
            // A second VirtualService for a Service is a conflict (see `conflicts`), reported, not refused.
            if !service_of_host(host, &key.namespace).is_some_and(|svc| model.services.contains_key(&svc)) {
                push("VirtualService", key, format!("spec.hosts[{i}]"), format!("no Service for host `{host}`"));
            }
        }
        for (i, http) in vs.spec.http.iter().enumerate() {
            let dests = http
                .route
                .iter()
                .enumerate()
                .map(|(j, d)| (format!("spec.http[{i}].route[{j}].destination"), &d.destination));
            let mirror = http.mirror.iter().map(|d| (format!("spec.http[{i}].mirror"), d));
            for (path, d) in dests.chain(mirror) {
                if let Some((field, msg)) = destination_problem(model, &key.namespace, d) {
                    push("VirtualService", key, format!("{path}.{field}"), msg);
                }
            }
        }
    }
    for (key, dr) in &model.destination_rules {
        // Several DestinationRules for a Service merge (see `conflicts` for what a merge drops).
        if !service_of_host(&dr.spec.host, &key.namespace).is_some_and(|svc| model.services.contains_key(&svc)) {
            push("DestinationRule", key, "spec.host".into(), format!("no Service for host `{}`", dr.spec.host));
        }
    }
    for (key, route) in &model.http_routes {
        for (i, p) in route.spec.parent_refs.iter().enumerate() {
            let svc = ObjectKey::new(p.namespace.as_deref().unwrap_or(&key.namespace), p.name.clone());
            if p.is_service() && !model.services.contains_key(&svc) {
                push("HTTPRoute", key, format!("spec.parentRefs[{i}].name"), format!("no Service {svc}"));
            }
        }
        for (i, rule) in route.spec.rules.iter().enumerate() {
            for (j, b) in rule.backend_refs.iter().enumerate() {
                let svc = ObjectKey::new(b.namespace.as_deref().unwrap_or(&key.namespace), b.name.clone());
                match model.services.get(&svc) {
                    None => push(
                        "HTTPRoute",
                        key,
                        format!("spec.rules[{i}].backendRefs[{j}].name"),
                        format!("no Service {svc}"),
                    ),
                    Some(s) if b.port.is_some_and(|p| !s.ports.iter().any(|sp| sp.port == p)) => {
                        let msg = format!("Service {svc} has no port {}", b.port.unwrap_or_default());
                        push("HTTPRoute", key, format!("spec.rules[{i}].backendRefs[{j}].port"), msg);
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Why a VirtualService destination names nothing: `(field, message)`.
fn destination_problem(model: &Model, namespace: &str, d: &super::Destination) -> Option<(&'static str, String)> {
    let Some(svc) = service_of_host(&d.host, namespace).filter(|s| model.services.contains_key(s)) else {
        return Some(("host", format!("no Service for host `{}`", d.host)));
    };
    let service = &model.services[&svc];
    if let Some(port) = d.port.as_ref().map(|p| p.number).filter(|p| !service.ports.iter().any(|sp| sp.port == *p)) {
        return Some(("port.number", format!("Service {svc} has no port {port}")));
    }
    let subset = d.subset.as_deref()?;
    let defined = model.destination_rule_for(&svc).is_some_and(|dr| dr.subset(subset).is_some());
    (!defined).then(|| ("subset", format!("no DestinationRule for `{}` defines subset `{subset}`", d.host)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mesh::{HttpRouteDestination, LoadBalancerSettings, SimpleLb};

    #[test]
    fn durations_as_istio_writes_them() {
        assert_eq!(parse_proto_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_proto_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_proto_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "5", "s", "1d", "-1s", "1.2.3s"] {
            assert_eq!(parse_proto_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_route_needs_a_destination_or_a_redirect_and_sane_weights() {
        let dest = |w| HttpRouteDestination {
            weight: w,
            destination: super::super::Destination { host: "r".into(), ..Default::default() },
            ..Default::default()
        };
        let spec = VirtualServiceSpec {
            hosts: vec!["r".into()],
            http: vec![
                HttpRoute::default(),
                HttpRoute { route: vec![dest(Some(0)), dest(None), dest(Some(101))], ..Default::default() },
            ],
            ..Default::default()
        };
        let paths: Vec<String> = spec.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["spec.http[0].route", "spec.http[1].route[2].weight"]);
    }

    #[test]
    fn passthrough_and_two_hash_keys_are_refused() {
        let lb = LoadBalancerSettings {
            simple: Some(SimpleLb::Passthrough),
            consistent_hash: Some(ConsistentHashLb {
                use_source_ip: Some(true),
                http_header_name: Some("x".into()),
                ..Default::default()
            }),
        };
        let spec = DestinationRuleSpec {
            host: "r".into(),
            traffic_policy: Some(TrafficPolicy { load_balancer: Some(lb), ..Default::default() }),
            subsets: vec![],
        };
        let paths: Vec<String> = spec.validate().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "spec.trafficPolicy.loadBalancer",
                "spec.trafficPolicy.loadBalancer.simple",
                "spec.trafficPolicy.loadBalancer.consistentHash"
            ]
        );
    }
}
