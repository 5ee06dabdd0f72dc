//! ReleasePolicy: what an operator wants for one service's grayscale release, and where that release stands.
//!
//! The same `spec` deserializes from a config file, the REST API and (later) the CRD, so a policy moves between
//! them unchanged. [`ReleasePolicySpec::validate`] names the failing field as a path (`spec.traffic.canaryWeight`)
//! so every front end reports errors the same way.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
/// it goes through `StepWire`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_duration;
    use std::time::Duration;

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
