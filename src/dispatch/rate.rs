//! An endpoint's rate limit: a token bucket owned by its actor, a pure function of its state
//! and `now` (hookd's clock, so a wall-clock step neither grants nor withholds tokens).
//!
//! Invariants:
//! - tokens never exceed `burst`; each started attempt takes one, so over any window of `w`
//!   ms at most `burst + per_second × w / 1000` attempts start (rounded down);
//! - a test send that must go out now may take a token the bucket does not have: the debt
//!   (negative tokens) delays what comes after it, so it still counts against the limit;
//! - the bucket is stored with the endpoint's stats and restored by refilling from the stored
//!   time, so a restart grants no burst beyond what the bucket had earned.

use crate::model::{RateLimit, UnixMillis};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    per_ms: f64,
    burst: f64,
    tokens: f64,
    at: UnixMillis,
}

impl TokenBucket {
    /// A full bucket: a new limit may start `burst` attempts at once.
    pub fn full(limit: RateLimit, now: UnixMillis) -> TokenBucket {
        TokenBucket {
            per_ms: limit.per_second / 1000.0,
            burst: f64::from(limit.burst),
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    /// The bucket as stored at `at` with `tokens`, refilled up to `now`.
    pub fn restore(
        limit: RateLimit,
        (tokens, at): (f64, UnixMillis),
        now: UnixMillis,
    ) -> TokenBucket {
        let mut b = TokenBucket::full(limit, at.min(now));
        b.tokens = tokens.min(b.burst);
        b.refill(now);
        b
    }

    /// The same bucket under a changed limit: what it holds is kept (up to the new burst).
    pub fn relimit(&mut self, limit: RateLimit, now: UnixMillis) {
        self.refill(now);
        self.per_ms = limit.per_second / 1000.0;
        self.burst = f64::from(limit.burst);
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: UnixMillis) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) as f64 * self.per_ms).min(self.burst);
            self.at = now;
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: UnixMillis) -> usize {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens.floor() as usize
        } else {
            0
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: UnixMillis) -> bool {
        if self.available(now) == 0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Takes one token whether or not there is one (a test send).
    pub fn charge(&mut self, now: UnixMillis) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// When the next whole token is there.
    pub fn next_token_at(&self) -> UnixMillis {
        if self.tokens >= 1.0 {
            return self.at;
        }
        self.at + ((1.0 - self.tokens) / self.per_ms).ceil() as i64
    }

    /// What is stored with the stats.
    pub fn snapshot(&self) -> (f64, UnixMillis) {
        (self.tokens, self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let mut b = TokenBucket::full(limit(100.0, 10), 0);
        assert_eq!((0..20).filter(|_| b.take(0)).count(), 10);
        assert_eq!(b.next_token_at(), 10, "one token per 10 ms at 100/s");
        assert!(!b.take(9));
        assert!(b.take(10));
        // A second later: 100 more, but never more than the burst at once.
        assert_eq!(b.available(1010), 10);
    }

    #[test]
    fn a_test_send_borrows_and_delays_what_follows() {
        let mut b = TokenBucket::full(limit(1.0, 1), 0);
        assert!(b.take(0));
        b.charge(0);
        assert_eq!(
            b.next_token_at(),
            2000,
            "the debt is paid off before the next start"
        );
        assert!(!b.take(1999));
        assert!(b.take(2000));
    }

    #[test]
    fn a_restart_refills_from_the_stored_bucket_only() {
        let limit = limit(100.0, 10);
        let mut b = TokenBucket::full(limit, 0);
        while b.take(0) {}
        let stored = b.snapshot();
        // Restored 50 ms later: 5 tokens earned, not a fresh burst of 10.
        let mut r = TokenBucket::restore(limit, stored, 50);
        assert_eq!(r.available(50), 5);
        // A stored time ahead of now (a clock that moved back) grants nothing extra.
        let mut ahead = TokenBucket::restore(limit, (0.0, 10_000), 50);
        assert_eq!(ahead.available(50), 0);
    }

    #[test]
    fn a_changed_limit_keeps_what_the_bucket_holds() {
        let mut b = TokenBucket::full(limit(10.0, 10), 0);
        b.relimit(limit(1000.0, 3), 0);
        assert_eq!(b.available(0), 3, "clamped to the new burst");
        while b.take(0) {}
        assert_eq!(b.next_token_at(), 1, "at the new rate");
    }

    proptest! {
        /// Over any window of a random schedule of take attempts, the starts stay within
        /// `burst + per_second × window`.
        #[test]
        fn no_window_holds_more_than_the_burst_and_the_rate(
            per_second in 0.5f64..2000.0,
            burst in 1u32..50,
            steps in proptest::collection::vec((0i64..40, 1usize..6), 1..300),
        ) {
            let mut b = TokenBucket::full(limit(per_second, burst), 0);
            let mut now = 0;
            let mut starts = Vec::new();
            for (advance, tries) in steps {
                now += advance;
                for _ in 0..tries {
                    if b.take(now) {
                        starts.push(now);
                    }
                }
            }
            for (i, &from) in starts.iter().enumerate() {
                for (j, &to) in starts.iter().enumerate().skip(i) {
                    let allowed = f64::from(burst) + per_second * (to - from) as f64 / 1000.0;
                    prop_assert!(
                        (j - i + 1) as f64 <= allowed.floor() + 1e-9,
                        "{} starts in [{from}, {to}] ms, allowed {allowed}", j - i + 1
                    );
                }
            }
        }

        /// With attempts always waiting, the bucket reaches its rate. (With a burst of 1 and
        /// waits in whole milliseconds, two starts must be a whole number of ms apart, so a
        /// rate that is not 1000/n cannot be reached without breaking the window bound; a
        /// burst of 2 or more absorbs the rounding.)
        #[test]
        fn a_backlog_is_started_at_the_rate(per_second in 1.0f64..1000.0, burst in 2u32..20) {
            let mut b = TokenBucket::full(limit(per_second, burst), 0);
            let mut started = 0usize;
            let mut now = 0;
            while now < 10_000 {
                while b.take(now) {
                    started += 1;
                }
                now = b.next_token_at().max(now + 1);
            }
            let expected = per_second * 10.0 + f64::from(burst);
            prop_assert!((started as f64) <= expected + 1.0);
            prop_assert!((started as f64) >= expected * 0.95 - 1.0, "{started} of {expected}");
        }
    }
}
