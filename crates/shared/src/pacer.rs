//! The fleet-wide pacer of Workers AI calls, as a pure state machine. The tagger's
//! `AiPacer` Durable Object holds one [`Pacer`] and answers every consumer invocation from
//! it, so the whole fleet shares one rate, one daily budget and one back-off; the
//! simulation (`crates/shared/tests/simulation.rs`) runs the very same code.
//!
//! - **Rate**: at most `burst` calls in any `burst / rate` seconds, rounded up to whole
//!   seconds (by default `rate` calls in any one second), counted over a sliding window.
//!   A token bucket would let the second after a quiet one carry up to twice the rate,
//!   which an AI that counts calls per second refuses; the simulation (BENCHMARKS.md)
//!   shows what each refusal then costs.
//! - **Slots, not a herd**: a request the window cannot serve now gets its own future slot,
//!   `1/rate` after the previous one handed out (and not before the window has room), so
//!   deferred messages come back spread out at the rate instead of all at once. Up to one
//!   window's worth of slots within the next window go first to whoever is denied: mostly
//!   messages whose slot came up but found the window full, which then come back a second
//!   later instead of behind everyone (and keep the window busy when the line runs thin).
//! - **Budget**: at most `daily_budget` calls per UTC day; then slots start at midnight.
//! - **Back-off**: when the AI refuses a call, nobody calls it for a while, then calls resume
//!   at the rate rather than in a burst. Reports of refusals during a back-off belong to the
//!   same episode and do not lengthen it; a refusal soon after a back-off ends (the AI is
//!   still down) doubles the next one, up to a cap. Workers AI's own "daily allocation used
//!   up" stops calls until the next UTC day.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

const DAY_MS: u64 = 86_400_000;

/// A refusal this soon after a back-off ends continues the streak (the AI is still down);
/// a later one starts again from the first back-off.
const STREAK_MS: u64 = 5_000;

/// The name of the one pacer object the whole fleet asks.
pub const OBJECT_NAME: &str = "workers-ai";

/// What the pacer object is asked, as JSON (`{"op": "acquire", "n": 3}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ask {
    /// `n` calls, now if possible.
    Acquire { n: u32 },
    /// `n` calls granted but not made.
    Refund { n: u32 },
    /// The AI refused a call as busy; slots after the back-off for `n` calls.
    Refused { n: u32 },
    /// Workers AI's daily allocation is used up; slots tomorrow for `n` calls.
    Quota { n: u32 },
    /// Today's usage.
    Usage,
}

/// Today's AI calls: `GET /admin/usage` and the reconciler's hourly log line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub used_today: u64,
    pub daily_budget: Option<u64>,
    pub requests_per_second: f64,
}

/// The pacer's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PacerConfig {
    /// Calls per second (`AI_REQUESTS_PER_SECOND`).
    pub rate_per_second: f64,
    /// Most calls in any `burst / rate` seconds (rounded up to whole seconds), and so the
    /// most granted at once after a quiet spell.
    pub burst: f64,
    /// Most calls per UTC day (`AI_DAILY_BUDGET`), if any.
    pub daily_budget: Option<u64>,
    /// First back-off after the AI refuses a call.
    pub cooldown_base_ms: u64,
    /// Longest back-off.
    pub cooldown_max_ms: u64,
}

impl PacerConfig {
    /// Settings for a rate and budget, with a one-second window and a 1 s to `cooldown_max_ms`
    /// back-off.
    pub fn new(rate_per_second: f64, daily_budget: Option<u64>, cooldown_max_ms: u64) -> Self {
        let rate = if rate_per_second.is_finite() && rate_per_second > 0.0 {
            rate_per_second
        } else {
            1.0
        };
        Self {
            rate_per_second: rate,
            burst: rate.max(1.0),
            daily_budget,
            cooldown_base_ms: 1000,
            cooldown_max_ms: cooldown_max_ms.max(1000),
        }
    }

