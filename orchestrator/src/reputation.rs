//! Heartbeat arithmetic behind a node's reputation: when a node counts as offline, how many
//! heartbeats a gap missed and on which UTC days, and the 30-day rolling uptime.
//!
//! Pure functions over unix seconds, so the store and the tests share one definition.

/// A node agent sends one heartbeat every this many seconds.
pub const HEARTBEAT_INTERVAL_SECS: i64 = 15;
/// A node with no heartbeat for longer than this is offline.
pub const OFFLINE_AFTER_SECS: i64 = 120;
/// Uptime is computed over this many UTC days, today included.
pub const UPTIME_WINDOW_DAYS: i64 = 30;
/// Seconds in a UTC day.
pub const DAY_SECS: i64 = 86_400;

/// The UTC day (days since the unix epoch) that contains `t`.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_SECS)
}

/// Whether a node whose last heartbeat was at `last_heartbeat` is online at `now`.
pub fn is_online(last_heartbeat: Option<i64>, now: i64) -> bool {
    last_heartbeat.is_some_and(|last| now - last <= OFFLINE_AFTER_SECS)
}

/// Heartbeats that should have arrived strictly between two heartbeats at `prev` and `now`.
///
/// The gap is rounded to the nearest whole interval, so a heartbeat that arrives up to 7 s late
/// (network jitter) does not count as a miss, while a gap of two intervals counts one miss.
pub fn missed_between(prev: i64, now: i64) -> i64 {
    let gap = now - prev;
    if gap <= 0 {
        return 0;
    }
    ((gap + HEARTBEAT_INTERVAL_SECS / 2) / HEARTBEAT_INTERVAL_SECS - 1).max(0)
}

/// The heartbeats missed between `prev` and `now`, grouped by the UTC day each was due in.
///
/// Slot `k` (1-based) was due at `prev + 15k`. Days before `not_before_day` are left out, so a
/// node that was away for a year costs work proportional to the window, not to the gap.
pub fn missed_by_day(prev: i64, now: i64, not_before_day: i64) -> Vec<(i64, i64)> {
    let missed = missed_between(prev, now);
    if missed == 0 {
        return Vec::new();
    }
    let first_day = day_of(prev + HEARTBEAT_INTERVAL_SECS).max(not_before_day);
    let last_day = day_of(prev + HEARTBEAT_INTERVAL_SECS * missed);
    let mut out = Vec::new();
    for day in first_day..=last_day {
        let day_start = day * DAY_SECS;
        let day_end = day_start + DAY_SECS - 1;
        // Smallest k with prev + 15k >= day_start (ceiling division), and at least 1.
        let k_lo = (day_start - prev + HEARTBEAT_INTERVAL_SECS - 1)
            .div_euclid(HEARTBEAT_INTERVAL_SECS)
            .max(1);
        // Largest k with prev + 15k <= day_end (floor division), at most `missed`.
        let k_hi = (day_end - prev)
            .div_euclid(HEARTBEAT_INTERVAL_SECS)
            .min(missed);
        if k_hi >= k_lo {
            out.push((day, k_hi - k_lo + 1));
        }
    }
    out
}

/// A storage node's proof rate in basis points (10000 = every closed epoch proven): `proven`
/// over `proven + missed`; `None` before any epoch closed. Rounded down: a node never shows a
/// better record than it has.
pub fn storage_proof_rate_bps(proven: u64, missed: u64) -> Option<u32> {
    let total = u128::from(proven) + u128::from(missed);
    (total > 0).then(|| u32::try_from(u128::from(proven) * 10_000 / total).unwrap_or(10_000))
}

/// First UTC day of the uptime window that ends at `now`.
pub fn window_start_day(now: i64) -> i64 {
    day_of(now) - (UPTIME_WINDOW_DAYS - 1)
}

