//! The agent's supervision of Envoy as a pure state machine: events in (Envoy started or exited, time passed,
//! SIGTERM), actions out (spawn, drain, stop, exit). Tested without spawning anything; `agent::run` is the shell
//! that performs the actions and feeds back the events.
//!
//! ```text
//!  Starting ─Started─▶ Running ─Exited─▶ Backoff(n) ─Tick(at the delay)─▶ Starting      (restart, never a loop:
//!                         │                 delay 0.5 s doubling to 30 s; reset after 60 s of running)
//!                         └─Term─▶ Draining ─Tick(drain over)─▶ Stopping ─Exited─▶ Done(exit 0)
//!                                                     └─Tick(5 s, still running)─▶ Kill (SIGKILL) ─Exited─▶ Done
//!  Backoff ─Term─▶ Done (nothing to drain)
//! ```

use std::time::{Duration, Instant};

/// First restart delay; each consecutive failure doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Running this long means the next exit is a fresh failure (the delay starts over).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How long Envoy gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Envoy is being started.
    Starting {
        failures: u32,
    },
    Running {
        since: Instant,
        failures: u32,
    },
    /// Envoy exited; it is started again at `until`.
    Backoff {
        until: Instant,
        failures: u32,
    },
    /// SIGTERM: listeners drain until `until`, then Envoy is stopped.
    Draining {
        until: Instant,
    },
    /// Envoy was told to stop; waiting for it to exit, and killed if it still runs at `until`.
    Stopping {
        until: Instant,
    },
    /// Envoy was killed; waiting for it to exit.
    Killed,
    /// The agent exits with this code.
    Done(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started(Instant),
    /// Envoy exited (its exit code, or the signal as a negative number).
    Exited {
        at: Instant,
        code: i32,
    },
    Tick(Instant),
    /// SIGTERM (or SIGINT) for the pod.
    Term(Instant),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Spawn,
    /// Stop accepting new connections and let open ones finish (Envoy's `/drain_listeners?graceful`).
    Drain,
    /// Stop Envoy (SIGTERM).
    Stop,
    /// Envoy did not exit after SIGTERM: SIGKILL.
    Kill,
    /// Log why Envoy exited and when it restarts.
    Report {
        code: i32,
        restart_in: Duration,
        failures: u32,
    },
    Exit(i32),
}

/// How long to wait after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// One step: the next state and what to do.
pub fn step(state: State, event: Event, drain: Duration) -> (State, Vec<Action>) {
    use {Action as A, Event as E, State as S};
    match (state, event) {
        (S::Starting { failures }, E::Started(at)) => (S::Running { since: at, failures }, vec![]),
        (S::Running { since, failures }, E::Exited { at, code }) => {
            let failures = if at.duration_since(since) >= HEALTHY_AFTER { 1 } else { failures + 1 };
            let delay = backoff(failures);
            (S::Backoff { until: at + delay, failures }, vec![A::Report { code, restart_in: delay, failures }])
        }
        (S::Starting { failures }, E::Exited { at, code }) => {
            let failures = failures + 1;
            let delay = backoff(failures);
            (S::Backoff { until: at + delay, failures }, vec![A::Report { code, restart_in: delay, failures }])
        }
        (S::Backoff { until, failures }, E::Tick(now)) if now >= until => (S::Starting { failures }, vec![A::Spawn]),
        (S::Running { .. }, E::Term(at)) => (S::Draining { until: at + drain }, vec![A::Drain]),
        (S::Starting { .. }, E::Term(at)) => (S::Draining { until: at + drain }, vec![A::Drain]),
        (S::Backoff { .. }, E::Term(_)) => (S::Done(0), vec![A::Exit(0)]),
        (S::Draining { until }, E::Tick(now)) if now >= until => {
            (S::Stopping { until: now + STOP_GRACE }, vec![A::Stop])
        }
        (S::Stopping { until }, E::Tick(now)) if now >= until => (S::Killed, vec![A::Kill]),
        (S::Draining { .. } | S::Stopping { .. } | S::Killed, E::Exited { .. }) => (S::Done(0), vec![A::Exit(0)]),
        (state, _) => (state, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(5);

    #[test]
    fn a_crash_restarts_after_a_growing_delay() {
        let t0 = Instant::now();
        let (s, _) = step(State::Starting { failures: 0 }, Event::Started(t0), DRAIN);
        let (s, a) = step(s, Event::Exited { at: t0 + Duration::from_secs(1), code: -9 }, DRAIN);
        assert_eq!(a, [Action::Report { code: -9, restart_in: FIRST_BACKOFF, failures: 1 }]);
        let (s, a) = step(s, Event::Tick(t0 + Duration::from_millis(1200)), DRAIN);
        assert!(a.is_empty(), "not before the delay");
        let (s, a) = step(s, Event::Tick(t0 + Duration::from_millis(1600)), DRAIN);
        assert_eq!(a, [Action::Spawn]);
        // Failing again at once: the delay doubles, up to the cap.
        let (s, _) = step(s, Event::Started(t0 + Duration::from_secs(2)), DRAIN);
        let (_, a) = step(s, Event::Exited { at: t0 + Duration::from_secs(3), code: 1 }, DRAIN);
        assert_eq!(a, [Action::Report { code: 1, restart_in: FIRST_BACKOFF * 2, failures: 2 }]);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_long_run_resets_the_delay() {
        let t0 = Instant::now();
        let running = State::Running { since: t0, failures: 5 };
        let (_, a) = step(running, Event::Exited { at: t0 + HEALTHY_AFTER, code: 0 }, DRAIN);
        assert_eq!(a, [Action::Report { code: 0, restart_in: FIRST_BACKOFF, failures: 1 }]);
    }

    #[test]
    fn sigterm_drains_then_stops_then_exits() {
        let t0 = Instant::now();
        let (s, a) = step(State::Running { since: t0, failures: 0 }, Event::Term(t0), DRAIN);
        assert_eq!(a, [Action::Drain]);
        let (s, a) = step(s, Event::Tick(t0 + Duration::from_secs(1)), DRAIN);
        assert!(a.is_empty(), "open requests get the drain time");
        let (s, a) = step(s, Event::Tick(t0 + DRAIN), DRAIN);
        assert_eq!(a, [Action::Stop]);
        let (done, a) = step(s.clone(), Event::Exited { at: t0 + DRAIN, code: 0 }, DRAIN);
        assert_eq!((done, a), (State::Done(0), vec![Action::Exit(0)]));
        // An Envoy that ignores SIGTERM is killed after the grace period.
        let (s, a) = step(s, Event::Tick(t0 + DRAIN + STOP_GRACE), DRAIN);
        assert_eq!((s.clone(), a), (State::Killed, vec![Action::Kill]));
        let (s, a) = step(s, Event::Exited { at: t0 + DRAIN + STOP_GRACE, code: -9 }, DRAIN);
        assert_eq!((s, a), (State::Done(0), vec![Action::Exit(0)]));
        // Terminated while waiting to restart: nothing to drain.
        let (_, a) = step(State::Backoff { until: t0, failures: 1 }, Event::Term(t0), DRAIN);
        assert_eq!(a, [Action::Exit(0)]);
    }
}