    fn spacing_ms(&self) -> f64 {
        1000.0 / self.rate_per_second
    }

    /// Most calls in one window.
    fn window_calls(&self) -> usize {
        (self.burst.floor() as usize).max(1)
    }

    /// The window: as long as `burst` calls take at the rate, rounded up to whole seconds.
    /// Deferred messages come back after whole seconds; a window of 0.99 s or 1.05 s would
    /// make them find it full again and again (the simulation showed drains 1.4-2x slower).
    fn window_ms(&self) -> u64 {
        let ms = (self.window_calls() as f64 * self.spacing_ms()).round() as u64;
        ms.div_ceil(1000).max(1) * 1000
    }
}

/// Why a call was not granted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// Over the rate: wait for the slot.
    Paced,
    /// The AI refused calls recently: wait out the back-off.
    Cooling,
    /// `AI_DAILY_BUDGET` is spent, or Workers AI's daily allocation is: wait for tomorrow.
    Tomorrow,
}

/// The answer to [`Pacer::acquire`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// How many of the requested calls may be made now.
    pub granted: u32,
    /// For each call not granted, the time (ms since the epoch) to come back.
    pub not_before_ms: Vec<u64>,
    /// Why the others were not granted.
    pub denial: Option<Denial>,
    /// Calls granted so far this UTC day.
    pub used_today: u64,
}

/// The pacer's state. Only `day` and `used_today` need to survive a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pacer {
    /// UTC day number (days since the epoch) that `used_today` counts.
    pub day: u64,
    pub used_today: u64,
    /// When the calls still in the window were granted, oldest first.
    #[serde(skip)]
    calls: VecDeque<u64>,
    /// End of the last slot handed out at the back of the line.
    #[serde(skip)]
    slots_until_ms: u64,
    /// End of the last slot handed out within the next window.
    #[serde(skip)]
    near_until_ms: u64,
    /// Slots handed out for tomorrow.
    #[serde(skip)]
    tomorrow_slots: u64,
    #[serde(skip)]
    cooldown_until_ms: u64,
    #[serde(skip)]
    refusals: u32,
    /// Workers AI's own daily allocation is used up until the end of this day.
    #[serde(skip)]
    quota_day: Option<u64>,
}

impl Pacer {
    /// A fresh pacer at `now_ms`, with an empty window.
    pub fn new(_config: &PacerConfig, now_ms: u64) -> Self {
        Self {
            day: now_ms / DAY_MS,
            ..Self::default()
        }
    }

