//! A VirtualService `match` → an Envoy `RouteMatch` (HTTPRoute matches arrive here too, converted by `gamma`).
//!
//! ```text
//!  uri exact|prefix|regex (+ ignoreUriCase) ─▶ path | prefix | safe_regex (+ case_sensitive: false)
//!  headers {name: match}                   ─▶ HeaderMatcher (`{}` = present)
//!  withoutHeaders                          ─▶ HeaderMatcher with invert_match
//!  queryParams                             ─▶ QueryParameterMatcher
//!  method | authority | scheme             ─▶ HeaderMatcher on :method | :authority | :scheme
//! ```
//! `port`, `sourceLabels` and `sourceNamespace` are not matchers: they decide whether the match is emitted at
//! all for a virtual host's port and a proxy's scope (see `mesh_route`).

use crate::model::mesh::{HttpMatchRequest, StringMatch};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher, query_parameter_matcher, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;

/// The Envoy match for one VirtualService match.
pub(crate) fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    use route_match::PathSpecifier;
    let path = match &m.uri {
        Some(StringMatch { exact: Some(p), .. }) => PathSpecifier::Path(p.clone()),
        Some(StringMatch { regex: Some(re), .. }) => PathSpecifier::SafeRegex(regex(re)),
        Some(StringMatch { prefix: Some(p), .. }) => PathSpecifier::Prefix(p.clone()),
        _ => PathSpecifier::Prefix("/".into()),
    };
    let mut headers = Vec::new();
    for (name, pseudo) in [(&m.method, ":method"), (&m.authority, ":authority"), (&m.scheme, ":scheme")] {
        if let Some(sm) = name {
            headers.push(header(pseudo, sm, false));
        }
    }
    headers.extend(m.headers.iter().map(|(name, sm)| header(&name.to_ascii_lowercase(), sm, false)));
    headers.extend(m.without_headers.iter().map(|(name, sm)| header(&name.to_ascii_lowercase(), sm, true)));
    let query_parameters = m.query_params.iter().map(|(name, sm)| query(name, sm)).collect();
    RouteMatch {
        path_specifier: Some(path),
        case_sensitive: m.ignore_uri_case.then_some(BoolValue { value: false }),
        headers,
        query_parameters,
        ..Default::default()
    }
}

/// `a` AND `b`: `a`'s path, both sets of header and query conditions (a release rule inside a route).
pub(crate) fn and(a: &RouteMatch, b: &RouteMatch) -> RouteMatch {
    let mut out = a.clone();
    out.headers.extend(b.headers.iter().cloned());
    out.query_parameters.extend(b.query_parameters.iter().cloned());
    out
}

fn regex(re: &str) -> RegexMatcher {
    RegexMatcher { regex: re.to_string(), engine_type: None }
}

/// `None` for an empty match (a presence test).
fn string_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    use string_matcher::MatchPattern;
    let pattern = if let Some(v) = &sm.exact {
        MatchPattern::Exact(v.clone())
    } else if let Some(v) = &sm.prefix {
        MatchPattern::Prefix(v.clone())
    } else {
        MatchPattern::SafeRegex(regex(sm.regex.as_deref()?))
    };
    Some(StringMatcher { match_pattern: Some(pattern), ignore_case: false })
}

fn header(name: &str, sm: &StringMatch, invert: bool) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as Spec;
    let spec = match string_matcher(sm) {
        Some(m) => Spec::StringMatch(m),
        None => Spec::PresentMatch(true),
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    }
}

fn query(name: &str, sm: &StringMatch) -> QueryParameterMatcher {
    use query_parameter_matcher::QueryParameterMatchSpecifier as Spec;
    let spec = match string_matcher(sm) {
        Some(m) => Spec::StringMatch(m),
        None => Spec::PresentMatch(true),
    };
    QueryParameterMatcher { name: name.to_string(), query_parameter_match_specifier: Some(spec) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_headers_and_pseudo_headers() {
        let m = HttpMatchRequest {
            uri: Some(StringMatch { prefix: Some("/api".into()), ..Default::default() }),
            ignore_uri_case: true,
            method: Some(StringMatch { exact: Some("GET".into()), ..Default::default() }),
            headers: [("End-User".to_string(), StringMatch { exact: Some("jason".into()), ..Default::default() })]
                .into(),
            without_headers: [("x-debug".to_string(), StringMatch::default())].into(),
            ..Default::default()
        };
        let r = route_match(&m);
        assert_eq!(r.path_specifier, Some(route_match::PathSpecifier::Prefix("/api".into())));
        assert_eq!(r.case_sensitive, Some(BoolValue { value: false }));
        let names: Vec<(&str, bool)> = r.headers.iter().map(|h| (h.name.as_str(), h.invert_match)).collect();
        assert_eq!(names, [(":method", false), ("end-user", false), ("x-debug", true)]);
    }
}
