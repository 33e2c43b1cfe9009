//! What to do after one delivery attempt, as a pure function ([`decide`]).
//!
//! - Any `2xx` is delivered.
//! - `5xx`, `429`, `408`, a timeout, a receiver that cannot be reached, and a delivery that
//!   could not be sent on our side (no secret configured) are tried again, after a backoff
//!   that doubles per attempt (with jitter, capped at [`RETRY_MAX_SECONDS`]), or after the
//!   receiver's `Retry-After` when that is longer, until `WEBHOOK_GIVE_UP_AFTER_SECONDS`
//!   after the event. The last wait is cut so that the last attempt happens at that horizon.
//! - Anything else (other `4xx`, `3xx`: redirects are not followed), and a stored URL that
//!   the current callback policy refuses, gives up at once.
//!
//! What is kept of an attempt ([`description`]) is the receiver's status and a fixed text per
//! outcome: never the receiver's body, nor the platform's error text (that goes to the logs).

use crate::tagging::retry::{Backoff, MAX_DELAY_SECONDS};

/// How long one attempt may take (the response body is never read).
pub const TIMEOUT_MS: u64 = 10_000;
/// Cap of the backoff between attempts.
pub const RETRY_MAX_SECONDS: u32 = 3600;
/// How long one delivery holds an event (longer than an attempt can take).
pub const LEASE_MS: u64 = 60_000;

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this status (and `Retry-After`, in seconds, if it sent one).
    Answered {
        status: u16,
        retry_after_seconds: Option<u32>,
    },
    /// No answer within [`TIMEOUT_MS`].
    TimedOut,
    /// The connection failed (DNS, refused, TLS, reset).
    Unreachable,
    /// Not sent: something on our side is missing (a secret), which an operator can fix.
    NotSent,
    /// Not sent: the stored URL is refused by the callback policy of the moment (the
    /// deployment's allow-list or rules changed since the upload). Permanent.
    Refused,
}

/// The settings [`decide`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `WEBHOOK_RETRY_BASE_SECONDS`.
    pub base_seconds: u32,
    /// `WEBHOOK_GIVE_UP_AFTER_SECONDS`, in ms.
    pub give_up_after_ms: u64,
}

/// What becomes of a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    /// Try again in this many seconds.
    Retry {
        delay_seconds: u32,
    },
    /// Record the delivery as failed.
    GiveUp {
        expired: bool,
    },
}

/// Whether an attempt's outcome is worth another attempt.
pub fn retryable(attempt: Attempt) -> bool {
    match attempt {
        Attempt::Answered { status, .. } => {
            status == 408 || status == 429 || (500..=599).contains(&status)
        }
        Attempt::TimedOut | Attempt::Unreachable | Attempt::NotSent => true,
        Attempt::Refused => false,
    }
}

/// What a delivery keeps of an attempt as its last error (`notification.lastError`, shown to
/// the uploader): `None` for a `2xx`, else the status or a fixed text per outcome. Nothing the
/// receiver sent (its body could be an internal page) and no platform error text.
pub fn description(attempt: Attempt) -> Option<String> {
    match attempt {
        Attempt::Answered { status, .. } if (200..=299).contains(&status) => None,
        Attempt::Answered { status, .. } => Some(format!("HTTP {status}")),
        Attempt::TimedOut => Some(format!("no answer within {} s", TIMEOUT_MS / 1000)),
        Attempt::Unreachable => Some("could not connect to the receiver".into()),
        Attempt::NotSent => {
            Some("not sent: the webhook signing secret is missing or invalid".into())
        }
        Attempt::Refused => {
            Some("not sent: the callback URL is refused by the current callback policy".into())
        }
    }
}

