//! A release's progress in the ReleasePolicy status: what the leader writes beside `phase` and `step` so that any
//! replica can rebuild the release's record from the status alone (a follower serves it; a new leader goes on
//! from it).
//!
//! ```text
//!  Record ──progress()──▶ status.{canaryWeight, stepStartedAt, analysis{failures, intervalStartedAt, lastCheck,
//!                                 aborted}}  (phase and step: the view's own fields)
//!  status + the spec and metadata.generation read with it ──restore()──▶ Record (only when observedGeneration
//!                                                                         is that generation: same spec)
//! ```
//! Times are wall-clock instants (RFC 3339, millisecond precision), so a takeover does not restart a running
//! pause: a 10 s pause that ran 6 s when the leader died ends at `stepStartedAt` + 10 s on the new leader, or as
//! soon as it leads when that instant has passed (then the next step starts its own time: no step is skipped).
//! Replicas' clocks are assumed to agree, as the Lease itself assumes. A status without `stepStartedAt` (written
//! by an older Sluice, or by hand) is not restored: the replica keeps its own record.

use crate::model::{Phase, ReleasePolicySpec, ReleaseState};
use crate::release::Record;
use crate::release::analysis::{AnalysisState, Check, Outcome};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status fields that, with `phase` and `step`, make up a release's record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The canary's weight as a step or a person set it (basis points); absent: `spec.traffic.canaryWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<u32>,
    /// When the current step began (RFC 3339): a timed pause ends its duration after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisProgress>,
}

/// Where the release's analysis stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisProgress {
    /// Failed checks in a row.
    pub failures: u32,
    /// When the current analysis interval began (RFC 3339).
    pub interval_started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckProgress>,
    /// Why analysis aborted the release, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckProgress {
    /// When the check ran (RFC 3339).
    pub at: String,
    pub outcome: Outcome,
    pub message: String,
}

/// The progress of a record, for its status.
pub fn progress(record: &Record) -> Progress {
    let a = &record.analysis;
    Progress {
        canary_weight: record.state.canary_weight,
        step_started_at: Some(rfc3339(record.step_started_ms)),
        analysis: Some(AnalysisProgress {
            failures: a.failures,
            interval_started_at: rfc3339(a.interval_started_ms),
            last_check: a.last.as_ref().map(|c| CheckProgress {
                at: rfc3339(c.at_ms),
                outcome: c.outcome,
                message: c.message.clone(),
            }),
            aborted: a.aborted.clone(),
        }),
    }
}

/// Why a status cannot be restored (it is then ignored: the replica keeps its own record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRestored {
    #[error("status.observedGeneration {status:?} is not metadata.generation {spec:?}: it describes another spec")]
    OtherGeneration { status: Option<i64>, spec: Option<i64> },
    #[error("status: {0}")]
    Malformed(String),
    #[error("status.{0}: missing")]
    Missing(&'static str),
    #[error("status.{field}: {value:?} is not an RFC 3339 time")]
    BadTime { field: &'static str, value: String },
    #[error("status.step {step} is past the {steps} steps of the spec")]
    StepOutOfRange { step: usize, steps: usize },
}

/// The part of a status that [`restore`] reads (anything else in it is ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    phase: Phase,
    step: usize,
    #[serde(default)]
    observed_generation: Option<i64>,
    #[serde(flatten)]
    progress: Progress,
}

/// The record a status describes, for `spec` read at `generation` with it.
pub fn restore(
    spec: &ReleasePolicySpec,
    generation: Option<i64>,
    status: &serde_json::Value,
) -> Result<Record, NotRestored> {
    let stored: Stored = serde_json::from_value(status.clone()).map_err(|e| NotRestored::Malformed(e.to_string()))?;
    if stored.observed_generation != generation {
        return Err(NotRestored::OtherGeneration { status: stored.observed_generation, spec: generation });
    }
    if stored.step > spec.steps.len() {
        return Err(NotRestored::StepOutOfRange { step: stored.step, steps: spec.steps.len() });
    }
    let p = stored.progress;
    let started = p.step_started_at.ok_or(NotRestored::Missing("stepStartedAt"))?;
    let step_started_ms = millis("stepStartedAt", &started)?;
    let analysis = match p.analysis {
        Some(a) => AnalysisState {
            failures: a.failures,
            interval_started_ms: millis("analysis.intervalStartedAt", &a.interval_started_at)?,
            last: match a.last_check {
                Some(c) => Some(Check {
                    at_ms: millis("analysis.lastCheck.at", &c.at)?,
                    outcome: c.outcome,
                    message: c.message,
                }),
                None => None,
            },
            aborted: a.aborted,
        },
        None => AnalysisState { interval_started_ms: step_started_ms, ..Default::default() },
    };
    Ok(Record {
        spec: spec.clone(),
        state: ReleaseState { phase: stored.phase, canary_weight: p.canary_weight, step: stored.step },
        step_started_ms,
        analysis,
    })
}

fn rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn millis(field: &'static str, value: &str) -> Result<u64, NotRestored> {
    let bad = || NotRestored::BadTime { field, value: value.to_string() };
    let t: Timestamp = value.parse().map_err(|_| bad())?;
    u64::try_from(t.as_millisecond()).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Analysis, AtLeast, Pause, Step};
    use crate::telemetry::Measured;
    use serde_json::json;

    /// 2026-11-26T12:00:00Z in ms.
    const T0: u64 = 1_795_694_400_000;

    fn spec() -> ReleasePolicySpec {
        let pause = |d: &str| Step::Pause(Pause { duration: Some(d.into()) });
        ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            steps: vec![Step::SetWeight(1000), pause("10s"), Step::SetWeight(3000), pause("10s")],
            analysis: Some(Analysis {
                interval: "4s".into(),
                failure_limit: 3,
                min_requests: 10,
                success_rate: Some(AtLeast { min: 0.99 }),
                latency_p99_ms: None,
            }),
            ..Default::default()
        }
    }

    /// The status JSON as the writer builds it: the view's phase and step, the progress, the generation.
    fn status_of(record: &Record, generation: i64) -> serde_json::Value {
        let mut v = serde_json::to_value(progress(record)).unwrap();
        v["phase"] = serde_json::to_value(record.state.phase).unwrap();
        v["step"] = record.state.step.into();
        v["observedGeneration"] = generation.into();
        v
    }

    #[test]
    fn a_record_survives_the_status_round_trip_to_the_millisecond() {
        let mut r = Record::new(spec(), T0 + 123);
        let failing = Measured { requests: 50, success_rate: Some(0.5), ..Default::default() };
        assert!(r.check(T0 + 4_200, &failing));
        assert_eq!((r.state.step, r.canary_weight(), r.analysis.failures), (1, 1000, 1));
        let status = status_of(&r, 7);
        assert_eq!(status["stepStartedAt"], "2026-11-26T12:00:00.123Z");
        assert_eq!(status["analysis"]["failures"], 1);
        assert_eq!(status["analysis"]["lastCheck"]["outcome"], "Fail");
        assert_eq!(restore(&spec(), Some(7), &status), Ok(r));
    }

    #[test]
    fn a_restored_pause_keeps_its_elapsed_time_and_steps_on_from_where_it_stood() {
        let mut r = Record::new(spec(), T0);
        r.spec.analysis = None;
        // Step 3 (a 10 s pause) began at T0 + 10 s; the leader dies 6 s into it.
        assert!(r.tick(T0 + 10_000));
        assert_eq!((r.state.step, r.canary_weight()), (3, 3000));
        let status = status_of(&r, 1);
        let mut restored = restore(&r.spec, Some(1), &status).unwrap();
        assert_eq!(restored.next_due(), Some(T0 + 20_000), "the pause ends 10 s after it began, not after takeover");
        assert!(!restored.tick(T0 + 16_000));
        assert!(restored.tick(T0 + 20_000));
        assert_eq!(
            (restored.state.step, restored.canary_weight(), restored.state.phase),
            (4, 3000, Phase::Progressing)
        );
        // A takeover later than the pause's end ends it at once, and only it.
        let mut late = restore(&r.spec, Some(1), &status).unwrap();
        assert!(late.tick(T0 + 95_000));
        assert_eq!((late.state.step, late.step_started_ms), (4, T0 + 95_000));
    }

    #[test]
    fn a_status_for_another_generation_or_without_a_step_start_is_not_restored() {
        let r = Record::new(spec(), T0);
        let status = status_of(&r, 1);
        let err = restore(&spec(), Some(2), &status).unwrap_err();
        assert_eq!(err, NotRestored::OtherGeneration { status: Some(1), spec: Some(2) });
        let mut old = status.clone();
        old.as_object_mut().unwrap().remove("stepStartedAt");
        assert_eq!(restore(&spec(), Some(1), &old).unwrap_err().to_string(), "status.stepStartedAt: missing");
        let mut bad = status.clone();
        bad["stepStartedAt"] = json!("yesterday");
        assert!(matches!(restore(&spec(), Some(1), &bad), Err(NotRestored::BadTime { field: "stepStartedAt", .. })));
        let erased = json!({"phase": "Erased", "step": 0, "observedGeneration": 1});
        assert!(matches!(restore(&spec(), Some(1), &erased), Err(NotRestored::Malformed(_))));
        let mut far = status;
        far["step"] = 9.into();
        assert_eq!(restore(&spec(), Some(1), &far), Err(NotRestored::StepOutOfRange { step: 9, steps: 4 }));
    }
}
