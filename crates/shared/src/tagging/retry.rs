//! The tagger's retry policy, as pure functions: what to do with a message that could not
//! be finished ([`decide`]), how long to wait ([`Backoff`]), and how a batch's duplicate
//! messages are folded ([`group`]).
//!
//! - Permanent errors fail the image at once.
//! - Busy and transient errors back off exponentially (capped, with jitter) until
//!   `GIVE_UP_AFTER_SECONDS` after upload, then fail the image as `timed_out`.
//! - Scheduled waits (the pacer's slot, the daily budget, another delivery's lease) wait
//!   exactly as long as needed, and never give up: the image did nothing wrong. A busy AI
//!   also waits for the pacer's slot when there is one, but within the horizon.
//! - A misconfigured AI waits the longest backoff, and never gives up either.
//! - None of it spends the queue's retry budget on a busy AI: on the last delivery the
//!   message is sent again as a new one instead of being dead-lettered.

use std::collections::HashMap;
use std::hash::Hash;

use crate::tagging::error::{Class, TagError};
use crate::tagging::outcome::Outcome;

/// Cloudflare Queues' largest `delaySeconds`.
pub const MAX_DELAY_SECONDS: u32 = 43_200;

/// Which queue a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// `image-processing-queue`: tag the image.
    Images,
    /// `image-processing-dlq`: the image queue gave up on it.
    DeadLetter,
}

/// Exponential backoff with jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt (before jitter).
    pub base_seconds: u32,
    /// Cap of the exponential part.
    pub max_seconds: u32,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based), in seconds.
    ///
    /// The exponential part is `base * 2^(attempt-1)`, capped; jitter adds up to that much
    /// again, so the delay lies in `[exp, 2*exp)`. Below the cap the ranges of successive
    /// attempts do not overlap, so delays grow with the attempt even with jitter. `seed`
    /// picks the jitter; pass something that differs per message (see [`jitter_seed`]).
    pub fn delay_seconds(&self, attempt: u32, seed: u64) -> u32 {
        let shift = attempt.saturating_sub(1).min(31);
        let exp = u64::from(self.base_seconds)
            .saturating_mul(1 << shift)
            .min(u64::from(self.max_seconds));
        let jitter = if exp == 0 { 0 } else { seed % exp };
        (exp + jitter).min(u64::from(MAX_DELAY_SECONDS)) as u32
    }
}

/// A per-message, per-attempt jitter seed (FNV-1a), so that messages failing together do not
/// all come back together.
pub fn jitter_seed(message_id: &str, attempt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in message_id.bytes().chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The settings the policy reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub backoff: Backoff,
    /// The image queue consumer's `max_retries`.
    pub max_retries: u32,
    /// Busy and transient errors are retried until this long after upload.
    pub give_up_after_ms: u64,
}

/// One delivery of one message, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub queue: QueueKind,
    /// The queue's delivery count, from 1.
    pub attempt: u32,
    pub now_ms: u64,
    /// When the image was uploaded, if known: the start of the give-up horizon.
    pub uploaded_at_ms: Option<u64>,
    /// Jitter seed, see [`jitter_seed`].
    pub seed: u64,
}

/// What to do with a message that could not be finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record the image as failed with this error, then ack the message.
    Fail(TagError),
    /// Try again after `delay_seconds`: retry this message, or, when `resend`, ack it and
    /// send a copy (the queue's retries are spent, and the image did nothing wrong).
    Again {
        delay_seconds: u32,
        resend: bool,
        outcome: Outcome,
    },
}

/// Decides what becomes of a message after `error`. `not_before_ms` is when to come back, if
/// something knows better than the backoff: the pacer's slot (after the fleet-wide back-off
/// when the AI is busy), the next UTC day, the end of another delivery's lease.
pub fn decide(error: TagError, not_before_ms: Option<u64>, d: &Delivery, p: &Policy) -> Verdict {
    let class = error.class();
    if class == Class::Permanent {
        return Verdict::Fail(error);
    }
    let horizon_ms = d
        .uploaded_at_ms
        .map(|at| at.saturating_add(p.give_up_after_ms));
    let bounded = matches!(class, Class::Busy | Class::Transient);
    let remaining_s = match horizon_ms {
        Some(end) if bounded => match end.checked_sub(d.now_ms).filter(|&ms| ms > 0) {
            Some(ms) => Some(ms.div_ceil(1000)),
            None => {
                return Verdict::Fail(TagError::TimedOut(format!(
                    "{}: {}",
                    error.code(),
                    error.message()
                )))
            }
        },
        _ => None,
    };
    let backoff = p.backoff.delay_seconds(d.attempt, d.seed);
    let wait = match (not_before_ms, class) {
        (Some(at), _) => at.saturating_sub(d.now_ms).div_ceil(1000),
        (None, Class::Misconfigured) => u64::from(p.backoff.delay_seconds(u32::MAX, d.seed)),
        (None, _) => u64::from(backoff),
    };
    // Wake up no later than the horizon, so that giving up happens on time.
    let wait = remaining_s.map_or(wait, |r| wait.min(r));
    let delay_seconds = wait.clamp(1, u64::from(MAX_DELAY_SECONDS)) as u32;
    // A message of a newer schema must reach the dead letter queue eventually: no resend.
    let resend = d.queue == QueueKind::Images
        && d.attempt > p.max_retries
        && !matches!(error, TagError::NewerSchema(_));
    let outcome = match (resend, class) {
        (true, _) => Outcome::Resent,
        (false, Class::Transient) => Outcome::Retry,
        (false, _) => Outcome::Deferred,
    };
    Verdict::Again {
        delay_seconds,
        resend,
        outcome,
    }
}

