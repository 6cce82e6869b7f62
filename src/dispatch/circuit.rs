//! When an endpoint counts as failing, and how often a failing endpoint is probed.
//!
//! A failing endpoint's queue is held: deliveries that come due wait instead of each spending
//! a retry on a receiver known to be down. One probe at a time (the earliest due delivery, no
//! earlier than its own schedule allows) tests it; the first success closes the circuit and
//! the held backlog drains.
//!
//! [`CircuitState::after_attempt`] is the whole transition table, a pure function of the state,
//! the attempt's outcome and `now`; the endpoint actor only applies what it returns.

use std::time::Duration;

use crate::model::{EndpointStats, UnixMillis};

/// Consecutive failed attempts that open the circuit.
pub const OPEN_AFTER: u32 = 5;

const FIRST_PROBE: Duration = Duration::from_secs(1);
/// Longest wait between probes while the endpoint has been failing for less than
/// [`LONG_OUTAGE`]: a short blip is noticed within half a minute.
const SHORT_OUTAGE_CAP: Duration = Duration::from_secs(30);
const LONG_OUTAGE: Duration = Duration::from_secs(600);
/// Longest wait between probes once the outage is long.
const LONG_OUTAGE_CAP: Duration = Duration::from_secs(300);

/// The wait before the next probe after `failed_probes` failed probes, the circuit having been
/// open for `open_for`: 1 s, 2 s, 4 s … up to 30 s, and up to 5 min after 10 min.
pub fn probe_interval(failed_probes: u32, open_for: Duration) -> Duration {
    let cap = if open_for < LONG_OUTAGE {
        SHORT_OUTAGE_CAP
    } else {
        LONG_OUTAGE_CAP
    };
    FIRST_PROBE
        .checked_mul(1u32 << failed_probes.min(16))
        .map_or(cap, |d| d.min(cap))
}

/// What an endpoint's circuit knows. All but `next_probe_at` is stored with the endpoint's
/// stats; `next_probe_at` is derived again after a restart ([`CircuitState::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitState {
    pub consecutive_failures: u32,
    /// Set while the circuit is open.
    pub failing_since: Option<UnixMillis>,
    pub failed_probes: u32,
    /// While open: the earliest time the next probe may start.
    pub next_probe_at: Option<UnixMillis>,
}

/// What a transition did, for the log and the state gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// Failures in a row reached [`OPEN_AFTER`]: the queue is held from now on.
    Opened,
    /// A probe failed; the next one waits longer.
    ProbeFailed,
    /// A success closed it after it had been open this long.
    Closed {
        open_for_ms: i64,
    },
}

/// What may start now: `room` attempts, none before `not_before`, as `probe`s or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub room: usize,
    pub not_before: UnixMillis,
    pub probe: bool,
}

fn at(now: UnixMillis, wait: Duration) -> UnixMillis {
    now.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64)
}

impl CircuitState {
    /// The circuit as stored, after a restart: a failing endpoint stays failing and its next
    /// probe comes after the interval it had earned, not a burst of the whole queue.
    pub fn restore(stats: &EndpointStats, now: UnixMillis) -> CircuitState {
        let next_probe_at = stats.failing_since.map(|since| {
            let open_for = Duration::from_millis((now - since).max(0) as u64);
            at(now, probe_interval(stats.failed_probes, open_for))
        });
        CircuitState {
            consecutive_failures: stats.consecutive_failures,
            failing_since: stats.failing_since,
            failed_probes: stats.failed_probes,
            next_probe_at,
        }
    }

    /// Copies the stored part into the endpoint's stats.
    pub fn store_in(&self, stats: &mut EndpointStats) {
        stats.consecutive_failures = self.consecutive_failures;
        stats.failing_since = self.failing_since;
        stats.failed_probes = self.failed_probes;
    }

