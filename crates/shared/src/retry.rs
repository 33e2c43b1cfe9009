//! Exponential backoff with jitter for queue retries.

/// Cloudflare Queues' largest `delaySeconds`.
pub const MAX_DELAY_SECONDS: u32 = 43_200;

/// How long a failed delivery waits before the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt (before jitter).
    pub base_seconds: u32,
    /// Cap of the exponential part.
    pub max_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_seconds: crate::config::DEFAULT_RETRY_BASE_SECONDS,
            max_seconds: 600,
        }
    }
}

impl RetryPolicy {
    /// The delay after failed delivery `attempt` (1-based), in seconds.
    ///
    /// The exponential part is `base * 2^(attempt-1)`, capped; jitter adds up to that much
    /// again, so the delay lies in `[exp, 2*exp)`. The ranges of successive attempts do not
    /// overlap, so delays grow with the attempt even with jitter. `seed` picks the jitter;
    /// pass something that differs per message (see [`jitter_seed`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn delays_double_per_attempt() {
        let p = RetryPolicy {
            base_seconds: 2,
            max_seconds: 600,
        };
        assert_eq!(p.delay_seconds(1, 0), 2);
        assert_eq!(p.delay_seconds(2, 0), 4);
        assert_eq!(p.delay_seconds(3, 0), 8);
        assert_eq!(p.delay_seconds(3, 7), 15);
        assert_eq!(p.delay_seconds(40, 0), 600);
        assert_eq!(p.delay_seconds(0, 0), 2);
        assert_eq!(
            RetryPolicy {
                base_seconds: 0,
                max_seconds: 9
            }
            .delay_seconds(5, 3),
            0
        );
    }

    #[test]
    fn jitter_differs_between_messages() {
        assert_ne!(jitter_seed("a", 1), jitter_seed("b", 1));
        assert_ne!(jitter_seed("a", 1), jitter_seed("a", 2));
    }

    proptest! {
        #[test]
        fn delays_grow_with_the_attempt_whatever_the_jitter(
            base in 1u32..60, attempt in 1u32..8, s1 in any::<u64>(), s2 in any::<u64>()
        ) {
            let p = RetryPolicy { base_seconds: base, max_seconds: 100_000 };
            prop_assert!(p.delay_seconds(attempt + 1, s2) > p.delay_seconds(attempt, s1));
            prop_assert!(p.delay_seconds(attempt, s1) <= MAX_DELAY_SECONDS);
        }
    }
}