    /// Asks for `n` calls at `now_ms`.
    pub fn acquire(&mut self, config: &PacerConfig, now_ms: u64, n: u32) -> Grant {
        self.roll(config, now_ms);
        let budget_left = match (config.daily_budget, self.quota_day) {
            (_, Some(_)) => 0,
            (Some(budget), None) => budget.saturating_sub(self.used_today),
            (None, None) => u64::MAX,
        };
        let cooling = now_ms < self.cooldown_until_ms;
        let granted = if cooling {
            0
        } else {
            let free = config.window_calls().saturating_sub(self.calls.len());
            u64::from(n).min(free as u64).min(budget_left) as u32
        };
        self.calls
            .extend(std::iter::repeat_n(now_ms, granted as usize));
        self.used_today += u64::from(granted);
        let rest = n - granted;
        let spacing = config.spacing_ms();
        let (denial, not_before_ms) = if rest == 0 {
            (None, Vec::new())
        } else if budget_left <= u64::from(granted) {
            let midnight = (self.day + 1) * DAY_MS;
            let first = self.tomorrow_slots;
            self.tomorrow_slots += u64::from(rest);
            let slots = (first..self.tomorrow_slots)
                .map(|i| midnight + (i as f64 * spacing) as u64)
                .collect();
            (Some(Denial::Tomorrow), slots)
        } else {
            // Not before the window has room again.
            let full = (self.calls.len() >= config.window_calls())
                .then(|| self.calls[0] + config.window_ms() - spacing as u64);
            let start = self
                .slots_until_ms
                .max(now_ms)
                .max(self.cooldown_until_ms)
                .max(full.unwrap_or(0));
            // First, free slots within the next window: a message whose slot came up but
            // found the window full comes back within a second, not behind everyone.
            let near_end = (now_ms + config.window_ms()).min(start);
            let mut near = self
                .near_until_ms
                .max(now_ms)
                .max(self.cooldown_until_ms)
                .max(full.unwrap_or(0));
            let mut slots = Vec::with_capacity(rest as usize);
            while slots.len() < rest as usize && near + (spacing as u64) < near_end {
                near += spacing as u64;
                slots.push(near);
            }
            if !slots.is_empty() {
                self.near_until_ms = near;
            }
            let behind = u64::from(rest) - slots.len() as u64;
            slots.extend((1..=behind).map(|i| start + (i as f64 * spacing) as u64));
            if behind > 0 {
                self.slots_until_ms = start + (behind as f64 * spacing) as u64;
            }
            let why = if cooling {
                Denial::Cooling
            } else {
                Denial::Paced
            };
            (Some(why), slots)
        };
        Grant {
            granted,
            not_before_ms,
            denial,
            used_today: self.used_today,
        }
    }

    /// Gives back calls that were granted but not made.
    pub fn refund(&mut self, config: &PacerConfig, now_ms: u64, n: u32) {
        self.roll(config, now_ms);
        // During a back-off the window holds the restart's pace, not calls to give back.
        if now_ms >= self.cooldown_until_ms {
            let kept = self.calls.len().saturating_sub(n as usize);
            self.calls.truncate(kept);
        }
        self.used_today = self.used_today.saturating_sub(u64::from(n));
    }

    /// The AI refused a call as busy: nobody calls it until the back-off ends, which doubles
    /// while refusals keep coming right after each back-off. Returns the back-off's end.
    pub fn refused(&mut self, config: &PacerConfig, now_ms: u64) -> u64 {
        self.roll(config, now_ms);
        if now_ms < self.cooldown_until_ms {
            // Another batch's report of the same episode.
            return self.cooldown_until_ms;
        }
        if now_ms >= self.cooldown_until_ms + STREAK_MS {
            self.refusals = 0;
        }
        let shift = self.refusals.min(20);
        let wait = config
            .cooldown_base_ms
            .saturating_mul(1 << shift)
            .min(config.cooldown_max_ms);
        self.refusals += 1;
        self.cooldown_until_ms = now_ms + wait;
        // Fill the window so that, when the back-off ends, calls resume one every `1/rate`.
        let spacing = config.spacing_ms();
        let first = (self.cooldown_until_ms + spacing as u64).saturating_sub(config.window_ms());
        self.calls = (0..config.window_calls())
            .map(|i| first + (i as f64 * spacing) as u64)
            .collect();
        self.cooldown_until_ms
    }

    /// Workers AI's daily free allocation is used up (3036): no calls until the next UTC day.
    pub fn quota_exhausted(&mut self, config: &PacerConfig, now_ms: u64) {
        self.roll(config, now_ms);
        self.quota_day = Some(self.day);
    }

