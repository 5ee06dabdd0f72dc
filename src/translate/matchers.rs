//! A release rule's conditions → Envoy route matchers.
//!
//! ```text
//!  headers  [{name, exact|prefix|regex|present}] ─▶ HeaderMatcher (string_match / present_match)
//!  cookies  [{name, ...}]                       ─▶ HeaderMatcher on `cookie`, safe_regex finding NAME=VALUE
//!  query    [{name, ...}]                       ─▶ QueryParameterMatcher
//!  clientOS [Windows, ...]                     ─▶ HeaderMatcher on `user-agent`, alternation of the OSes
//!  browser  [Chrome, ...]                      ─▶ one route match per browser (each + its `user-agent` regex)
//! ```
//!
//! All conditions of one rule are AND-ed (Envoy ANDs every matcher of a `RouteMatch`). Regexes are RE2 (Envoy's
//! engine) and always match the whole value, so there is no lookahead: browser and OS patterns are written so
//! Chrome does not match Edge or Opera, Safari does not match Chrome, Linux not Android, macOS not iOS.

use crate::model::pattern::{cookie_regex, escape, whole_cookie};
use crate::model::{Browser, ClientOs, MatchKind, RuleMatch, StringMatch};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher, query_parameter_matcher, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};

/// The route matches for a rule: prefix `/` plus every condition; one match per listed browser (they are OR-ed
/// by routes in a row, all to the same cluster) because one alternation of all browser patterns exceeds RE2's
/// default program-size limit in Envoy (100). `None` when a condition is malformed (validation refuses those):
/// the rule is then left out rather than widened to match more than was written.
pub(crate) fn rule_matches(m: &RuleMatch) -> Option<Vec<RouteMatch>> {
    let mut headers = Vec::new();
    for h in &m.headers {
        headers.push(header(&h.name, h.kind()?));
    }
    for c in &m.cookies {
        headers.push(header("cookie", MatchKind::Regex(&cookie_regex(c)?)));
    }
    if !m.client_os.is_empty() {
        headers.push(header("user-agent", MatchKind::Regex(&os_list_regex(&m.client_os))));
    }
    let query_parameters = m.query.iter().map(query).collect::<Option<Vec<_>>>()?;
    let base = RouteMatch { headers, query_parameters, ..prefix_all() };
    if m.browser.is_empty() {
        return Some(vec![base]);
    }
    let mut browsers = m.browser.clone();
    browsers.dedup();
    let per_browser = browsers.iter().map(|b| {
        let mut one = base.clone();
        one.headers.push(header("user-agent", MatchKind::Regex(browser_regex(*b))));
        one
    });
    Some(per_browser.collect())
}

/// Matches every path of a request whose `cookie` header holds the whole cookie `name=value` (the same test as a
/// rule's `cookies: [{name, exact: value}]`).
pub(crate) fn cookie_is(name: &str, value: &str) -> RouteMatch {
    let regex = whole_cookie(name, &escape(value));
    RouteMatch { headers: vec![header("cookie", MatchKind::Regex(&regex))], ..prefix_all() }
}

/// Matches every path.
pub(crate) fn prefix_all() -> RouteMatch {
    RouteMatch { path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())), ..Default::default() }
}

fn header(name: &str, kind: MatchKind<'_>) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as Spec;
    let spec = match string_match(&kind) {
        Some(sm) => Spec::StringMatch(sm),
        None => Spec::PresentMatch(true),
    };
    HeaderMatcher { name: name.to_string(), header_match_specifier: Some(spec), ..Default::default() }
}

fn query(sm: &StringMatch) -> Option<QueryParameterMatcher> {
    use query_parameter_matcher::QueryParameterMatchSpecifier as Spec;
    let spec = match string_match(&sm.kind()?) {
        Some(m) => Spec::StringMatch(m),
        None => Spec::PresentMatch(true),
    };
    Some(QueryParameterMatcher { name: sm.name.clone(), query_parameter_match_specifier: Some(spec) })
}

/// `None` for `Present`, which Envoy spells as `present_match` rather than a string matcher.
fn string_match(kind: &MatchKind<'_>) -> Option<StringMatcher> {
    use string_matcher::MatchPattern;
    let pattern = match kind {
        MatchKind::Exact(v) => MatchPattern::Exact(v.to_string()),
        MatchKind::Prefix(v) => MatchPattern::Prefix(v.to_string()),
        // No engine set: Envoy's default, Google RE2.
        MatchKind::Regex(re) => MatchPattern::SafeRegex(RegexMatcher { regex: re.to_string(), engine_type: None }),
        MatchKind::Present => return None,
    };
    Some(StringMatcher { match_pattern: Some(pattern), ignore_case: false })
}

/// One whole-value pattern for any of the listed operating systems: `.*(?:A|B).*`.
pub(crate) fn os_list_regex(list: &[ClientOs]) -> String {
    let mut tokens: Vec<&str> = list.iter().map(|o| os_token(*o)).collect();
    tokens.dedup();
    format!(".*(?:{}).*", tokens.join("|"))
}

/// What a User-Agent holds somewhere when it comes from a client OS.
fn os_token(os: ClientOs) -> &'static str {
    match os {
        ClientOs::Windows => "Windows",
        // iPhone and iPad Safari say "like Mac OS X" but never "Macintosh".
        ClientOs::MacOs => "Macintosh",
        ClientOs::Ios => "iPhone|iPad|iPod",
        ClientOs::Android => "Android",
        // Desktop Linux browsers say "(X11; ... Linux"; Android says "(Linux; Android" and never X11.
        ClientOs::Linux => "\\(X11;[^)]*Linux",
    }
}

/// Whole-value patterns for a browser in a User-Agent.
pub(crate) fn browser_regex(b: Browser) -> &'static str {
    match b {
        // Chrome's UA ends right after "Chrome/N (Mobile )Safari/N"; Edge, Opera and others append or insert
        // their own token. Chrome on iOS says CriOS.
        Browser::Chrome => ".*(?:Chrome/[0-9.]+ (?:Mobile )?Safari/[0-9.]+|CriOS/.*)",
        Browser::Firefox => ".*(?:Firefox|FxiOS)/.*",
        // Safari has "Version/N (Mobile/X )Safari/N" with nothing between; Chrome, CriOS and EdgiOS break it.
        Browser::Safari => ".*Version/[0-9.]+ (?:Mobile/[0-9A-Za-z]+ )?Safari/[0-9.]+",
        Browser::Edge => ".*Edg(?:e|A|iOS)?/.*",
        Browser::Ie => ".*(?:MSIE |Trident/).*",
    }
}

#[cfg(test)]
mod tests;
