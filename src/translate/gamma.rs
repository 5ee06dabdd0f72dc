//! Gateway API HTTPRoutes bound to a Service (GAMMA) → the same rules as a VirtualService's `http` (as istiod
//! converts them), so one route builder serves both.
//!
//! ```text
//!  rules[i].matches[j]  path Exact|PathPrefix|RegularExpression ─▶ uri exact | prefix (+ exact) | regex
//!                       headers, queryParams (Exact|RegularExpression), method ─▶ the same match fields
//!  parentRefs[].port ─▶ match.port        route namespace ≠ Service namespace (consumer route) ─▶ sourceNamespace
//!  backendRefs[] {name, port, weight}    ─▶ route[] {destination {host, port}, weight}  (default weight 1)
//!  filters RequestHeaderModifier / ResponseHeaderModifier ─▶ headers.request / headers.response
//!          RequestRedirect ─▶ redirect    URLRewrite ─▶ rewrite    RequestMirror ─▶ mirror + mirrorPercentage
//!  timeouts.request ─▶ timeout            timeouts.backendRequest ─▶ timeout (wins over request, as istiod)
//! ```
//! Rules of several HTTPRoutes on one Service are concatenated, consumer routes first, then the oldest first; route
//! names are `ns.name.i`.

use super::mesh_route::MeshRule;
use crate::model::mesh::HttpRouteObject;
use crate::model::mesh::{
    Destination, HeaderModifier, HeaderOperations, Headers, HttpMatchRequest, HttpRedirect, HttpRewrite, HttpRoute,
    HttpRouteMatch, HttpRouteRule, PathMatchType, PathModifier, Percent, PortSelector, RegexRewrite, StringMatch,
    ValueMatchType,
};
use crate::model::{Model, ObjectKey};

/// The rules of every HTTPRoute whose parent is the Service `key`.
pub(crate) fn rules_for(model: &Model, key: &ObjectKey) -> Vec<MeshRule> {
    let mut out = Vec::new();
    // Consumer routes (from the client's namespace) come first: for their clients they win over the producer's.
    // Then the oldest first, as istiod merges them.
    let mut routes: Vec<_> = model.http_routes_for(key).collect();
    routes.sort_by(|a, b| {
        (a.0.namespace == key.namespace)
            .cmp(&(b.0.namespace == key.namespace))
            .then_with(|| crate::model::mesh::older((a.0, &a.1.provenance), (b.0, &b.1.provenance)))
    });
    for (route_key, route) in routes {
        let ports: Vec<Option<u16>> =
            route.spec.parent_refs.iter().filter(|p| p.is_service() && p.name == key.name).map(|p| p.port).collect();
        let port = if ports.contains(&None) { None } else { ports.first().copied().flatten() };
        let consumer = (route_key.namespace != key.namespace).then(|| route_key.namespace.clone());
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let name = format!("{}.{}.{i}", route_key.namespace, route_key.name);
            let http = convert(name, rule, port, consumer.as_deref());
            out.push(MeshRule { origin: route_key.clone(), index: i, http, gateway_api: true });
        }
    }
    out
}

