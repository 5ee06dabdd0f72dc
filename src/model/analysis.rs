//! `spec.analysis`: the metric checks that guard a progressing release.
//!
//! ```yaml
//! analysis:
//!   interval: 30s            # check the canary this often (at least 1s)
//!   failureLimit: 3          # this many failed checks in a row abort the release (default 3)
//!   minRequests: 100         # fewer canary requests in an interval: hold (neither pass nor fail)
//!   successRate: {min: 0.99} # share of non-5xx responses, 0..1
//!   latencyP99Ms: {max: 500} # p99 of the canary's upstream request time, in ms
//! ```

use super::{FieldError, parse_duration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Analysis {
    /// How often the canary is checked, as a duration (`30s`).
    pub interval: String,
    /// Consecutive failed checks that abort the release.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// Fewest canary requests in one interval for a check to count; fewer hold the release.
    #[serde(default)]
    pub min_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<AtLeast>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<AtMost>,
}

/// A lower bound: `{min: 0.99}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AtLeast {
    pub min: f64,
}

/// An upper bound: `{max: 500}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AtMost {
    pub max: f64,
}

fn default_failure_limit() -> u32 {
    3
}

impl Analysis {
    /// The check interval (validated: at least 1 s).
    pub fn interval(&self) -> Duration {
        parse_duration(&self.interval).unwrap_or(Duration::from_secs(30))
    }

    /// Checks every field; paths start at `spec.analysis`.
    pub fn validate(&self) -> Result<(), FieldError> {
        const P: &str = "spec.analysis";
        match parse_duration(&self.interval) {
            None => {
                let msg = format!("`{}` is not a duration like 500ms, 30s, 5m or 1h", self.interval);
                return Err(FieldError::new(format!("{P}.interval"), msg));
            }
            Some(d) if d < Duration::from_secs(1) => {
                return Err(FieldError::new(
                    format!("{P}.interval"),
                    "must be at least 1s (proxies report every second)",
                ));
            }
            Some(_) => {}
        }
        if self.failure_limit == 0 {
            return Err(FieldError::new(format!("{P}.failureLimit"), "must be at least 1"));
        }
        if self.success_rate.is_none() && self.latency_p99_ms.is_none() {
            return Err(FieldError::new(P, "needs at least one of successRate, latencyP99Ms"));
        }
        if let Some(s) = &self.success_rate
            && !(0.0..=1.0).contains(&s.min)
        {
            return Err(FieldError::new(format!("{P}.successRate.min"), "must be a share between 0 and 1, e.g. 0.99"));
        }
        if let Some(l) = &self.latency_p99_ms
            && !(l.max.is_finite() && l.max > 0.0)
        {
            return Err(FieldError::new(format!("{P}.latencyP99Ms.max"), "must be a number of milliseconds above 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Analysis, String> {
        serde_yaml::from_str::<Analysis>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_with_defaults_and_refuses_unknown_fields() {
        let a = parse("{interval: 10s, successRate: {min: 0.99}}").unwrap();
        assert_eq!((a.failure_limit, a.min_requests, a.interval()), (3, 0, Duration::from_secs(10)));
        assert!(parse("{interval: 10s, successRate: {min: 0.99}, succesRate: {}}").unwrap_err().contains("succesRate"));
        assert!(parse("{interval: 10s, successRate: {minimum: 1}}").unwrap_err().contains("minimum"));
        let json = serde_json::to_string(&parse("{interval: 5s, latencyP99Ms: {max: 250}}").unwrap()).unwrap();
        assert_eq!(json, r#"{"interval":"5s","failureLimit":3,"minRequests":0,"latencyP99Ms":{"max":250.0}}"#);
    }

    #[test]
    fn validation_names_the_field() {
        let err = |yaml: &str| parse(yaml).unwrap().validate().unwrap_err().to_string();
        assert_eq!(
            err("{interval: 500ms, successRate: {min: 0.9}}"),
            "spec.analysis.interval: must be at least 1s (proxies report every second)"
        );
        assert!(err("{interval: soon, successRate: {min: 0.9}}").starts_with("spec.analysis.interval: `soon`"));
        assert_eq!(
            err("{interval: 5s, failureLimit: 0, successRate: {min: 0.9}}"),
            "spec.analysis.failureLimit: must be at least 1"
        );
        assert_eq!(
            err("{interval: 5s, successRate: {min: 99}}"),
            "spec.analysis.successRate.min: must be a share between 0 and 1, e.g. 0.99"
        );
        assert!(err("{interval: 5s, latencyP99Ms: {max: 0}}").starts_with("spec.analysis.latencyP99Ms.max"));
        assert_eq!(err("{interval: 5s}"), "spec.analysis: needs at least one of successRate, latencyP99Ms");
    }
}
