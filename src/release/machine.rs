//! The release state machine: pure data in, data out; the caller passes `now` (milliseconds since the epoch).
//!
//! ```text
//!            set weight / steps            promote                finalize
//!  Progressing ───────────────────▶ ... ─────────▶ Promoted ─────────────▶ Finalized (canary stays)
//!     │  ▲ pause / resume                  abort
//!     ▼  │                           ─────────▶ Aborted ──────────────▶ Finalized (stable stays)
//!   Paused                                            finalize
//! ```
//! Steps run while Progressing: `setWeight` applies at once; `pause: {duration}` waits that long; `pause: {}`
//! waits for resume or promote. After the last step the release holds its weight until the operator acts.
//!
//! With `analysis` (see [`super::analysis`]) the controller calls [`Record::check`] every interval with the
//! canary's numbers: failures in a row abort; a timed pause ends only after a passing check, and the end of a
//! step plan promotes after one.

use super::analysis::{self, AnalysisState};
use crate::model::{Action, Pause, Phase, ReleasePolicySpec, ReleaseState, Step, TOTAL_WEIGHT, parse_duration};
use serde::{Deserialize, Serialize};

/// The operator's verbs (the tutorial's buttons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Pause,
    Resume,
    Promote,
    Abort,
    Finalize,
}

impl Verb {
    pub const ALL: [Verb; 5] = [Verb::Pause, Verb::Resume, Verb::Promote, Verb::Abort, Verb::Finalize];

    pub fn name(self) -> &'static str {
        match self {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Promote => "promote",
            Verb::Abort => "abort",
            Verb::Finalize => "finalize",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// A verb or weight that the release's phase does not allow; the message says what would.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// One release as the controller keeps it: the spec it follows and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub spec: ReleasePolicySpec,
    pub state: ReleaseState,
    /// When the current step began (ms since the epoch); pauses with a duration count from here.
    pub step_started_ms: u64,
    #[serde(default)]
    pub analysis: AnalysisState,
}

impl Record {
    /// A new release: Progressing at the spec's weight, its step plan started.
    pub fn new(spec: ReleasePolicySpec, now: u64) -> Self {
        let analysis = AnalysisState { interval_started_ms: now, ..Default::default() };
        let mut r = Record { spec, state: ReleaseState::default(), step_started_ms: now, analysis };
        r.advance(now);
        r
    }

    /// The spec changed (a file edit or an API apply): the weight follows the new spec, and a changed `action`
    /// is applied as the operator's verb.
    pub fn respec(&mut self, spec: ReleasePolicySpec, now: u64) {
        let action_changed = spec.action != self.spec.action;
        let weight_changed = spec.traffic.canary_weight != self.spec.traffic.canary_weight;
        self.spec = spec;
        if weight_changed && self.state.phase.is_split() {
            self.state.canary_weight = None;
        }
        if action_changed {
            let verb = match self.spec.action {
                Action::Progress => Verb::Resume,
                Action::Pause => Verb::Pause,
                Action::Promote => Verb::Promote,
                Action::Abort => Verb::Abort,
                Action::Finalize => Verb::Finalize,
            };
            if let Err(e) = self.act(verb, now) {
                tracing::warn!(service = %self.spec.service, action = ?self.spec.action, reason = %e, "spec.action not applied");
            }
        }
        self.advance(now);
    }

