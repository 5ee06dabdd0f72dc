//! ReleasePolicy: what an operator wants for one service's grayscale release, and where that release stands.
//!
//! The same `spec` deserializes from a config file, the REST API and (later) the CRD, so a policy moves between
//! them unchanged. [`ReleasePolicySpec::validate`] names the failing field as a path (`spec.traffic.canaryWeight`)
//! so every front end reports errors the same way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Basis points in a whole: weights are 0..=10000.
pub const TOTAL_WEIGHT: u32 = 10_000;

/// The label that names a workload's version unless a policy says otherwise.
pub const DEFAULT_VERSION_LABEL: &str = "version";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleasePolicy {
    pub name: String,
    pub namespace: String,
    pub spec: ReleasePolicySpec,
    /// Where the release stands. In a running Sluice the release controller owns it and lays it over every
    /// policy (what a source puts here is replaced); drive it with the release verbs. `translate` reads it.
    #[serde(default)]
    pub state: ReleaseState,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleasePolicySpec {
    /// The Service, in the policy's namespace.
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_label: Option<String>,
    pub stable: String,
    pub canary: String,
    #[serde(default)]
    pub traffic: Traffic,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<super::Analysis>,
    #[serde(default)]
    pub action: Action,
    /// Kubernetes mode: create the canary's Deployment as a copy of the stable one (see `model::deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<super::Deploy>,
    /// What happens to the losing version's Deployment (Kubernetes mode; default: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalize: Option<super::Finalize>,
}

impl ReleasePolicySpec {
    pub fn version_label(&self) -> &str {
        self.version_label.as_deref().unwrap_or(DEFAULT_VERSION_LABEL)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Traffic {
    /// The canary's share in basis points; the stable version gets the rest.
    #[serde(default)]
    pub canary_weight: u32,
    /// Checked before the weights, in order; a matching request goes to `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<Stickiness>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub to: Target,
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
}

/// Which side of the release a rule sends its requests to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Canary,
    Stable,
}

/// Conditions of one rule; all must hold (AND). Within `clientOS` or `browser`, any listed value matches (OR).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<StringMatch>,
    #[serde(default, rename = "clientOS", skip_serializing_if = "Vec::is_empty")]
    pub client_os: Vec<ClientOs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub browser: Vec<Browser>,
    /// Only proxies of workloads with all these labels get the rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
}

impl RuleMatch {
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.cookies.is_empty()
            && self.query.is_empty()
            && self.client_os.is_empty()
            && self.browser.is_empty()
    }
}

/// A named value test: exactly one of `exact`, `prefix`, `regex`, `present`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// The test a [`StringMatch`] makes, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchKind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
    Present,
}

impl StringMatch {
    /// The single test this match makes; `None` when it sets none or several (validation refuses both).
    pub fn kind(&self) -> Option<MatchKind<'_>> {
        let set = [self.exact.is_some(), self.prefix.is_some(), self.regex.is_some(), self.present.is_some()];
        if set.iter().filter(|s| **s).count() != 1 {
            return None;
        }
        if let Some(v) = &self.exact {
            return Some(MatchKind::Exact(v));
        }
        if let Some(v) = &self.prefix {
            return Some(MatchKind::Prefix(v));
        }
        if let Some(v) = &self.regex {
            return Some(MatchKind::Regex(v));
        }
        match self.present {
            Some(true) => Some(MatchKind::Present),
            _ => None,
        }
    }
}

/// Client operating systems recognised from the User-Agent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClientOs {
    Windows,
    #[serde(rename = "macOS")]
    MacOs,
    #[serde(rename = "iOS")]
    Ios,
    Android,
    Linux,
}

/// Browsers recognised from the User-Agent header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Browser {
    Chrome,
    Firefox,
    Safari,
    Edge,
    #[serde(rename = "IE")]
    Ie,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Share of requests copied to the canary, 0..=100.
    pub percent: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stickiness {
    pub cookie: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// One step of an automated plan: `{setWeight: 1000}` or `{pause: {duration: 5m}}` / `{pause: {}}`.
///
/// On the wire a step is a one-key map in YAML as in JSON (serde_yaml would otherwise want `!setWeight` tags), so
/// it goes through [`StepWire`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "StepWire", into = "StepWire")]
pub enum Step {
    SetWeight(u32),
    /// Without a duration, waits for a person (promote or resume).
    Pause(Pause),
}

/// A step as written: exactly one of its fields is set.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StepWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pause: Option<Pause>,
}