/// The rules of the HTTPRoutes attached to one gateway virtual host (`routes`, oldest first): one per match, in
/// Gateway API's precedence (an exact path, then a regex, then the longest prefix, then a method, then the most
/// headers, then the most query parameters; ties keep the oldest route's, then rule order). A backend in another
/// namespace without a ReferenceGrant is dropped (a rule left with none answers 500, as the spec asks).
pub(crate) fn gateway_rules(model: &Model, routes: &[(&ObjectKey, &HttpRouteObject)]) -> Vec<MeshRule> {
    let mut keyed = Vec::new();
    for (route_key, route) in routes {
        for (i, rule) in route.spec.rules.iter().enumerate() {
            let mut rule = rule.clone();
            rule.backend_refs.retain(|b| {
                let svc = ObjectKey::new(b.namespace.as_deref().unwrap_or(&route_key.namespace), b.name.clone());
                crate::model::mesh::backend_permitted(model, &route_key.namespace, &svc)
            });
            let matches = if rule.matches.is_empty() { vec![HttpRouteMatch::default()] } else { rule.matches.clone() };
            for m in matches {
                let one = HttpRouteRule { matches: vec![m.clone()], ..rule.clone() };
                let name = format!("{}.{}.{i}", route_key.namespace, route_key.name);
                let http = convert(name, &one, None, None);
                keyed.push((
                    precedence(&m),
                    MeshRule { origin: (*route_key).clone(), index: i, http, gateway_api: true },
                ));
            }
        }
    }
    keyed.sort_by_key(|a| a.0);
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// A sort key: smaller goes first.
fn precedence(
    m: &HttpRouteMatch,
) -> (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
    let (kind, len) = match m.path.as_ref() {
        Some(p) => {
            let len = p.value.as_deref().unwrap_or("/").len();
            match p.kind.unwrap_or(PathMatchType::PathPrefix) {
                PathMatchType::Exact => (0, len),
                PathMatchType::RegularExpression => (1, len),
                PathMatchType::PathPrefix => (2, len),
            }
        }
        None => (2, 1),
    };
    use std::cmp::Reverse;
    (kind, Reverse(len), m.method.is_none(), Reverse(m.headers.len()), Reverse(m.query_params.len()))
}

fn convert(name: String, rule: &HttpRouteRule, port: Option<u16>, consumer: Option<&str>) -> HttpRoute {
    let mut matches: Vec<HttpMatchRequest> = rule.matches.iter().flat_map(to_matches).collect();
    if matches.is_empty() && (port.is_some() || consumer.is_some()) {
        matches.push(HttpMatchRequest::default());
    }
    for m in &mut matches {
        m.port = port;
        m.source_namespace = consumer.map(String::from);
    }
    let mut http = HttpRoute { name, matches, ..Default::default() };
    http.route = rule
        .backend_refs
        .iter()
        .map(|b| crate::model::mesh::HttpRouteDestination {
            destination: destination(&b.name, b.namespace.as_deref(), b.port),
            weight: Some(b.weight.unwrap_or(1)),
            headers: None,
        })
        .collect();
    let prefix_match = rule
        .matches
        .iter()
        .find_map(|m| m.path.as_ref())
        .is_some_and(|p| matches!(p.kind, None | Some(PathMatchType::PathPrefix)));
    for f in &rule.filters {
        apply_filter(f, prefix_match, &mut http);
    }
    if let Some(t) = &rule.timeouts {
        // As istiod converts it: without a retry stanza (Sluice reads none), `backendRequest` bounds the request
        // and wins over `request`. Retries stay istiod's default policy.
        http.timeout = t.backend_request.clone().or_else(|| t.request.clone());
    }
    http
}

fn destination(name: &str, namespace: Option<&str>, port: Option<u16>) -> Destination {
    let host = match namespace {
        Some(ns) => format!("{name}.{ns}"),
        None => name.to_string(),
    };
    Destination { host, subset: None, port: port.map(|number| PortSelector { number }) }
}

/// A Gateway API match → one VirtualService match, or two for a PathPrefix other than `/`: Gateway API prefixes
/// match whole path segments (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`).
fn to_matches(m: &HttpRouteMatch) -> Vec<HttpMatchRequest> {
    let value = |kind: Option<ValueMatchType>, v: &str| match kind {
        Some(ValueMatchType::RegularExpression) => StringMatch { regex: Some(v.into()), ..Default::default() },
        _ => StringMatch { exact: Some(v.into()), ..Default::default() },
    };
    let base = HttpMatchRequest {
        headers: m.headers.iter().map(|h| (h.name.to_ascii_lowercase(), value(h.kind, &h.value))).collect(),
        query_params: m.query_params.iter().map(|q| (q.name.clone(), value(q.kind, &q.value))).collect(),
        method: m.method.as_ref().map(|v| StringMatch { exact: Some(v.clone()), ..Default::default() }),
        ..Default::default()
    };
    let path = m.path.as_ref();
    let v = path.and_then(|p| p.value.clone()).unwrap_or_else(|| "/".into());
    let uri = |sm: StringMatch| HttpMatchRequest { uri: Some(sm), ..base.clone() };
    match path.and_then(|p| p.kind).unwrap_or(PathMatchType::PathPrefix) {
        PathMatchType::Exact => vec![uri(StringMatch { exact: Some(v), ..Default::default() })],
        PathMatchType::RegularExpression => vec![uri(StringMatch { regex: Some(v), ..Default::default() })],
        PathMatchType::PathPrefix if v == "/" => vec![uri(StringMatch { prefix: Some(v), ..Default::default() })],
        PathMatchType::PathPrefix => {
            let trimmed = v.trim_end_matches('/').to_string();
            vec![
                uri(StringMatch { exact: Some(trimmed.clone()), ..Default::default() }),
                uri(StringMatch { prefix: Some(format!("{trimmed}/")), ..Default::default() }),
            ]
        }
    }
}

fn operations(m: &HeaderModifier) -> HeaderOperations {
    HeaderOperations {
        set: m.set.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        add: m.add.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
        remove: m.remove.clone(),
    }
}

fn apply_filter(f: &crate::model::mesh::HttpRouteFilter, prefix_match: bool, http: &mut HttpRoute) {
    let headers = http.headers.get_or_insert_with(Headers::default);
    if let Some(m) = &f.request_header_modifier {
        headers.request = Some(operations(m));
    }
    if let Some(m) = &f.response_header_modifier {
        headers.response = Some(operations(m));
    }
    if http.headers == Some(Headers::default()) {
        http.headers = None;
    }
    if let Some(r) = &f.request_redirect {
        let uri = r.path.as_ref().and_then(|p| p.replace_full_path.clone().or_else(|| p.replace_prefix_match.clone()));
        http.redirect = Some(HttpRedirect {
            uri,
            authority: r.hostname.clone(),
            port: r.port,
            scheme: r.scheme.clone(),
            redirect_code: Some(r.status_code.unwrap_or(302)),
        });
        http.route.clear();
    }
    if let Some(r) = &f.url_rewrite {
        let mut rewrite = HttpRewrite { authority: r.hostname.clone(), ..Default::default() };
        match r.path.as_ref() {
            Some(PathModifier { replace_prefix_match: Some(p), .. }) if prefix_match => rewrite.uri = Some(p.clone()),
            Some(PathModifier { replace_full_path: Some(p), .. })
            | Some(PathModifier { replace_prefix_match: Some(p), .. }) => {
                rewrite.uri_regex_rewrite = Some(RegexRewrite { pattern: "/.*".into(), rewrite: p.clone() });
            }
            _ => {}
        }
        http.rewrite = Some(rewrite);
    }
    if let Some(m) = &f.request_mirror {
        let b = &m.backend_ref;
        http.mirror = Some(destination(&b.name, b.namespace.as_deref(), b.port));
        http.mirror_percentage = m.percent.map(|p| Percent { value: f64::from(p) });
    }
}
