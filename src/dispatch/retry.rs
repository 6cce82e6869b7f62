//! The retry schedule and an endpoint's effective delivery settings.

use std::time::Duration;

use rand::Rng;

use crate::config::DeliveryConfig;
use crate::model::EndpointSpec;

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

    /// The delay before the next retry when `retries_used` retries were already made, or `None`
    /// when the schedule is exhausted and the delivery has failed.
    pub fn next_delay(&self, retries_used: u32) -> Option<Duration> {
        let base = *self.delays.get(retries_used as usize)?;
        Some(self.spread(base, rand::thread_rng().gen_range(-1.0..=1.0)))
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
    pub signature_header: String,
    /// Validated when the endpoint was stored; an error here means a corrupt record.
    pub url: Result<reqwest::Url, String>,
}

impl EndpointSettings {
    pub fn resolve(spec: &EndpointSpec, defaults: &DeliveryConfig) -> EndpointSettings {
        EndpointSettings {
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
            signature_header: spec
                .signature_header
                .clone()
                .unwrap_or_else(|| defaults.signature_header.clone()),
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
