//! When an endpoint counts as failing, and how often a failing endpoint is probed.
//!
//! A failing endpoint's queue is held: deliveries that come due wait instead of each spending
//! a retry on a receiver known to be down. One probe at a time (the earliest due delivery, no
//! earlier than its own schedule allows) tests it; the first success closes the circuit and
//! the held backlog drains.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
