//! The retry schedule, what becomes of a delivery after an attempt, and an endpoint's effective
//! delivery settings. [`after_attempt`] is a pure function of the delivery's state, the outcome,
//! `now` and a random draw; the endpoint actor only applies it.

use std::time::Duration;

use rand::Rng;

use crate::config::DeliveryConfig;
use crate::model::{EndpointSpec, UnixMillis};

/// What a delivery becomes after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Pending, due again at `at`, having used `retries_used` retries of its schedule.
    Retry {
        at: UnixMillis,
        retries_used: u32,
    },
    /// The schedule is exhausted.
    Failed,
    /// The endpoint was deleted while the attempt was out.
    Cancelled,
    /// Its deadline passed, or would have before the next retry.
    Expired,
}

/// The attempt's facts, as [`after_attempt`] weighs them.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub success: bool,
    /// A `Retry-After` the receiver sent (already capped).
    pub retry_after: Option<Duration>,
}

/// Why the delivery's owner may override the schedule.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// The endpoint is being deleted.
    pub deleting: bool,
    /// An operator's `retry` or `recover` arrived while the attempt was out: on failure it is
    /// pending again at once on a fresh schedule (a `Retry-After` still holds it back).
    pub requeue: bool,
    /// The delivery's deadline (`None`: it has none, or an operator lifted it).
    pub expires_at: Option<UnixMillis>,
}

/// The next state of a delivery that had used `retries_used` retries, after `outcome` at
/// `now`; `unit` is a random draw in [-1, 1] for the jitter.
pub fn after_attempt(
    schedule: &RetrySchedule,
    retries_used: u32,
    outcome: Outcome,
    overrides: Overrides,
    now: UnixMillis,
    unit: f64,
) -> Next {
    let later = |d: Duration| now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
    if outcome.success {
        return Next::Succeeded;
    }
    if overrides.deleting {
        return Next::Cancelled;
    }
    let asked = outcome.retry_after.unwrap_or(Duration::ZERO);
    let next = if overrides.requeue {
        Next::Retry {
            at: later(asked),
            retries_used: 0,
        }
    } else {
        match schedule.delay(retries_used, unit) {
            Some(delay) => Next::Retry {
                at: later(delay.max(asked)),
                retries_used: retries_used + 1,
            },
            None => Next::Failed,
        }
    };
    match (next, overrides.expires_at) {
        // A retry that would come at or after the deadline is no retry at all.
        (Next::Retry { at, .. }, Some(deadline)) if at >= deadline => Next::Expired,
        (next, _) => next,
    }
}

/// Concurrency kept for first attempts however many retries are due: half of
/// `max_concurrency`, at least 1. An endpoint with a single slot cannot split it: its retries
/// and first attempts share it.
pub fn fresh_reserve(max_concurrency: usize) -> usize {
    if max_concurrency <= 1 {
        0
    } else {
        (max_concurrency / 2).max(1)
    }
}