/// Rolling uptime in basis points (10000 = 100%) over the window ending at `now`.
///
/// `expected` counts one heartbeat per 15 s from the later of the node's first heartbeat and the
/// window start; `failed` is the recorded misses inside the window plus the misses of the gap
/// still open since `last_heartbeat`. `None` while nothing was expected yet.
pub fn uptime_bps(
    first_heartbeat: i64,
    last_heartbeat: i64,
    recorded_failed_in_window: i64,
    now: i64,
) -> Option<u32> {
    let window_start = window_start_day(now) * DAY_SECS;
    let start = first_heartbeat.max(window_start);
    let expected = (now - start).div_euclid(HEARTBEAT_INTERVAL_SECS);
    if expected <= 0 {
        return None;
    }
    let open_gap: i64 = missed_by_day(last_heartbeat, now, window_start_day(now))
        .iter()
        .map(|(_, n)| n)
        .sum();
    let failed = (recorded_failed_in_window + open_gap).clamp(0, expected);
    // Rounded down: a node never shows more uptime than it earned.
    Some(((expected - failed) * 10_000 / expected) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_and_jittered_heartbeats_miss_nothing() {
        assert_eq!(missed_between(0, 15), 0);
        assert_eq!(missed_between(0, 22), 0);
        assert_eq!(missed_between(0, 5), 0);
        assert_eq!(missed_between(10, 10), 0);
        assert_eq!(missed_between(10, 0), 0);
    }

    #[test]
    fn long_gaps_count_every_missed_interval() {
        assert_eq!(missed_between(0, 30), 1);
        assert_eq!(missed_between(0, 60), 3);
        assert_eq!(missed_between(0, 3600), 239);
    }

    #[test]
    fn misses_are_split_across_days() {
        // Last heartbeat 60 s before midnight, next one 60 s after: slots at -45,-30,-15,0,+15,+30,+45.
        let prev = DAY_SECS - 60;
        let split = missed_by_day(prev, DAY_SECS + 60, 0);
        assert_eq!(split, vec![(0, 3), (1, 4)]);
        let total: i64 = split.iter().map(|(_, n)| n).sum();
        assert_eq!(total, missed_between(prev, DAY_SECS + 60));
    }

    #[test]
    fn misses_before_the_window_are_left_out() {
        let split = missed_by_day(0, 10 * DAY_SECS, 9);
        // Slots 51840..=57599 fall on day 9, the only day at or after the window start.
        assert_eq!(split, vec![(9, 5760)]);
    }

    #[test]
    fn uptime_is_expected_minus_failed_over_expected() {
        let now = 100 * DAY_SECS;
        let first = now - 3600; // 240 expected heartbeats
        assert_eq!(uptime_bps(first, now, 0, now), Some(10_000));
        assert_eq!(uptime_bps(first, now, 24, now), Some(9_000));
        // An open gap of 10 minutes since the last heartbeat counts as 39 misses.
        assert_eq!(
            uptime_bps(first, now - 600, 0, now),
            Some((240 - 39) * 10_000 / 240)
        );
        assert_eq!(uptime_bps(now, now, 0, now), None);
    }

    #[test]
    fn uptime_only_looks_at_the_last_thirty_days() {
        let now = 100 * DAY_SECS + 10;
        let expected = (now - window_start_day(now) * DAY_SECS) / HEARTBEAT_INTERVAL_SECS;
        let got = uptime_bps(0, now, 0, now).unwrap();
        assert_eq!(got, 10_000);
        assert_eq!(expected, (29 * DAY_SECS + 10) / 15);
    }

    #[test]
    fn storage_proof_rate_is_proven_over_closed_epochs_rounded_down() {
        assert_eq!(storage_proof_rate_bps(0, 0), None);
        assert_eq!(storage_proof_rate_bps(3, 0), Some(10_000));
        assert_eq!(storage_proof_rate_bps(4, 1), Some(8_000));
        assert_eq!(storage_proof_rate_bps(2, 1), Some(6_666));
        assert_eq!(storage_proof_rate_bps(0, 7), Some(0));
        assert_eq!(storage_proof_rate_bps(u64::MAX, 0), Some(10_000));
        assert_eq!(storage_proof_rate_bps(u64::MAX, u64::MAX), Some(5_000));
    }

    #[test]
    fn offline_after_two_minutes() {
        assert!(is_online(Some(0), 120));
        assert!(!is_online(Some(0), 121));
        assert!(!is_online(None, 0));
    }
}