impl TryFrom<StepWire> for Step {
    type Error = String;

    fn try_from(wire: StepWire) -> Result<Self, Self::Error> {
        match (wire.set_weight, wire.pause) {
            (Some(w), None) => Ok(Step::SetWeight(w)),
            (None, Some(p)) => Ok(Step::Pause(p)),
            _ => Err("a step is exactly one of `setWeight: N` or `pause: {duration: D}` / `pause: {}`".into()),
        }
    }
}

impl From<Step> for StepWire {
    fn from(step: Step) -> Self {
        match step {
            Step::SetWeight(w) => StepWire { set_weight: Some(w), pause: None },
            Step::Pause(p) => StepWire { set_weight: None, pause: Some(p) },
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// What the operator wants now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    #[default]
    Progress,
    Pause,
    Promote,
    Abort,
    Finalize,
}

/// Lifecycle phase of a release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Pending,
    #[default]
    Progressing,
    Paused,
    Promoted,
    Aborted,
    Finalized,
    Failed,
}

/// Where a release stands. Without a release controller this follows the spec (weight = `canaryWeight`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    pub phase: Phase,
    /// The canary's current weight; `None` means "as the spec says".
    #[serde(default)]
    pub canary_weight: Option<u32>,
    /// Index of the current step in `spec.steps`.
    #[serde(default)]
    pub step: usize,
}

/// How translate should route a policy's service right now.
#[derive(Clone, Debug, PartialEq)]
pub enum Routing<'a> {
    /// Rules first, then the weighted split (canary's basis points).
    Split { canary_weight: u32, rules: &'a [Rule] },
    /// Everything to one version; the other keeps its clusters (it may come back).
    All(&'a str),
    /// The release ended: only this version exists for the mesh; the other's clusters are gone.
    Only(&'a str),
}

impl ReleasePolicy {
    /// What the routes should say for the release's current phase.
    pub fn routing(&self) -> Routing<'_> {
        let spec = &self.spec;
        match self.state.phase {
            Phase::Promoted => Routing::All(&spec.canary),
            Phase::Aborted | Phase::Failed => Routing::All(&spec.stable),
            Phase::Finalized if self.state.canary_weight == Some(0) => Routing::Only(&spec.stable),
            Phase::Finalized => Routing::Only(&spec.canary),
            Phase::Pending | Phase::Progressing | Phase::Paused => Routing::Split {
                canary_weight: self.state.canary_weight.unwrap_or(spec.traffic.canary_weight),
                rules: &spec.traffic.rules,
            },
        }
    }
}

/// A refused field: `path` is as a user writes it (`spec.traffic.rules[0].match.headers[1].regex`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h` (one unit, a whole number).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// Longest regex accepted in a match: Envoy's RE2 has its own program-size limit; this keeps errors early.
const MAX_REGEX_LEN: usize = 1024;

impl ReleasePolicySpec {
    /// Checks every field; the first error names its path under `spec.`.
    pub fn validate(&self) -> Result<(), FieldError> {
        require_name("spec.service", &self.service)?;
        require_name("spec.stable", &self.stable)?;
        require_name("spec.canary", &self.canary)?;
        if self.stable == self.canary {
            return Err(FieldError::new("spec.canary", "must differ from spec.stable"));
        }
        if let Some(label) = &self.version_label {
            require_name("spec.versionLabel", label)?;
        }
        if self.traffic.canary_weight > TOTAL_WEIGHT {
            return Err(FieldError::new("spec.traffic.canaryWeight", "must be between 0 and 10000"));
        }
        for (i, rule) in self.traffic.rules.iter().enumerate() {
            validate_rule(&format!("spec.traffic.rules[{i}]"), rule)?;
        }
        if let Some(m) = &self.traffic.mirror
            && m.percent > 100
        {
            return Err(FieldError::new("spec.traffic.mirror.percent", "must be between 0 and 100"));
        }
        if let Some(s) = &self.traffic.stickiness {
            require_cookie_name("spec.traffic.stickiness.cookie", &s.cookie)?;
            if let Some(ttl) = &s.ttl {
                check_duration("spec.traffic.stickiness.ttl", ttl)?;
                if parse_duration(ttl).is_some_and(|d| d < Duration::from_secs(1)) {
                    return Err(FieldError::new("spec.traffic.stickiness.ttl", "must be at least 1s"));
                }
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::SetWeight(w) if *w > TOTAL_WEIGHT => {
                    return Err(FieldError::new(format!("spec.steps[{i}].setWeight"), "must be between 0 and 10000"));
                }
                Step::Pause(Pause { duration: Some(d) }) => {
                    check_duration(&format!("spec.steps[{i}].pause.duration"), d)?;
                }
                _ => {}
            }
        }
        if let Some(a) = &self.analysis {
            a.validate()?;
        }
        if let Some(d) = &self.deploy {
            d.validate()?;
        }
        if let Some(f) = &self.finalize {
            f.validate()?;
        }
        Ok(())
    }
}

fn validate_rule(path: &str, rule: &Rule) -> Result<(), FieldError> {
    if rule.matches.is_empty() {
        return Err(FieldError::new(
            format!("{path}.match"),
            "needs at least one of headers, cookies, query, clientOS, browser",
        ));
    }
    let m = &rule.matches;
    for (field, list) in [(Field::Header, &m.headers), (Field::Cookie, &m.cookies), (Field::Query, &m.query)] {
        for (i, sm) in list.iter().enumerate() {
            validate_string_match(&format!("{path}.match.{}[{i}]", field.name()), sm, field)?;
        }
    }
    Ok(())
}

/// Which request part a rule's condition reads.
#[derive(Clone, Copy, PartialEq)]
enum Field {
    Header,
    Cookie,
    Query,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Header => "headers",
            Field::Cookie => "cookies",
            Field::Query => "query",
        }
    }
}