/// Decides after attempt number `attempt` (from 1) of an event that happened at
/// `event_at_ms`. `seed` picks the jitter (see [`crate::tagging::retry::jitter_seed`]).
pub fn decide(
    outcome: Attempt,
    attempt: u32,
    event_at_ms: u64,
    now_ms: u64,
    seed: u64,
    policy: &RetryPolicy,
) -> Decision {
    if let Attempt::Answered { status, .. } = outcome {
        if (200..=299).contains(&status) {
            return Decision::Delivered;
        }
    }
    if !retryable(outcome) {
        return Decision::GiveUp { expired: false };
    }
    let horizon = event_at_ms.saturating_add(policy.give_up_after_ms);
    let remaining_ms = match horizon.checked_sub(now_ms) {
        Some(ms) if ms > 0 => ms,
        _ => return Decision::GiveUp { expired: true },
    };
    let backoff = Backoff {
        base_seconds: policy.base_seconds.max(1),
        max_seconds: RETRY_MAX_SECONDS,
    }
    .delay_seconds(attempt, seed);
    let asked = match outcome {
        Attempt::Answered {
            retry_after_seconds: Some(s),
            ..
        } => s,
        _ => 0,
    };
    let wait = u64::from(backoff.max(asked)).min(remaining_ms.div_ceil(1000));
    Decision::Retry {
        delay_seconds: wait.clamp(1, u64::from(MAX_DELAY_SECONDS)) as u32,
    }
}