/// What starts next, given the earliest first attempt and the earliest retry that are due
/// (`None`: none is), the retries already out, and whether the circuit is open (`probe`: one
/// probe, the earliest due of either). First attempts go first; retries only within their
/// share of `max_concurrency`, so a new event never waits behind a pile of slow retries.
pub fn pick<K: Ord + Copy>(
    fresh: Option<K>,
    retry: Option<K>,
    retries_out: usize,
    max_concurrency: usize,
    probe: bool,
) -> Option<K> {
    if probe {
        return match (fresh, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if fresh.is_some() {
        return fresh;
    }
    retry.filter(|_| retries_out < max_concurrency - fresh_reserve(max_concurrency))
}

/// A random draw for [`after_attempt`].
pub fn jitter_draw() -> f64 {
    rand::thread_rng().gen_range(-1.0..=1.0)
}

/// Delays before retry 1..n, each spread by ±`jitter`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
    jitter: f64,
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>, jitter: f64) -> RetrySchedule {
        RetrySchedule {
            delays,
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// [`RetrySchedule::delay`] with a random draw.
    #[cfg(test)]
    pub fn next_delay(&self, retries_used: u32) -> Option<Duration> {
        self.delay(retries_used, jitter_draw())
    }

    /// The delay before the next retry when `retries_used` retries were already made, spread
    /// by the random draw `unit` (in [-1, 1]), or `None` when the schedule is exhausted.
    pub fn delay(&self, retries_used: u32, unit: f64) -> Option<Duration> {
        let base = *self.delays.get(retries_used as usize)?;
        Some(self.spread(base, unit))
    }

    /// `base` scaled by `1 + jitter × unit`, with `unit` in [-1, 1].
    pub fn spread(&self, base: Duration, unit: f64) -> Duration {
        if self.jitter == 0.0 {
            return base;
        }
        base.mul_f64((1.0 + self.jitter * unit.clamp(-1.0, 1.0)).max(0.0))
    }
}

/// An endpoint's settings with the `[delivery]` defaults filled in.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub schedule: RetrySchedule,
    /// As configured (the API shows it so).
    pub signature_header: String,
    /// `signature_header` parsed once per endpoint change, like `url`, for the requests:
    /// validated when the endpoint was stored (and `delivery.signature_header` at start), so
    /// `None` means a corrupt record, and the hex signature is left out.
    pub signature_name: Option<reqwest::header::HeaderName>,
    /// Validated when the endpoint was stored; an error here means a corrupt record.
    pub url: Result<reqwest::Url, String>,
}

impl EndpointSettings {
    pub fn resolve(spec: &EndpointSpec, defaults: &DeliveryConfig) -> EndpointSettings {
        let signature_header = spec
            .signature_header
            .clone()
            .unwrap_or_else(|| defaults.signature_header.clone());
        EndpointSettings {
            signature_name: reqwest::header::HeaderName::from_bytes(signature_header.as_bytes())
                .ok(),
            signature_header,
            max_concurrency: spec
                .max_concurrency
                .unwrap_or(defaults.max_concurrency)
                .max(1) as usize,
            timeout: spec.timeout.map(|t| t.0).unwrap_or(defaults.timeout),
            schedule: RetrySchedule::new(
                spec.retry_schedule
                    .as_ref()
                    .unwrap_or(&defaults.retry_schedule)
                    .iter()
                    .map(|d| d.0)
                    .collect(),
                defaults.retry_jitter,
            ),
            url: reqwest::Url::parse(&spec.url).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn schedule_runs_out_after_its_last_delay() {
        let s = RetrySchedule::new(secs(&[60, 300]), 0.0);
        assert_eq!(s.next_delay(0), Some(Duration::from_secs(60)));
        assert_eq!(s.next_delay(1), Some(Duration::from_secs(300)));
        assert_eq!(s.next_delay(2), None);
        assert_eq!(RetrySchedule::new(vec![], 0.1).next_delay(0), None);
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let s = RetrySchedule::new(secs(&[100]), 0.1);
        assert_eq!(
            s.spread(Duration::from_secs(100), -1.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            s.spread(Duration::from_secs(100), 1.0),
            Duration::from_secs(110)
        );
        for _ in 0..1000 {
            let d = s.next_delay(0).unwrap();
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }

    const NOW: UnixMillis = 5_000_000;
    const FAILED: Outcome = Outcome {
        success: false,
        retry_after: None,
    };

    #[test]
    fn a_failed_attempt_takes_the_next_delay_until_the_schedule_is_exhausted() {
        let s = RetrySchedule::new(secs(&[60, 300]), 0.1);
        let none = Overrides::default();
        assert_eq!(
            after_attempt(&s, 0, FAILED, none, NOW, 0.0),
            Next::Retry {
                at: NOW + 60_000,
                retries_used: 1
            }
        );
        // The draw spreads it by the jitter, both ways.
        assert_eq!(
            after_attempt(&s, 1, FAILED, none, NOW, -1.0),
            Next::Retry {
                at: NOW + 270_000,
                retries_used: 2
            }
        );
        assert_eq!(after_attempt(&s, 2, FAILED, none, NOW, 0.0), Next::Failed);
        let ok = Outcome {
            success: true,
            retry_after: None,
        };
        assert_eq!(after_attempt(&s, 2, ok, none, NOW, 0.0), Next::Succeeded);
    }

    #[test]
    fn retry_after_holds_the_retry_back_but_never_brings_it_forward() {
        let s = RetrySchedule::new(secs(&[60]), 0.0);
        let asked = |secs| Outcome {
            success: false,
            retry_after: Some(Duration::from_secs(secs)),
        };
        let none = Overrides::default();
        let at = |n: Next| match n {
            Next::Retry { at, .. } => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            at(after_attempt(&s, 0, asked(600), none, NOW, 0.0)),
            NOW + 600_000
        );
        assert_eq!(
            at(after_attempt(&s, 0, asked(5), none, NOW, 0.0)),
            NOW + 60_000
        );
    }

    #[test]
    fn an_operator_requeue_during_the_attempt_wins_over_an_exhausted_schedule() {
        let s = RetrySchedule::new(secs(&[60]), 0.0);
        let requeue = Overrides {
            requeue: true,
            ..Overrides::default()
        };
        assert_eq!(
            after_attempt(&s, 1, FAILED, requeue, NOW, 0.0),
            Next::Retry {
                at: NOW,
                retries_used: 0
            },
            "pending again now, on a fresh schedule"
        );
        let deleting = Overrides {
            requeue: true,
            deleting: true,
            expires_at: None,
        };
        assert_eq!(
            after_attempt(&s, 0, FAILED, deleting, NOW, 0.0),
            Next::Cancelled
        );
    }

    #[test]
    fn a_retry_past_the_deadline_expires_the_delivery_now() {
        let s = RetrySchedule::new(secs(&[60]), 0.0);
        let due_by = |deadline| Overrides {
            expires_at: Some(deadline),
            ..Overrides::default()
        };
        assert_eq!(
            after_attempt(&s, 0, FAILED, due_by(NOW + 30_000), NOW, 0.0),
            Next::Expired
        );
        assert_eq!(
            after_attempt(&s, 0, FAILED, due_by(NOW + 90_000), NOW, 0.0),
            Next::Retry {
                at: NOW + 60_000,
                retries_used: 1
            }
        );
        // Success and an exhausted schedule are what they are, deadline or not.
        let ok = Outcome {
            success: true,
            retry_after: None,
        };
        assert_eq!(
            after_attempt(&s, 0, ok, due_by(NOW), NOW, 0.0),
            Next::Succeeded
        );
        assert_eq!(
            after_attempt(&s, 1, FAILED, due_by(NOW), NOW, 0.0),
            Next::Failed
        );
    }

    #[test]
    fn first_attempts_go_first_and_retries_keep_to_their_share() {
        assert_eq!(fresh_reserve(16), 8);
        assert_eq!(fresh_reserve(3), 1);
        assert_eq!(fresh_reserve(2), 1);
        assert_eq!(fresh_reserve(1), 0, "one slot is shared");
        // A first attempt due goes before an older retry.
        assert_eq!(
            pick(Some((5, 'f')), Some((1, 'r')), 0, 16, false),
            Some((5, 'f'))
        );
        // Retries take at most half of 16.
        assert_eq!(pick(None, Some((1, 'r')), 7, 16, false), Some((1, 'r')));
        assert_eq!(pick(None, Some((1, 'r')), 8, 16, false), None);
        // First attempts may use every slot.
        assert_eq!(pick(Some((1, 'f')), None, 8, 16, false), Some((1, 'f')));
        // One slot: retries still go.
        assert_eq!(pick(None, Some((1, 'r')), 0, 1, false), Some((1, 'r')));
        // An open circuit probes with the earliest due of either.
        assert_eq!(
            pick(Some((5, 'f')), Some((1, 'r')), 0, 16, true),
            Some((1, 'r'))
        );
        assert_eq!(pick::<(i64, char)>(None, None, 0, 16, false), None);
    }

    #[test]
    fn endpoint_settings_fall_back_to_defaults() {
        let defaults = crate::config::Config::defaults().delivery;
        let spec: EndpointSpec = serde_json::from_str(
            r#"{"tenant":"t","url":"https://x","event_types":["*"],"max_concurrency":2,"retry_schedule":["1s"]}"#,
        )
        .unwrap();
        let s = EndpointSettings::resolve(&spec, &defaults);
        assert_eq!(s.max_concurrency, 2);
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.schedule.delays(), secs(&[1]).as_slice());
        assert_eq!(s.signature_header, "X-Webhook-Signature");
    }
}