/// One condition, checked as Envoy will check what it becomes: a header name Envoy accepts, no empty prefix, and
/// a regex RE2 compiles within Envoy's program-size limit (for a cookie, the whole-header pattern it becomes).
fn validate_string_match(path: &str, m: &StringMatch, field: Field) -> Result<(), FieldError> {
    if m.name.is_empty() {
        return Err(FieldError::new(format!("{path}.name"), "must not be empty"));
    }
    if m.name.chars().any(|c| c.is_control() || c == ';' || c == '=') {
        return Err(FieldError::new(format!("{path}.name"), "must not hold control characters, ';' or '='"));
    }
    if m.present == Some(false) {
        return Err(FieldError::new(format!("{path}.present"), "only `present: true` is supported"));
    }
    let Some(kind) = m.kind() else {
        return Err(FieldError::new(path, "needs exactly one of exact, prefix, regex, present"));
    };
    if field == Field::Header {
        super::pattern::check_header_name(&m.name).map_err(|e| FieldError::new(format!("{path}.name"), e))?;
    }
    match kind {
        MatchKind::Prefix(p) => {
            super::pattern::check_prefix(p).map_err(|e| FieldError::new(format!("{path}.prefix"), e))?;
        }
        MatchKind::Regex(re) => {
            if re.len() > MAX_REGEX_LEN {
                return Err(FieldError::new(format!("{path}.regex"), format!("longer than {MAX_REGEX_LEN} bytes")));
            }
            if re.is_empty() {
                return Err(FieldError::new(format!("{path}.regex"), "must not be empty"));
            }
            super::pattern::check_regex(re).map_err(|e| FieldError::new(format!("{path}.regex"), e))?;
            if field == Field::Cookie {
                let whole = super::pattern::cookie_regex(m).unwrap_or_default();
                super::pattern::check_regex(&whole).map_err(|e| {
                    let why = format!("inside the pattern over the whole cookie header it becomes: {e}");
                    FieldError::new(format!("{path}.regex"), why)
                })?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn require_name(path: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(path, "must not be empty"));
    }
    if value.len() > 63 || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(FieldError::new(path, "must be at most 63 characters of [A-Za-z0-9-_.]"));
    }
    Ok(())
}

/// Longest sticky cookie name accepted; browsers keep far longer ones, this keeps headers and routes small.
const MAX_COOKIE_NAME_LEN: usize = 64;

/// A cookie name must be an RFC 6265 `token` (RFC 2616: visible ASCII without separators), since it is written
/// into `Set-Cookie` as is.
fn require_cookie_name(path: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(path, "must not be empty"));
    }
    let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
    if let Some(bad) = value.chars().find(|c| !token(*c)) {
        return Err(FieldError::new(
            path,
            format!(
                "{bad:?} is not allowed in a cookie name (RFC 6265 token: no spaces, controls or ()<>@,;:\\\"/[]?={{}})"
            ),
        ));
    }
    if value.len() > MAX_COOKIE_NAME_LEN {
        return Err(FieldError::new(path, format!("must be at most {MAX_COOKIE_NAME_LEN} characters")));
    }
    Ok(())
}

