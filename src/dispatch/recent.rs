//! [`RecentAttempts`]: an endpoint's attempts over the last hour, in one-minute buckets, for
//! the success ratio `hookd ctl status` and the console show. In memory only: after a restart
//! the window starts empty, which the ratio's `attempts` count makes visible.

use crate::model::UnixMillis;

const BUCKET_MS: i64 = 60_000;
const BUCKETS: usize = 60;

#[derive(Debug, Clone, Default)]
pub struct RecentAttempts {
    /// (minute number, attempts, successes); a bucket whose minute is older than the window
    /// counts as empty.
    buckets: Vec<(i64, u32, u32)>,
}

impl RecentAttempts {
    pub fn record(&mut self, success: bool, now: UnixMillis) {
        if self.buckets.is_empty() {
            self.buckets = vec![(i64::MIN, 0, 0); BUCKETS];
        }
        let minute = now.div_euclid(BUCKET_MS);
        let slot = &mut self.buckets[minute.rem_euclid(BUCKETS as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(success);
    }

    /// (attempts, successes) in the hour up to `now`.
    pub fn last_hour(&self, now: UnixMillis) -> (u64, u64) {
        let minute = now.div_euclid(BUCKET_MS);
        self.buckets
            .iter()
            .filter(|(m, _, _)| (0..BUCKETS as i64).contains(&minute.saturating_sub(*m)))
            .fold((0, 0), |(a, s), (_, n, ok)| (a + *n as u64, s + *ok as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_last_hour() {
        let mut r = RecentAttempts::default();
        assert_eq!(r.last_hour(0), (0, 0));
        r.record(true, 0);
        r.record(false, 30_000);
        r.record(true, 59 * 60_000);
        assert_eq!(r.last_hour(59 * 60_000), (3, 2));
        // Minute 0 has left the window; its slot is reused by minute 60.
        assert_eq!(r.last_hour(60 * 60_000), (1, 1));
        r.record(false, 60 * 60_000);
        assert_eq!(r.last_hour(60 * 60_000), (2, 1));
        assert_eq!(r.last_hour(200 * 60_000), (0, 0));
    }

    #[test]
    fn a_clock_behind_the_buckets_counts_nothing_from_its_future() {
        let mut r = RecentAttempts::default();
        r.record(true, 10 * 60_000);
        assert_eq!(r.last_hour(5 * 60_000), (0, 0));
    }
}