    /// Applies a verb, or says why the phase does not allow it.
    pub fn act(&mut self, verb: Verb, now: u64) -> Result<(), Refused> {
        use Phase::*;
        let phase = self.state.phase;
        let next = match (verb, phase) {
            (Verb::Pause, Progressing | Pending) => Paused,
            (Verb::Pause, Paused) => return Ok(()),
            (Verb::Resume, Paused) => Progressing,
            (Verb::Resume, Progressing) => {
                self.leave_manual_pause(now);
                Progressing
            }
            (Verb::Promote, Progressing | Paused | Pending | Promoted) => Promoted,
            (Verb::Abort, Progressing | Paused | Pending | Aborted | Failed) => Aborted,
            (Verb::Finalize, Promoted) => {
                self.state.canary_weight = Some(TOTAL_WEIGHT);
                Finalized
            }
            (Verb::Finalize, Aborted | Failed) => {
                self.state.canary_weight = Some(0);
                Finalized
            }
            (Verb::Finalize, Finalized) => return Ok(()),
            (Verb::Finalize, _) => {
                return Err(Refused(format!("cannot finalize a {phase:?} release: promote or abort it first")));
            }
            (v, _) => return Err(Refused(format!("cannot {} a {phase:?} release", v.name()))),
        };
        self.state.phase = next;
        if next == Progressing {
            self.step_started_ms = now;
            self.analysis.interval_started_ms = now;
            self.advance(now);
        }
        Ok(())
    }

    /// Sets the canary's weight by hand (basis points). Allowed while the traffic is split.
    pub fn set_weight(&mut self, weight: u32) -> Result<(), Refused> {
        if weight > TOTAL_WEIGHT {
            return Err(Refused("canaryWeight: must be between 0 and 10000".into()));
        }
        if !self.state.phase.is_split() {
            return Err(Refused(format!(
                "cannot set the weight of a {:?} release: its traffic is no longer split",
                self.state.phase
            )));
        }
        self.state.canary_weight = Some(weight);
        Ok(())
    }

    /// Runs due steps; true when anything changed.
    pub fn tick(&mut self, now: u64) -> bool {
        let before = (self.state.clone(), self.step_started_ms);
        self.advance(now);
        before != (self.state.clone(), self.step_started_ms)
    }

    /// When the next step is due, if a timed pause is running.
    pub fn next_due(&self) -> Option<u64> {
        if self.state.phase != Phase::Progressing {
            return None;
        }
        match self.spec.steps.get(self.state.step) {
            Some(Step::Pause(Pause { duration: Some(d) })) => {
                parse_duration(d).map(|d| self.step_started_ms.saturating_add(d.as_millis() as u64))
            }
            _ => None,
        }
    }

    /// The canary's weight now, as configured (before the no-ready-endpoint fallback translate applies).
    pub fn canary_weight(&self) -> u32 {
        match self.state.phase {
            Phase::Promoted => TOTAL_WEIGHT,
            Phase::Aborted | Phase::Failed => 0,
            Phase::Finalized => self.state.canary_weight.unwrap_or(TOTAL_WEIGHT),
            _ => self.state.canary_weight.unwrap_or(self.spec.traffic.canary_weight),
        }
    }

    /// When the next analysis check is due (Progressing with `analysis` only).
    pub fn next_check(&self) -> Option<u64> {
        let a = self.spec.analysis.as_ref().filter(|_| self.state.phase == Phase::Progressing)?;
        Some(self.analysis.interval_started_ms.saturating_add(a.interval().as_millis() as u64))
    }

    /// When something is next due after `now`: a timed pause ending or an analysis check.
    pub fn next_wake(&self, now: u64) -> Option<u64> {
        let pause = self.next_due().filter(|d| *d > now);
        [pause, self.next_check()].into_iter().flatten().min()
    }

    /// Runs the analysis check if it is due, with the canary's numbers over the interval; true when it ran.
    /// Failing `failureLimit` checks in a row aborts (stable takes all traffic back).
    pub fn check(&mut self, now: u64, canary: &crate::telemetry::Measured) -> bool {
        let (Some(due), Some(a)) = (self.next_check(), self.spec.analysis.clone()) else { return false };
        if now < due {
            return false;
        }
        if let Some(reason) = analysis::record(&a, &mut self.analysis, now, canary) {
            tracing::warn!(service = %self.spec.service, %reason, "release aborted by analysis");
            self.state.phase = Phase::Aborted;
        }
        self.advance(now);
        true
    }

    /// A waiting step may move on: without analysis always; with it, after a check passed during the step.
    fn analysis_allows(&self) -> bool {
        self.spec.analysis.is_none() || self.analysis.passed_after(self.step_started_ms)
    }

