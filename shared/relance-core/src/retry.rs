//! The retry schedule of work handed to the outside world (webhook calls, deliveries of
//! `relance run`): 30 s after the first retryable failure, doubling up to an hour, until a day
//! after the first attempt, then dead-lettered.

use chrono::{DateTime, Duration, Utc};

/// How long a call is retried, counted from its first attempt, before it is dead-lettered.
pub const RETRY_WINDOW_HOURS: i64 = 24;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_SECONDS: i64 = 3600;
/// The first wait after a retryable answer; it doubles with each attempt.
pub const FIRST_BACKOFF_SECONDS: i64 = 30;

/// The wait after attempt `attempt` (1 for the first) failed retryably: 30 s, doubling, at
/// most an hour.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(20);
    Duration::seconds((FIRST_BACKOFF_SECONDS << doublings).min(MAX_BACKOFF_SECONDS))
}

/// When to try again after attempt `attempt` failed at `now`, or None when that would be past
/// the retry window opened by the first attempt at `first`: then the work is dead-lettered.
pub fn next_attempt(
    first: DateTime<Utc>,
    attempt: u32,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let next = now.checked_add_signed(backoff(attempt))?;
    let deadline = first.checked_add_signed(Duration::hours(RETRY_WINDOW_HOURS))?;
    (next <= deadline).then_some(next)
}

/// Why work retried past its window is dead-lettered: `{what} dead-lettered after {attempts}
/// attempts in 24 h: {why}` (`what`: webhook, invoke, delivery).
pub fn dead_reason(what: &str, attempts: u32, why: &str) -> String {
    format!("{what} dead-lettered after {attempts} attempts in {RETRY_WINDOW_HOURS} h: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, h, m, s)
            .single()
            .expect("valid")
    }

    #[test]
    fn backoff_doubles_from_thirty_seconds_to_an_hour() {
        let first = at(0, 0, 0);
        let waits: Vec<i64> = (1..=9)
            .map(|n| {
                next_attempt(first, n, first)
                    .map(|t| (t - first).num_seconds())
                    .expect("within the window")
            })
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
    }

    #[test]
    fn the_window_closes_a_day_after_the_first_attempt() {
        let first = at(0, 0, 0);
        let late = first + Duration::hours(23) + Duration::minutes(30);
        assert_eq!(next_attempt(first, 20, late), None);
        let earlier = first + Duration::hours(22);
        assert_eq!(
            next_attempt(first, 20, earlier),
            Some(earlier + Duration::hours(1))
        );
    }
}
