//! Metric-driven analysis of a canary: pure, like the machine. The controller measures the canary over each
//! interval (from the sidecars' stats) and hands the numbers in; this decides.
//!
//! ```text
//!  every interval while Progressing:  measured ──judge──▶ Pass   → failures = 0; may end a timed pause / the plan
//!                                                       ▶ Hold   (fewer than minRequests) → nothing moves
//!                                                       ▶ Fail   → failures += 1; failureLimit in a row → Abort
//! ```
//! A step that waits (a timed pause, or the end of the plan) moves on only after a check that passed since the
//! step began. With analysis and a step plan, the end of the plan promotes the canary.

use crate::model::Analysis;
use crate::telemetry::Measured;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    Pass,
    Hold,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub at_ms: u64,
    pub outcome: Outcome,
    pub message: String,
}

/// Where a release's analysis stands (kept in its record, persisted with it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisState {
    /// Failed checks in a row.
    pub failures: u32,
    /// When the current interval began (the last check, or when the release started progressing).
    pub interval_started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Check>,
    /// Set when analysis aborted the release: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

impl AnalysisState {
    /// A check passed after `since_ms` (strictly: a check at the instant a step began measured the step before).
    pub fn passed_after(&self, since_ms: u64) -> bool {
        self.last.as_ref().is_some_and(|c| c.outcome == Outcome::Pass && c.at_ms > since_ms)
    }
}

/// Judges one interval's numbers against the thresholds.
pub fn judge(a: &Analysis, m: &Measured) -> (Outcome, String) {
    if m.requests == 0 || m.requests < a.min_requests {
        let msg = format!("{} canary requests in the interval, fewer than minRequests {}", m.requests, a.min_requests);
        return (Outcome::Hold, msg);
    }
    let mut failed = Vec::new();
    let mut seen = Vec::new();
    if let Some(t) = &a.success_rate {
        match m.success_rate {
            Some(r) if r < t.min => failed.push(format!("success rate {r:.3} < {}", t.min)),
            Some(r) => seen.push(format!("success rate {r:.3} ≥ {}", t.min)),
            None => failed.push("no success rate measured".to_string()),
        }
    }
    if let Some(t) = &a.latency_p99_ms {
        match m.latency_p99_ms {
            Some(p) if p > t.max => failed.push(format!("p99 latency {p:.1} ms > {} ms", t.max)),
            Some(p) => seen.push(format!("p99 latency {p:.1} ms ≤ {} ms", t.max)),
            None => return (Outcome::Hold, "no latency samples yet".to_string()),
        }
    }
    let n = m.requests;
    if failed.is_empty() {
        (Outcome::Pass, format!("{n} requests: {}", seen.join(", ")))
    } else {
        (Outcome::Fail, format!("{n} requests: {}", failed.join(", ")))
    }
}

/// Records a check: updates the failure count; returns the abort reason when the failure limit is reached.
pub fn record(a: &Analysis, state: &mut AnalysisState, now: u64, m: &Measured) -> Option<String> {
    let (outcome, message) = judge(a, m);
    match outcome {
        Outcome::Pass => state.failures = 0,
        Outcome::Fail => state.failures += 1,
        Outcome::Hold => {}
    }
    state.interval_started_ms = now;
    let abort = (outcome == Outcome::Fail && state.failures >= a.failure_limit).then(|| {
        format!(
            "analysis failed {} checks in a row (failureLimit {}); last: {message}",
            state.failures, a.failure_limit
        )
    });
    state.last = Some(Check { at_ms: now, outcome, message });
    if abort.is_some() {
        state.aborted = abort.clone();
    }
    abort
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AtLeast, AtMost};

    fn analysis() -> Analysis {
        Analysis {
            interval: "10s".into(),
            failure_limit: 2,
            min_requests: 50,
            success_rate: Some(AtLeast { min: 0.99 }),
            latency_p99_ms: Some(AtMost { max: 500.0 }),
        }
    }

    fn measured(requests: u64, rate: f64, p99: f64) -> Measured {
        Measured { requests, success_rate: Some(rate), latency_p50_ms: Some(p99 / 2.0), latency_p99_ms: Some(p99) }
    }

    #[test]
    fn thresholds_pass_fail_and_too_few_requests_hold() {
        let a = analysis();
        assert_eq!(judge(&a, &measured(100, 0.995, 200.0)).0, Outcome::Pass);
        let (o, msg) = judge(&a, &measured(100, 0.7, 900.0));
        assert_eq!(o, Outcome::Fail);
        assert_eq!(msg, "100 requests: success rate 0.700 < 0.99, p99 latency 900.0 ms > 500 ms");
        let (o, msg) = judge(&a, &measured(49, 0.0, 9999.0));
        assert_eq!((o, msg.as_str()), (Outcome::Hold, "49 canary requests in the interval, fewer than minRequests 50"));
        assert_eq!(judge(&a, &Measured::default()).0, Outcome::Hold, "no traffic never passes");
    }

    #[test]
    fn consecutive_failures_reach_the_limit_and_a_pass_resets_them() {
        let a = analysis();
        let mut s = AnalysisState::default();
        assert_eq!(record(&a, &mut s, 1, &measured(100, 0.5, 1.0)), None);
        assert_eq!(record(&a, &mut s, 2, &measured(100, 1.0, 1.0)), None);
        assert_eq!(s.failures, 0);
        assert_eq!(record(&a, &mut s, 3, &measured(100, 0.5, 1.0)), None);
        assert_eq!(record(&a, &mut s, 4, &measured(10, 0.5, 1.0)), None, "a hold neither fails nor resets");
        let reason = record(&a, &mut s, 5, &measured(100, 0.5, 1.0)).expect("second failure in a row aborts");
        assert!(
            reason.starts_with(
                "analysis failed 2 checks in a row (failureLimit 2); last: 100 requests: success rate 0.500"
            )
        );
        assert_eq!(s.aborted.as_deref(), Some(reason.as_str()));
        assert!(!s.passed_after(0));
    }
}