/// Messages of one batch about the same image: the first is processed, the others follow it.
#[derive(Debug, PartialEq, Eq)]
pub struct Group<K, T> {
    pub key: K,
    pub first: T,
    pub duplicates: Vec<T>,
}

/// Folds items with equal keys into groups, in the order keys first appear.
pub fn group<K: Eq + Hash + Copy, T>(items: impl IntoIterator<Item = (K, T)>) -> Vec<Group<K, T>> {
    let mut groups: Vec<Group<K, T>> = Vec::new();
    let mut index: HashMap<K, usize> = HashMap::new();
    for (key, item) in items {
        match index.get(&key) {
            Some(&i) => groups[i].duplicates.push(item),
            None => {
                index.insert(key, groups.len());
                groups.push(Group {
                    key,
                    first: item,
                    duplicates: Vec::new(),
                });
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: Policy = Policy {
        backoff: Backoff {
            base_seconds: 2,
            max_seconds: 300,
        },
        max_retries: 10,
        give_up_after_ms: 86_400_000,
    };

    fn delivery(attempt: u32, now_ms: u64) -> Delivery {
        Delivery {
            queue: QueueKind::Images,
            attempt,
            now_ms,
            uploaded_at_ms: Some(1_000_000),
            seed: 0,
        }
    }

    fn again(delay_seconds: u32, resend: bool, outcome: Outcome) -> Verdict {
        Verdict::Again {
            delay_seconds,
            resend,
            outcome,
        }
    }

    #[test]
    fn delays_double_per_attempt() {
        let b = Backoff {
            base_seconds: 2,
            max_seconds: 600,
        };
        assert_eq!(b.delay_seconds(1, 0), 2);
        assert_eq!(b.delay_seconds(2, 0), 4);
        assert_eq!(b.delay_seconds(3, 0), 8);
        assert_eq!(b.delay_seconds(3, 7), 15);
        assert_eq!(b.delay_seconds(40, 0), 600);
        assert_eq!(b.delay_seconds(0, 0), 2);
        assert_eq!(
            Backoff {
                base_seconds: 0,
                max_seconds: 9
            }
            .delay_seconds(5, 3),
            0
        );
        assert_ne!(jitter_seed("a", 1), jitter_seed("b", 1));
        assert_ne!(jitter_seed("a", 1), jitter_seed("a", 2));
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let v = decide(
            TagError::ObjectMissing,
            None,
            &delivery(1, 1_000_000),
            &POLICY,
        );
        assert_eq!(v, Verdict::Fail(TagError::ObjectMissing));
    }

    #[test]
    fn busy_backs_off_and_defers() {
        let v = decide(
            TagError::AiBusy("3040".into()),
            None,
            &delivery(3, 2_000_000),
            &POLICY,
        );
        assert_eq!(v, again(8, false, Outcome::Deferred));
        let v = decide(
            TagError::Storage("kv".into()),
            None,
            &delivery(1, 2_000_000),
            &POLICY,
        );
        assert_eq!(v, again(2, false, Outcome::Retry));
    }

    #[test]
    fn scheduled_waits_exactly_until_not_before() {
        let now = 5_000_000;
        let v = decide(
            TagError::Paced,
            Some(now + 2_500),
            &delivery(1, now),
            &POLICY,
        );
        assert_eq!(v, again(3, false, Outcome::Deferred));
        let v = decide(TagError::Leased, Some(now - 10), &delivery(1, now), &POLICY);
        assert_eq!(v, again(1, false, Outcome::Deferred), "at least a second");
        let v = decide(
            TagError::BudgetSpent,
            Some(now + 86_400_000),
            &delivery(1, now),
            &POLICY,
        );
        assert_eq!(
            v,
            again(MAX_DELAY_SECONDS, false, Outcome::Deferred),
            "capped at 12 h"
        );
    }

    #[test]
    fn the_horizon_ends_busy_and_transient_errors_only() {
        let past = 1_000_000 + POLICY.give_up_after_ms;
        let busy = decide(
            TagError::AiBusy("x".into()),
            None,
            &delivery(2, past),
            &POLICY,
        );
        assert!(
            matches!(busy, Verdict::Fail(TagError::TimedOut(ref m)) if m.starts_with("ai_busy"))
        );
        for scheduled in [
            TagError::BudgetSpent,
            TagError::AiMisconfigured("5007".into()),
        ] {
            let v = decide(scheduled, Some(past + 1000), &delivery(2, past), &POLICY);
            assert!(matches!(v, Verdict::Again { .. }), "{v:?}");
        }
        // Just before the horizon, the wait is cut so that giving up happens on time.
        let v = decide(
            TagError::AiBusy("x".into()),
            None,
            &delivery(9, past - 1500),
            &POLICY,
        );
        assert_eq!(v, again(2, false, Outcome::Deferred));
    }

    #[test]
    fn the_last_delivery_resends_instead_of_dead_lettering() {
        let v = decide(
            TagError::AiBusy("x".into()),
            None,
            &delivery(11, 2_000_000),
            &POLICY,
        );
        assert!(matches!(
            v,
            Verdict::Again {
                resend: true,
                outcome: Outcome::Resent,
                ..
            }
        ));
        let v = decide(
            TagError::NewerSchema(9),
            None,
            &delivery(11, 2_000_000),
            &POLICY,
        );
        assert!(
            matches!(v, Verdict::Again { resend: false, .. }),
            "newer schemas dead-letter"
        );
        let dlq = Delivery {
            queue: QueueKind::DeadLetter,
            ..delivery(11, 2_000_000)
        };
        let v = decide(TagError::Storage("d1".into()), None, &dlq, &POLICY);
        assert!(matches!(v, Verdict::Again { resend: false, .. }));
    }

    #[test]
    fn misconfiguration_waits_long() {
        let v = decide(
            TagError::AiMisconfigured("5007".into()),
            None,
            &delivery(1, 2_000_000),
            &POLICY,
        );
        assert!(matches!(v, Verdict::Again { delay_seconds, .. } if delay_seconds >= 300));
    }

    #[test]
    fn groups_keep_first_occurrence_order() {
        let groups = group([(1, "a"), (2, "b"), (1, "c"), (3, "d"), (1, "e")]);
        assert_eq!(groups.len(), 3);
        assert_eq!((groups[0].key, groups[0].first), (1, "a"));
        assert_eq!(groups[0].duplicates, ["c", "e"]);
        assert_eq!(groups[1].first, "b");
        assert_eq!(groups[2].first, "d");
    }

    fn any_error() -> impl Strategy<Value = TagError> {
        (0..TagError::samples().len()).prop_map(|i| TagError::samples().swap_remove(i))
    }

    proptest! {
        #[test]
        fn delays_grow_with_the_attempt_whatever_the_jitter(
            base in 1u32..60, attempt in 1u32..8, s1 in any::<u64>(), s2 in any::<u64>()
        ) {
            let b = Backoff { base_seconds: base, max_seconds: 100_000 };
            prop_assert!(b.delay_seconds(attempt + 1, s2) > b.delay_seconds(attempt, s1));
            prop_assert!(b.delay_seconds(attempt, s1) <= MAX_DELAY_SECONDS);
        }

        #[test]
        fn every_verdict_is_legal(
            error in any_error(), attempt in 1u32..30, now in 0u64..200_000_000,
            uploaded in proptest::option::of(0u64..200_000_000),
            not_before in proptest::option::of(0u64..300_000_000), seed in any::<u64>(),
            dead_letter in any::<bool>(),
        ) {
            let d = Delivery {
                queue: if dead_letter { QueueKind::DeadLetter } else { QueueKind::Images },
                attempt, now_ms: now, uploaded_at_ms: uploaded, seed,
            };
            let class = error.class();
            match decide(error.clone(), not_before, &d, &POLICY) {
                Verdict::Fail(e) => {
                    // Only permanent errors, or busy/transient ones past the horizon, fail.
                    let past = uploaded.is_some_and(|u| now >= u + POLICY.give_up_after_ms);
                    prop_assert!(class == Class::Permanent || (past && matches!(class, Class::Busy | Class::Transient)));
                    prop_assert_eq!(e.class(), Class::Permanent);
                }
                Verdict::Again { delay_seconds, resend, outcome } => {
                    prop_assert!(class != Class::Permanent);
                    prop_assert!((1..=MAX_DELAY_SECONDS).contains(&delay_seconds));
                    prop_assert!(!resend || (!dead_letter && attempt > POLICY.max_retries));
                    prop_assert_eq!(resend, outcome == Outcome::Resent);
                }
            }
        }

        #[test]
        fn groups_partition_the_batch(keys in proptest::collection::vec(0u8..6, 0..40)) {
            let groups = group(keys.iter().copied().zip(0..));
            let total: usize = groups.iter().map(|g| 1 + g.duplicates.len()).sum();
            prop_assert_eq!(total, keys.len());
            for g in &groups {
                prop_assert_eq!(keys[g.first], g.key, "the first is the earliest");
                prop_assert!(g.duplicates.iter().all(|&i| keys[i] == g.key && i > g.first));
            }
        }
    }
}