    pub fn is_open(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Closed: up to `max_concurrency` at once, each on its own schedule. Open: one probe at a
    /// time, not before `next_probe_at`.
    pub fn admission(&self, max_concurrency: usize, sending: usize) -> Admission {
        match self.next_probe_at.filter(|_| self.is_open()) {
            Some(not_before) => Admission {
                room: usize::from(sending == 0),
                not_before,
                probe: true,
            },
            None => Admission {
                room: max_concurrency.saturating_sub(sending),
                not_before: UnixMillis::MIN,
                probe: false,
            },
        }
    }

    /// [`CircuitState::after_attempt`] for an attempt that came to `result`: one that failed
    /// before reaching the receiver (its proxy or token endpoint failed) says nothing about
    /// the receiver and changes nothing.
    pub fn after_result(
        &self,
        probe: bool,
        result: crate::model::AttemptResult,
        retry_after: Option<Duration>,
        now: UnixMillis,
    ) -> (CircuitState, Transition) {
        if !result.is_the_receivers() {
            return (*self, Transition::Unchanged);
        }
        let success = result == crate::model::AttemptResult::Success;
        self.after_attempt(probe, success, retry_after, now)
    }

    /// The state after one attempt (`probe`: it was the open circuit's probe) that succeeded
    /// or not, the receiver having asked for `retry_after`.
    pub fn after_attempt(
        &self,
        probe: bool,
        success: bool,
        retry_after: Option<Duration>,
        now: UnixMillis,
    ) -> (CircuitState, Transition) {
        let mut next = *self;
        if success {
            next.consecutive_failures = 0;
            return match next.failing_since.take() {
                Some(since) => {
                    next.failed_probes = 0;
                    next.next_probe_at = None;
                    (
                        next,
                        Transition::Closed {
                            open_for_ms: now - since,
                        },
                    )
                }
                None => (next, Transition::Unchanged),
            };
        }
        next.consecutive_failures = next.consecutive_failures.saturating_add(1);
        let asked = retry_after.unwrap_or(Duration::ZERO);
        match next.failing_since {
            None if next.consecutive_failures >= OPEN_AFTER => {
                next.failing_since = Some(now);
                next.failed_probes = 0;
                next.next_probe_at = Some(at(now, probe_interval(0, Duration::ZERO).max(asked)));
                (next, Transition::Opened)
            }
            None => (next, Transition::Unchanged),
            Some(since) if probe => {
                next.failed_probes = next.failed_probes.saturating_add(1);
                let open_for = Duration::from_millis((now - since).max(0) as u64);
                let wait = probe_interval(next.failed_probes, open_for).max(asked);
                next.next_probe_at = Some(at(now, wait));
                (next, Transition::ProbeFailed)
            }
            // An attempt started before the circuit opened came back failed: the probe
            // schedule stands.
            Some(_) => (next, Transition::Unchanged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_before_the_receiver_leave_the_circuit_alone() {
        use crate::model::AttemptResult as R;
        let mut c = CircuitState::default();
        for _ in 0..10 {
            c = c.after_result(false, R::AuthError, None, T0).0;
            c = c.after_result(false, R::ProxyError, None, T0).0;
        }
        assert_eq!(c.consecutive_failures, 0);
        assert!(!c.is_open());
        for _ in 0..OPEN_AFTER {
            c = c.after_result(false, R::Http5xx, None, T0).0;
        }
        assert!(c.is_open());
        let (still, t) = c.after_result(true, R::ProxyError, None, T0 + 1);
        assert_eq!((still, t), (c, Transition::Unchanged));
    }

    #[test]
    fn probes_back_off_then_stay_at_the_cap() {
        let short = Duration::from_secs(5);
        let waits: Vec<u64> = (0..8).map(|k| probe_interval(k, short).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(probe_interval(u32::MAX, short), SHORT_OUTAGE_CAP);
        let long = Duration::from_secs(3600);
        assert_eq!(probe_interval(3, long), Duration::from_secs(8));
        assert_eq!(probe_interval(20, long), LONG_OUTAGE_CAP);
    }

    const T0: UnixMillis = 1_000_000;

    fn fail(c: CircuitState, probe: bool, now: UnixMillis) -> (CircuitState, Transition) {
        c.after_attempt(probe, false, None, now)
    }

    #[test]
    fn opens_after_failures_in_a_row_and_holds_the_queue() {
        let mut c = CircuitState::default();
        for i in 1..OPEN_AFTER {
            let (next, t) = fail(c, false, T0);
            assert_eq!((next.consecutive_failures, t), (i, Transition::Unchanged));
            c = next;
        }
        // A success in between starts the count again.
        let (reset, _) = c.after_attempt(false, true, None, T0);
        assert_eq!(reset.consecutive_failures, 0);
        let (open, t) = fail(c, false, T0);
        assert_eq!(t, Transition::Opened);
        assert_eq!(open.failing_since, Some(T0));
        assert_eq!(open.next_probe_at, Some(T0 + 1000), "first probe after 1 s");
        let a = open.admission(16, 0);
        assert_eq!((a.room, a.not_before, a.probe), (1, T0 + 1000, true));
        assert_eq!(open.admission(16, 1).room, 0, "one probe at a time");
        let closed = CircuitState::default().admission(16, 3);
        assert_eq!((closed.room, closed.probe), (13, false));
    }

    #[test]
    fn failed_probes_back_off_and_a_success_closes() {
        let (mut c, _) = fail(
            CircuitState {
                consecutive_failures: OPEN_AFTER - 1,
                ..Default::default()
            },
            false,
            T0,
        );
        let mut waits = Vec::new();
        let mut now = T0;
        for _ in 0..6 {
            now = c.next_probe_at.unwrap();
            let (next, t) = fail(c, true, now);
            assert_eq!(t, Transition::ProbeFailed);
            waits.push((next.next_probe_at.unwrap() - now) / 1000);
            c = next;
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        // A late result of an attempt started before the circuit opened changes no timing.
        let (late, t) = fail(c, false, now + 5);
        assert_eq!(
            (late.next_probe_at, t),
            (c.next_probe_at, Transition::Unchanged)
        );
        let (closed, t) = c.after_attempt(true, true, None, now + 100);
        assert_eq!(
            t,
            Transition::Closed {
                open_for_ms: now + 100 - T0
            }
        );
        assert_eq!(closed, CircuitState::default());
    }

    #[test]
    fn retry_after_outweighs_a_shorter_probe_interval_only() {
        let open = CircuitState {
            consecutive_failures: 9,
            failing_since: Some(T0),
            failed_probes: 0,
            next_probe_at: Some(T0 + 1000),
        };
        let (c, _) = open.after_attempt(true, false, Some(Duration::from_secs(60)), T0 + 1000);
        assert_eq!(
            c.next_probe_at,
            Some(T0 + 1000 + 60_000),
            "Retry-After: 60 wins over 2 s"
        );
        let (c, _) = open.after_attempt(true, false, Some(Duration::from_millis(10)), T0 + 1000);
        assert_eq!(
            c.next_probe_at,
            Some(T0 + 1000 + 2000),
            "2 s wins over 10 ms"
        );
        // Opening honours it too.
        let almost = CircuitState {
            consecutive_failures: OPEN_AFTER - 1,
            ..Default::default()
        };
        let (c, t) = almost.after_attempt(false, false, Some(Duration::from_secs(120)), T0);
        assert_eq!(
            (t, c.next_probe_at),
            (Transition::Opened, Some(T0 + 120_000))
        );
    }

    #[test]
    fn a_restart_keeps_the_circuit_open_with_the_interval_it_had_earned() {
        let stats = EndpointStats {
            consecutive_failures: 12,
            failing_since: Some(T0),
            failed_probes: 3,
            ..Default::default()
        };
        let c = CircuitState::restore(&stats, T0 + 60_000);
        assert!(c.is_open());
        assert_eq!(c.next_probe_at, Some(T0 + 60_000 + 8000));
        // Open for over ten minutes: the long cap applies.
        let long = EndpointStats {
            failed_probes: 20,
            ..stats
        };
        let c = CircuitState::restore(&long, T0 + 3_600_000);
        assert_eq!(c.next_probe_at, Some(T0 + 3_600_000 + 300_000));
        let closed = CircuitState::restore(&EndpointStats::default(), T0);
        assert_eq!((closed.is_open(), closed.next_probe_at), (false, None));
        let mut back = EndpointStats::default();
        c.store_in(&mut back);
        assert_eq!((back.failed_probes, back.failing_since), (20, Some(T0)));
    }
}