/// A `Retry-After` header in seconds; the HTTP-date form and anything malformed give `None`.
pub fn parse_retry_after(value: Option<&str>) -> Option<u32> {
    let value = value?.trim();
    if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base_seconds: 30,
        give_up_after_ms: 86_400_000,
    };
    const EVENT: u64 = 1_000_000;

    fn answered(status: u16) -> Attempt {
        Attempt::Answered {
            status,
            retry_after_seconds: None,
        }
    }

    fn decide_at(outcome: Attempt, attempt: u32, now: u64) -> Decision {
        decide(outcome, attempt, EVENT, now, 0, &POLICY)
    }

    #[test]
    fn a_refused_url_gives_up_at_once_with_a_fixed_text() {
        assert_eq!(
            decide_at(Attempt::Refused, 1, EVENT),
            Decision::GiveUp { expired: false }
        );
        assert_eq!(description(answered(204)), None);
        assert_eq!(description(answered(503)).as_deref(), Some("HTTP 503"));
        for outcome in [
            Attempt::TimedOut,
            Attempt::Unreachable,
            Attempt::NotSent,
            Attempt::Refused,
        ] {
            let text = description(outcome).unwrap();
            assert!(!text.is_empty() && text.len() < 100, "{text}");
        }
    }

    #[test]
    fn any_2xx_is_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(decide_at(answered(status), 1, EVENT), Decision::Delivered);
        }
        // Even past the horizon: it arrived.
        assert_eq!(
            decide_at(answered(200), 9, EVENT + 10 * 86_400_000),
            Decision::Delivered
        );
    }

    #[test]
    fn server_errors_rate_limits_and_timeouts_retry_with_growing_backoff() {
        for outcome in [
            answered(500),
            answered(502),
            answered(503),
            answered(599),
            answered(429),
            answered(408),
            Attempt::TimedOut,
            Attempt::Unreachable,
            Attempt::NotSent,
        ] {
            assert_eq!(
                decide_at(outcome, 1, EVENT),
                Decision::Retry { delay_seconds: 30 },
                "{outcome:?}"
            );
            assert_eq!(
                decide_at(outcome, 2, EVENT),
                Decision::Retry { delay_seconds: 60 }
            );
            assert_eq!(
                decide_at(outcome, 3, EVENT),
                Decision::Retry { delay_seconds: 120 }
            );
        }
        assert_eq!(
            decide_at(answered(503), 30, EVENT),
            Decision::Retry {
                delay_seconds: RETRY_MAX_SECONDS
            },
            "capped"
        );
    }

    #[test]
    fn other_statuses_give_up_at_once() {
        for status in [
            400, 401, 403, 404, 405, 409, 410, 413, 422, 301, 302, 307, 308, 100, 600,
        ] {
            assert_eq!(
                decide_at(answered(status), 1, EVENT),
                Decision::GiveUp { expired: false },
                "{status}"
            );
        }
    }

    #[test]
    fn the_horizon_ends_retries_and_the_last_wait_is_cut_to_it() {
        let horizon = EVENT + POLICY.give_up_after_ms;
        assert_eq!(
            decide_at(answered(503), 5, horizon),
            Decision::GiveUp { expired: true }
        );
        assert_eq!(
            decide_at(Attempt::TimedOut, 5, horizon + 1),
            Decision::GiveUp { expired: true }
        );
        assert_eq!(
            decide_at(answered(503), 20, horizon - 1500),
            Decision::Retry { delay_seconds: 2 }
        );
        assert_eq!(
            decide_at(answered(503), 20, horizon - 1),
            Decision::Retry { delay_seconds: 1 }
        );
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let asked = |s| Attempt::Answered {
            status: 429,
            retry_after_seconds: Some(s),
        };
        assert_eq!(
            decide_at(asked(600), 1, EVENT),
            Decision::Retry { delay_seconds: 600 }
        );
        assert_eq!(
            decide_at(asked(5), 1, EVENT),
            Decision::Retry { delay_seconds: 30 }
        );
        assert_eq!(
            decide_at(asked(u32::MAX), 1, EVENT),
            Decision::Retry {
                delay_seconds: MAX_DELAY_SECONDS
            }
        );
        assert_eq!(parse_retry_after(Some(" 120 ")), Some(120));
        for bad in [
            None,
            Some(""),
            Some("-1"),
            Some("1.5"),
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some("9999999999"),
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tests_can_use_a_base_of_one_second() {
        let fast = RetryPolicy {
            base_seconds: 1,
            give_up_after_ms: 5_000,
        };
        assert_eq!(
            decide(answered(503), 1, EVENT, EVENT, 0, &fast),
            Decision::Retry { delay_seconds: 1 }
        );
        assert_eq!(
            decide(answered(503), 2, EVENT, EVENT + 1000, 0, &fast),
            Decision::Retry { delay_seconds: 2 }
        );
        assert_eq!(
            decide(answered(503), 3, EVENT, EVENT + 3000, 0, &fast),
            Decision::Retry { delay_seconds: 2 },
            "cut to the horizon"
        );
        assert_eq!(
            decide(answered(503), 4, EVENT, EVENT + 5000, 0, &fast),
            Decision::GiveUp { expired: true }
        );
    }

    proptest! {
        #[test]
        fn every_decision_is_legal(
            status in 100u16..700, kind in 0u8..4, retry_after in proptest::option::of(any::<u32>()),
            attempt in 1u32..200, elapsed in 0u64..200_000_000, seed in any::<u64>(), base in 0u32..100,
        ) {
            let outcome = match kind {
                0 => Attempt::Answered { status, retry_after_seconds: retry_after },
                1 => Attempt::TimedOut,
                2 => Attempt::Unreachable,
                _ => Attempt::NotSent,
            };
            let policy = RetryPolicy { base_seconds: base, give_up_after_ms: 86_400_000 };
            let now = EVENT + elapsed;
            match decide(outcome, attempt, EVENT, now, seed, &policy) {
                Decision::Delivered => prop_assert!(kind == 0 && (200..300).contains(&status)),
                Decision::GiveUp { expired: false } => prop_assert!(!retryable(outcome)),
                Decision::GiveUp { expired: true } => {
                    prop_assert!(retryable(outcome) && elapsed >= policy.give_up_after_ms)
                }
                Decision::Retry { delay_seconds } => {
                    prop_assert!(retryable(outcome));
                    prop_assert!((1..=MAX_DELAY_SECONDS).contains(&delay_seconds));
                    // Never past the horizon, rounded up to a whole second.
                    let horizon = EVENT + policy.give_up_after_ms;
                    prop_assert!(now + u64::from(delay_seconds) * 1000 < horizon + 1000);
                }
            }
        }

        #[test]
        fn waits_grow_until_the_cap(attempt in 1u32..6, s1 in any::<u64>(), s2 in any::<u64>()) {
            let d = |a, s| decide(Attempt::TimedOut, a, EVENT, EVENT, s, &POLICY);
            let (Decision::Retry { delay_seconds: a }, Decision::Retry { delay_seconds: b }) =
                (d(attempt, s1), d(attempt + 1, s2)) else { panic!("retry") };
            prop_assert!(b > a);
        }
    }
}