    /// The step plan is done and waits for a passing analysis check to promote.
    pub fn waiting_for_analysis(&self) -> bool {
        self.state.phase == Phase::Progressing
            && self.spec.analysis.is_some()
            && !self.spec.steps.is_empty()
            && self.state.step >= self.spec.steps.len()
            && !self.analysis_allows()
    }

    /// Waiting at a `pause: {}` step for a person.
    pub fn waiting_for_person(&self) -> bool {
        self.state.phase == Phase::Progressing
            && matches!(self.spec.steps.get(self.state.step), Some(Step::Pause(Pause { duration: None })))
    }

    fn leave_manual_pause(&mut self, now: u64) {
        if self.waiting_for_person() {
            self.state.step += 1;
            self.step_started_ms = now;
        }
    }

    fn advance(&mut self, now: u64) {
        while self.state.phase == Phase::Progressing {
            match self.spec.steps.get(self.state.step) {
                Some(Step::SetWeight(w)) => self.state.canary_weight = Some(*w),
                Some(Step::Pause(_)) if self.next_due().is_some_and(|due| now >= due) && self.analysis_allows() => {}
                None if self.spec.analysis.is_some() && !self.spec.steps.is_empty() && self.analysis_allows() => {
                    self.state.phase = Phase::Promoted;
                    return;
                }
                Some(Step::Pause(_)) | None => return,
            }
            self.state.step += 1;
            self.step_started_ms = now;
        }
    }
}

impl Phase {
    /// Phases whose traffic is split between stable and canary by weight and rules.
    pub fn is_split(self) -> bool {
        matches!(self, Phase::Pending | Phase::Progressing | Phase::Paused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: Vec<Step>) -> ReleasePolicySpec {
        ReleasePolicySpec {
            service: "reviews".into(),
            stable: "v1".into(),
            canary: "v3".into(),
            steps,
            ..Default::default()
        }
    }

    fn pause(d: Option<&str>) -> Step {
        Step::Pause(Pause { duration: d.map(String::from) })
    }

    #[test]
    fn steps_advance_on_durations_and_wait_for_a_person() {
        let plan =
            vec![Step::SetWeight(1000), pause(Some("5s")), Step::SetWeight(5000), pause(None), Step::SetWeight(8000)];
        let mut r = Record::new(spec(plan), 0);
        assert_eq!((r.canary_weight(), r.state.step, r.next_due()), (1000, 1, Some(5000)));
        assert!(!r.tick(4999));
        assert!(r.tick(5000));
        assert_eq!((r.canary_weight(), r.state.step), (5000, 3));
        assert!(r.waiting_for_person());
        assert!(!r.tick(999_999), "pause: {{}} never ends by itself");
        r.act(Verb::Resume, 1_000_000).unwrap();
        assert_eq!((r.canary_weight(), r.state.step), (8000, 5));
    }

    #[test]
    fn promote_then_finalize_keeps_the_canary_and_abort_then_finalize_the_stable() {
        let mut r = Record::new(spec(vec![]), 0);
        assert_eq!(
            r.act(Verb::Finalize, 1).unwrap_err().0,
            "cannot finalize a Progressing release: promote or abort it first"
        );
        r.act(Verb::Promote, 1).unwrap();
        assert_eq!(r.canary_weight(), TOTAL_WEIGHT);
        assert!(r.set_weight(10).is_err(), "weights are not split after promote");
        r.act(Verb::Finalize, 2).unwrap();
        assert_eq!((r.state.phase, r.state.canary_weight), (Phase::Finalized, Some(TOTAL_WEIGHT)));

        let mut r = Record::new(spec(vec![]), 0);
        r.set_weight(2000).unwrap();
        r.act(Verb::Abort, 1).unwrap();
        assert_eq!(r.canary_weight(), 0);
        r.act(Verb::Finalize, 2).unwrap();
        assert_eq!(r.state.canary_weight, Some(0));
        assert!(r.act(Verb::Promote, 3).is_err(), "a finalized release is over");
    }

    #[test]
    fn pause_stops_the_plan_and_resume_restarts_the_running_pause() {
        let mut r = Record::new(spec(vec![pause(Some("10s")), Step::SetWeight(5000)]), 0);
        r.act(Verb::Pause, 1000).unwrap();
        assert!(!r.tick(60_000), "a paused release does not step");
        r.act(Verb::Resume, 60_000).unwrap();
        assert_eq!(r.next_due(), Some(70_000));
        assert!(r.tick(70_000));
        assert_eq!(r.canary_weight(), 5000);
    }

    #[test]
    fn a_spec_edit_resets_the_weight_and_applies_a_changed_action() {
        let mut s = spec(vec![]);
        s.traffic.canary_weight = 2000;
        let mut r = Record::new(s.clone(), 0);
        r.set_weight(3000).unwrap();
        s.traffic.canary_weight = 4000;
        r.respec(s.clone(), 1);
        assert_eq!(r.canary_weight(), 4000);
        s.action = Action::Promote;
        r.respec(s, 2);
        assert_eq!(r.state.phase, Phase::Promoted);
    }

    fn analysed(steps: Vec<Step>) -> Record {
        let mut s = spec(steps);
        s.analysis = Some(crate::model::Analysis {
            interval: "10s".into(),
            failure_limit: 2,
            min_requests: 100,
            success_rate: Some(crate::model::AtLeast { min: 0.99 }),
            latency_p99_ms: None,
        });
        Record::new(s, 0)
    }

    fn canary(requests: u64, rate: f64) -> crate::telemetry::Measured {
        crate::telemetry::Measured { requests, success_rate: Some(rate), ..Default::default() }
    }

    #[test]
    fn analysis_gates_timed_steps_and_promotes_at_the_end_of_the_plan() {
        let mut r = analysed(vec![Step::SetWeight(2000), pause(Some("5s")), Step::SetWeight(5000)]);
        assert_eq!((r.canary_weight(), r.next_check(), r.next_wake(0)), (2000, Some(10_000), Some(5000)));
        assert!(!r.tick(5000), "the pause is over but no check has passed");
        assert_eq!(r.next_wake(5000), Some(10_000), "no busy wait on a gated pause");
        assert!(!r.check(9_999, &canary(500, 1.0)), "not due yet");
        assert!(r.check(10_000, &canary(50, 1.0)));
        assert_eq!((r.canary_weight(), r.state.phase), (2000, Phase::Progressing), "too few requests hold");
        assert!(r.check(20_000, &canary(500, 1.0)));
        assert_eq!((r.canary_weight(), r.state.step, r.state.phase), (5000, 3, Phase::Progressing));
        assert!(r.waiting_for_analysis(), "the last weight is measured before promotion");
        assert!(r.check(30_000, &canary(500, 0.999)));
        assert_eq!(r.state.phase, Phase::Promoted);
        assert_eq!(r.next_check(), None, "a promoted release is not checked");
    }

    #[test]
    fn failing_checks_in_a_row_abort_and_say_why() {
        let mut r = analysed(vec![Step::SetWeight(3000), pause(Some("1h"))]);
        r.check(10_000, &canary(500, 0.7));
        assert_eq!((r.state.phase, r.analysis.failures), (Phase::Progressing, 1));
        r.check(20_000, &canary(500, 0.7));
        assert_eq!((r.state.phase, r.canary_weight()), (Phase::Aborted, 0));
        let reason = r.analysis.aborted.clone().unwrap();
        assert!(reason.contains("success rate 0.700 < 0.99"), "{reason}");
        assert!(!r.check(99_000, &canary(500, 0.7)), "no checks after the abort");
    }

    #[test]
    fn without_a_plan_analysis_guards_but_never_promotes_and_pauses_stop_checks() {
        let mut r = analysed(vec![]);
        r.check(10_000, &canary(500, 1.0));
        assert_eq!(r.state.phase, Phase::Progressing);
        r.act(Verb::Pause, 11_000).unwrap();
        assert_eq!(r.next_check(), None);
        r.act(Verb::Resume, 50_000).unwrap();
        assert_eq!(r.next_check(), Some(60_000), "the interval restarts on resume");
    }
}
