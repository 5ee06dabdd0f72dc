//! ReleasePolicy validation: every field of a spec checked as its front ends (files, REST, CRD) and Envoy will
//! read it, the first problem named by its path (`spec.traffic.rules[0].match.headers[1].regex`).

use super::policy::{MatchKind, Pause, ReleasePolicySpec, Rule, Step, StringMatch, TOTAL_WEIGHT};
use std::time::Duration;

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
