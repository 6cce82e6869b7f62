//! hookd's one timeline. Every time hookd stores or compares — due times, attempt times, ids,
//! the prune cutoff — is read from [`now_millis`]: the wall clock as it was when the process
//! started (or the newest stored record, if that is up to a day later), advanced by the
//! monotonic clock.
//!
//! Why: a retry due in 2 s must go out in 2 s whatever happens to the wall clock meanwhile.
//! Waiting on timers alone is not enough, because a timer that fires is checked against "now";
//! with the wall clock stepped back an hour, that check would hold the retry for the hour, and
//! stepped forward eight days, the prune cutoff would remove records a week early. Within a
//! run, time here only moves as fast as the monotonic clock does.
//!
//! Invariants:
//! - [`now_millis`] never goes backwards within a process, and a wall-clock step (either way)
//!   does not move it;
//! - [`raise_floor`] may only move it forward, and only during start-up (before any actor
//!   schedules anything), so that records written by an earlier run whose clock was ahead are
//!   not seen as "in the future";
//! - [`wall_millis`] is the real wall clock, used only where another party compares the value
//!   with *its* wall clock: the `webhook-timestamp` header and HTTP dates.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::model::UnixMillis;

struct Anchor {
    wall: UnixMillis,
    mono: Instant,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();
/// Added to the anchor's wall time by [`raise_floor`].
static RAISED: AtomicI64 = AtomicI64::new(0);

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| Anchor {
        wall: wall_millis(),
        mono: Instant::now(),
    })
}

/// The real wall clock, in milliseconds since the Unix epoch.
pub fn wall_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// hookd's time: the start-up wall clock plus monotonic time elapsed since.
pub fn now_millis() -> UnixMillis {
    let a = anchor();
    a.wall + RAISED.load(Ordering::Relaxed) + a.mono.elapsed().as_millis() as i64
}

/// [`now_millis`] as a `SystemTime`, for ids (ULIDs carry their creation time).
pub fn now_system_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(now_millis().max(0) as u64)
}

/// Start-up: hookd's time is at least `floor` (the newest stored record). Returns how far it
/// moved forward, in milliseconds (0 when the wall clock was already past `floor`).
pub fn raise_floor(floor: UnixMillis) -> i64 {
    let behind = floor - now_millis();
    if behind > 0 {
        RAISED.fetch_add(behind, Ordering::Relaxed);
        behind
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hookd_time_follows_the_monotonic_clock_and_only_rises() {
        let a = now_millis();
        std::thread::sleep(Duration::from_millis(20));
        let b = now_millis();
        assert!(b - a >= 20, "{a} → {b}");
        // (Raising it would move the clock of every other test in this process.)
        assert_eq!(
            raise_floor(b - 1000),
            0,
            "a floor behind now changes nothing"
        );
        assert!(now_millis() >= b);
    }
}