    /// Lets calls older than the window go, and starts a new day when the date changes.
    fn roll(&mut self, config: &PacerConfig, now_ms: u64) {
        let day = now_ms / DAY_MS;
        if day != self.day {
            self.day = day;
            self.used_today = 0;
            self.tomorrow_slots = 0;
        }
        if self.quota_day.is_some_and(|d| d < day) {
            self.quota_day = None;
        }
        let window = config.window_ms();
        while self.calls.front().is_some_and(|&at| at + window <= now_ms) {
            self.calls.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 20_000 * DAY_MS + 3_600_000;

    #[test]
    fn a_burst_is_served_at_the_rate_in_slots() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        let grant = pacer.acquire(&config, T0, 12);
        assert_eq!(grant.granted, 5, "one second's worth");
        assert_eq!(grant.denial, Some(Denial::Paced));
        let slots = grant.not_before_ms;
        assert_eq!(slots.len(), 7);
        // The first slot is when the burst leaves the window; then one every 200 ms.
        assert_eq!(slots[0], T0 + 1000);
        assert_eq!(slots[6], T0 + 2200);
        // Each comes back at its slot and finds room.
        for (i, at) in slots.iter().enumerate() {
            let g = pacer.acquire(&config, *at, 1);
            assert_eq!(g.granted, 1, "slot {i}");
        }
        // A newcomer goes after the last slot handed out.
        let late = pacer.acquire(&config, T0 + 2200, 1);
        assert_eq!(late.granted, 0);
        assert_eq!(late.not_before_ms, [T0 + 2400]);
    }

    #[test]
    fn one_who_finds_the_window_full_comes_back_within_a_second() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        let line = pacer.acquire(&config, T0, 15).not_before_ms;
        assert_eq!((line[0], line[9]), (T0 + 1000, T0 + 2800));
        assert_eq!(pacer.acquire(&config, T0 + 1000, 5).granted, 5);
        // Late for its slot, the window full again: the next window, not the back.
        let late = pacer.acquire(&config, T0 + 1100, 2).not_before_ms;
        assert_eq!(
            late,
            [T0 + 2000, T0 + 3000],
            "one near slot left, then the line"
        );
    }