fn check_duration(path: &str, value: &str) -> Result<(), FieldError> {
    parse_duration(value)
        .map(|_| ())
        .ok_or_else(|| FieldError::new(path, format!("`{value}` is not a duration like 500ms, 30s, 5m or 1h")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReleasePolicySpec {
        ReleasePolicySpec { service: "reviews".into(), stable: "v1".into(), canary: "v3".into(), ..Default::default() }
    }

    #[test]
    fn steps_are_one_key_maps_in_yaml_and_json() {
        let yaml = "- setWeight: 1000\n- pause: {duration: 5m}\n- pause: {}\n";
        let steps: Vec<Step> = serde_yaml::from_str(yaml).unwrap();
        let expected = vec![
            Step::SetWeight(1000),
            Step::Pause(Pause { duration: Some("5m".into()) }),
            Step::Pause(Pause { duration: None }),
        ];
        assert_eq!(steps, expected);
        let json = serde_json::to_string(&steps).unwrap();
        assert_eq!(json, r#"[{"setWeight":1000},{"pause":{"duration":"5m"}},{"pause":{}}]"#);
        assert_eq!(serde_json::from_str::<Vec<Step>>(&json).unwrap(), expected);
        assert!(serde_yaml::from_str::<Step>("{setWeight: 1, pause: {}}").is_err(), "one key only");
        assert!(serde_yaml::from_str::<Step>("{}").is_err());
    }

    #[test]
    fn weight_over_total_is_refused_with_its_path() {
        let mut s = spec();
        s.traffic.canary_weight = 10_001;
        let err = s.validate().unwrap_err();
        assert_eq!(err.to_string(), "spec.traffic.canaryWeight: must be between 0 and 10000");
    }

    #[test]
    fn a_match_with_two_tests_is_refused() {
        let mut s = spec();
        s.traffic.rules.push(Rule {
            matches: RuleMatch {
                headers: vec![StringMatch {
                    name: "x".into(),
                    exact: Some("a".into()),
                    prefix: Some("b".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(s.validate().unwrap_err().path, "spec.traffic.rules[0].match.headers[0]");
    }

    #[test]
    fn sticky_cookie_names_are_rfc_6265_tokens() {
        let with_cookie = |cookie: &str| {
            let mut s = spec();
            s.traffic.stickiness = Some(Stickiness { cookie: cookie.into(), ttl: None });
            s.validate()
        };
        for good in ["sluice-reviews", "SESSION_ID", "a.b", "x!#$%&'*+^`|~"] {
            assert_eq!(with_cookie(good), Ok(()), "{good}");
        }
        for bad in ["", "two words", "a;b", "a=b", "a,b", "a\"b", "a/b", "a:b", "(a)", "{a}", "a\tb", "é", "a\u{7f}"] {
            let err = with_cookie(bad).unwrap_err();
            assert_eq!(err.path, "spec.traffic.stickiness.cookie", "{bad:?}: {err}");
        }
        assert!(with_cookie(&"c".repeat(65)).is_err());
    }

    #[test]
    fn sticky_ttl_is_a_duration_of_a_second_or_more() {
        let with_ttl = |ttl: &str| {
            let mut s = spec();
            s.traffic.stickiness = Some(Stickiness { cookie: "s".into(), ttl: Some(ttl.into()) });
            s.validate().map_err(|e| e.path)
        };
        assert_eq!(with_ttl("30m"), Ok(()));
        assert_eq!(with_ttl("1s"), Ok(()));
        assert_eq!(with_ttl("500ms"), Err("spec.traffic.stickiness.ttl".to_string()));
        assert_eq!(with_ttl("soon"), Err("spec.traffic.stickiness.ttl".to_string()));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5 minutes"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn routing_follows_phase() {
        let mut p =
            ReleasePolicy { name: "r".into(), namespace: "default".into(), spec: spec(), state: Default::default() };
        p.spec.traffic.canary_weight = 2000;
        assert!(matches!(p.routing(), Routing::Split { canary_weight: 2000, .. }));
        p.state.phase = Phase::Promoted;
        assert_eq!(p.routing(), Routing::All("v3"));
        p.state.phase = Phase::Finalized;
        assert_eq!(p.routing(), Routing::Only("v3"));
    }
}