    #[test]
    fn no_second_gets_more_than_its_share() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        assert_eq!(pacer.acquire(&config, T0 + 900, 5).granted, 5);
        // A token bucket would have refilled 4 calls by T0 + 1700, 9 in 0.8 s.
        assert_eq!(pacer.acquire(&config, T0 + 1700, 5).granted, 0);
        assert_eq!(pacer.acquire(&config, T0 + 1900, 5).granted, 5);
        pacer.refund(&config, T0 + 1950, 2);
        assert_eq!(
            pacer.acquire(&config, T0 + 1960, 5).granted,
            2,
            "a refund frees its calls"
        );
    }

    #[test]
    fn the_daily_budget_defers_to_midnight() {
        let config = PacerConfig::new(50.0, Some(3), 60_000);
        let mut pacer = Pacer::new(&config, T0);
        let grant = pacer.acquire(&config, T0, 5);
        assert_eq!(grant.granted, 3);
        assert_eq!(grant.used_today, 3);
        assert_eq!(grant.denial, Some(Denial::Tomorrow));
        let midnight = (T0 / DAY_MS + 1) * DAY_MS;
        assert_eq!(grant.not_before_ms, [midnight, midnight + 20]);
        pacer.refund(&config, T0 + 10, 1);
        assert_eq!(
            pacer.acquire(&config, T0 + 20, 1).granted,
            1,
            "a refund frees a call"
        );
        assert_eq!(
            pacer.acquire(&config, midnight, 2).granted,
            2,
            "a new day, a new budget"
        );
        assert_eq!(pacer.used_today, 2);
    }

    #[test]
    fn refusals_cool_everyone_down_with_a_growing_back_off() {
        let config = PacerConfig::new(50.0, None, 8_000);
        let mut pacer = Pacer::new(&config, T0);
        assert_eq!(pacer.refused(&config, T0), T0 + 1000);
        let g = pacer.acquire(&config, T0 + 500, 2);
        assert_eq!((g.granted, g.denial), (0, Some(Denial::Cooling)));
        assert!(g.not_before_ms[0] > T0 + 1000);
        // Refused again as soon as each back-off ends: the AI is down.
        assert_eq!(pacer.refused(&config, T0 + 1000), T0 + 3000);
        assert_eq!(pacer.refused(&config, T0 + 3000), T0 + 7000);
        assert_eq!(
            pacer.refused(&config, T0 + 7000),
            T0 + 15_000,
            "capped at 8 s"
        );
        assert!(pacer.acquire(&config, T0 + 16_000, 1).granted == 1);
    }

    #[test]
    fn one_episode_is_one_back_off_and_calls_resume_at_the_rate() {
        let config = PacerConfig::new(50.0, None, 30_000);
        let mut pacer = Pacer::new(&config, T0);
        assert_eq!(pacer.refused(&config, T0), T0 + 1000);
        // Other batches report refusals of the same moment: the back-off does not grow.
        assert_eq!(pacer.refused(&config, T0 + 300), T0 + 1000);
        pacer.refund(&config, T0 + 400, 10);
        // When it ends, calls resume one every 20 ms, not 50 at once.
        assert_eq!(pacer.acquire(&config, T0 + 1000, 10).granted, 0);
        assert_eq!(pacer.acquire(&config, T0 + 1020, 10).granted, 1);
        assert_eq!(pacer.acquire(&config, T0 + 1100, 10).granted, 4);
        // A refusal after a calm spell starts again from the first back-off.
        assert_eq!(pacer.refused(&config, T0 + 60_000), T0 + 61_000);
    }

    #[test]
    fn workers_ai_quota_stops_calls_until_tomorrow() {
        let config = PacerConfig::new(50.0, None, 8_000);
        let mut pacer = Pacer::new(&config, T0);
        pacer.quota_exhausted(&config, T0);
        let g = pacer.acquire(&config, T0 + 1000, 1);
        assert_eq!(g.denial, Some(Denial::Tomorrow));
        let midnight = (T0 / DAY_MS + 1) * DAY_MS;
        assert_eq!(pacer.acquire(&config, midnight + 1, 1).granted, 1);
    }

    proptest! {
        #[test]
        fn never_more_than_the_rate_allows(
            rate in 1.0f64..100.0,
            asks in proptest::collection::vec((0u64..3000, 1u32..20, 0u32..3), 1..100),
        ) {
            let config = PacerConfig::new(rate, None, 60_000);
            let mut pacer = Pacer::new(&config, T0);
            let mut now = T0;
            let mut calls: Vec<u64> = Vec::new();
            for (step, n, refund) in asks {
                now += step;
                let g = pacer.acquire(&config, now, n);
                prop_assert_eq!(g.granted as usize + g.not_before_ms.len(), n as usize);
                prop_assert!(g.not_before_ms.iter().all(|&t| t > now));
                calls.extend(std::iter::repeat_n(now, g.granted as usize));
                let refund = refund.min(g.granted);
                pacer.refund(&config, now, refund);
                calls.truncate(calls.len() - refund as usize);
            }
            let allowed = config.burst + (now - T0) as f64 * rate / 1000.0;
            prop_assert!(calls.len() as f64 <= allowed + 1e-6, "{} granted, {} allowed", calls.len(), allowed);
            // And no window holds more than `burst`.
            let (window, most) = (config.window_ms(), config.window_calls());
            for (i, &t) in calls.iter().enumerate() {
                let first = calls.partition_point(|&c| c + window <= t);
                prop_assert!(i + 1 - first <= most, "{} calls in the window ending at {}", i + 1 - first, t);
            }
        }

        #[test]
        fn never_more_than_the_budget(budget in 0u64..50, asks in proptest::collection::vec(1u32..10, 1..40)) {
            let config = PacerConfig::new(1000.0, Some(budget), 60_000);
            let mut pacer = Pacer::new(&config, T0);
            let mut granted = 0u64;
            for (i, n) in asks.into_iter().enumerate() {
                granted += u64::from(pacer.acquire(&config, T0 + i as u64 * 1000, n).granted);
            }
            prop_assert!(granted <= budget);
        }
    }
}
