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

/// A refusal this long after the previous one, while the AI answers, is a lone slip past
/// the limit, not a sign that it is busy.
const MOMENT_MS: u64 = 1_000;

/// The name of the one pacer object the whole fleet asks.
pub const OBJECT_NAME: &str = "workers-ai";

/// What the pacer object is asked, as JSON (`{"op": "acquire", "n": 3}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ask {
    /// `n` calls, now if possible.
    Acquire { n: u32 },
    /// A batch is over: `unused` calls were granted but not made, and the AI answered
    /// `answered` calls (anything but a refusal).
    Settle { unused: u32, answered: u32 },
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
    /// How far ahead a call may be scheduled: a consumer waits for it in its invocation
    /// rather than sending the message round the queue again.
    pub wait_ms: u64,
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
            wait_ms: 3000,
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
    /// How many of the requested calls may be made.
    pub granted: u32,
    /// When to make each granted call (ms since the epoch): now, or within
    /// [`PacerConfig::wait_ms`], one every `1/rate`.
    #[serde(default)]
    pub start_at_ms: Vec<u64>,
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
    /// Slots handed out for tomorrow.
    #[serde(skip)]
    tomorrow_slots: u64,
    #[serde(skip)]
    cooldown_until_ms: u64,
    #[serde(skip)]
    refusals: u32,
    /// The AI answered a call since the last back-off began: a refusal now starts a new
    /// episode (a momentary limit), not the next step of an outage.
    #[serde(skip)]
    answered_since_backoff: bool,
    #[serde(skip)]
    last_refusal_ms: u64,
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

    /// Asks for `n` calls at `now_ms`. Calls are scheduled one every `1/rate` (never more
    /// than `burst` in a window), starting now or after a back-off; those that fit within
    /// `wait_ms` are granted with their start times, the rest get slots to come back at.
    pub fn acquire(&mut self, config: &PacerConfig, now_ms: u64, n: u32) -> Grant {
        self.roll(config, now_ms);
        let budget_left = match (config.daily_budget, self.quota_day) {
            (_, Some(_)) => 0,
            (Some(budget), None) => budget.saturating_sub(self.used_today),
            (None, None) => u64::MAX,
        };
        let horizon = now_ms + config.wait_ms;
        let mut start_at_ms = Vec::new();
        while start_at_ms.len() < n as usize && (start_at_ms.len() as u64) < budget_left {
            let at = self.next_call(config, now_ms);
            if at > horizon {
                break;
            }
            self.calls.push_back(at);
            start_at_ms.push(at);
        }
        let granted = start_at_ms.len() as u32;
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
            // Behind everything scheduled and every slot already handed out.
            let start = self.slots_until_ms.max(self.next_call(config, now_ms));
            let slots: Vec<u64> = (0..u64::from(rest))
                .map(|i| start + (i as f64 * spacing) as u64)
                .collect();
            self.slots_until_ms = start + (u64::from(rest) as f64 * spacing) as u64;
            let why = if now_ms < self.cooldown_until_ms {
                Denial::Cooling
            } else {
                Denial::Paced
            };
            (Some(why), slots)
        };
        Grant {
            granted,
            start_at_ms,
            not_before_ms,
            denial,
            used_today: self.used_today,
        }
    }

    /// The earliest time the next call may start: after any back-off, `1/rate` after the
    /// last one scheduled, and with fewer than `burst` calls in the window before it.
    fn next_call(&self, config: &PacerConfig, now_ms: u64) -> u64 {
        let mut at = now_ms.max(self.cooldown_until_ms);
        if let Some(&last) = self.calls.back() {
            at = at.max(last + config.spacing_ms() as u64);
        }
        let burst = config.window_calls();
        if self.calls.len() >= burst {
            at = at.max(self.calls[self.calls.len() - burst] + config.window_ms());
        }
        at
    }

    /// A batch is over: gives back `unused` calls that were granted but not made, and notes
    /// whether the AI answered any.
    pub fn settle(&mut self, config: &PacerConfig, now_ms: u64, unused: u32, answered: u32) {
        self.roll(config, now_ms);
        // During a back-off the window holds the restart's pace, not calls to give back.
        if now_ms >= self.cooldown_until_ms {
            let kept = self.calls.len().saturating_sub(unused as usize);
            self.calls.truncate(kept);
        }
        self.used_today = self.used_today.saturating_sub(u64::from(unused));
        if answered > 0 {
            self.answered_since_backoff = true;
        }
    }

    /// The AI refused `n` calls as busy. A lone refusal while the AI answers (a call that
    /// slipped past the limit by a few milliseconds) costs only those calls a slot. More
    /// than one within a second starts a back-off in which nobody calls it, which doubles
    /// while refusals keep coming right after each back-off ends (an outage). Returns a slot
    /// for each refused call: right after the back-off, ahead of the line.
    pub fn refused(&mut self, config: &PacerConfig, now_ms: u64, n: u32) -> Vec<u64> {
        self.roll(config, now_ms);
        let lone = n == 1
            && self.answered_since_backoff
            && now_ms >= self.last_refusal_ms + MOMENT_MS
            && now_ms >= self.cooldown_until_ms;
        self.last_refusal_ms = now_ms;
        if !lone && now_ms >= self.cooldown_until_ms {
            // An outage refuses the first calls after each back-off: the back-off doubles. A
            // refusal after the AI answered, or long after, is a new episode.
            if self.answered_since_backoff || now_ms >= self.cooldown_until_ms + STREAK_MS {
                self.refusals = 0;
            }
            self.answered_since_backoff = false;
            let shift = self.refusals.min(20);
            let wait = config
                .cooldown_base_ms
                .saturating_mul(1 << shift)
                .min(config.cooldown_max_ms);
            self.refusals += 1;
            self.cooldown_until_ms = now_ms + wait;
            // Fill the window so that, when the back-off ends, calls resume one every `1/rate`.
            let spacing = config.spacing_ms();
            let first =
                (self.cooldown_until_ms + spacing as u64).saturating_sub(config.window_ms());
            self.calls = (0..config.window_calls())
                .map(|i| first + (i as f64 * spacing) as u64)
                .collect();
        }
        let start = self.next_call(config, now_ms);
        let spacing = config.spacing_ms();
        (0..u64::from(n))
            .map(|i| start + (i as f64 * spacing) as u64)
            .collect()
    }

    /// The pacer object's answer to `ask` (the `AiPacer` Durable Object's, and the
    /// simulation's): a grant for each operation, after the operation itself. [`Ask::Usage`]
    /// grants nothing; [`Pacer::usage`] answers it.
    pub fn answer(&mut self, config: &PacerConfig, now_ms: u64, ask: Ask) -> Grant {
        match ask {
            Ask::Acquire { n } => self.acquire(config, now_ms, n),
            Ask::Settle { unused, answered } => {
                self.settle(config, now_ms, unused, answered);
                self.acquire(config, now_ms, 0)
            }
            Ask::Refused { n } => {
                let not_before_ms = self.refused(config, now_ms, n);
                Grant {
                    granted: 0,
                    start_at_ms: Vec::new(),
                    not_before_ms,
                    denial: (now_ms < self.cooldown_until_ms).then_some(Denial::Cooling),
                    used_today: self.used_today,
                }
            }
            Ask::Quota { n } => {
                self.quota_exhausted(config, now_ms);
                self.acquire(config, now_ms, n)
            }
            Ask::Usage => self.acquire(config, now_ms, 0),
        }
    }

    /// Today's usage, for `GET /admin/usage` and the reconciler's hourly line.
    pub fn usage(&mut self, config: &PacerConfig, now_ms: u64) -> Usage {
        self.roll(config, now_ms);
        Usage {
            day: crate::wire::time::format_ms(self.day * DAY_MS)[..10].to_string(),
            used_today: self.used_today,
            daily_budget: config.daily_budget,
            requests_per_second: config.rate_per_second,
        }
    }

    /// When the current back-off ends (in the past when there is none).
    pub fn cooling_until(&self) -> u64 {
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

    /// Reports two refusals at `now` (more than a lone slip); the back-off's end.
    fn back_off(pacer: &mut Pacer, config: &PacerConfig, now: u64) -> u64 {
        pacer.refused(config, now, 2);
        pacer.cooling_until()
    }

    #[test]
    fn a_lone_refusal_while_the_ai_answers_stops_nobody() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        pacer.acquire(&config, T0, 3);
        pacer.settle(&config, T0 + 700, 0, 2);
        let slots = pacer.refused(&config, T0 + 800, 1);
        assert_eq!(
            slots,
            [T0 + 800],
            "the refused call goes again at the next free time"
        );
        assert!(pacer.cooling_until() <= T0 + 800, "no back-off");
        // A second refusal within a second is a busy AI: everybody backs off.
        pacer.refused(&config, T0 + 900, 1);
        assert_eq!(pacer.cooling_until(), T0 + 1900);
    }

    #[test]
    fn a_burst_is_scheduled_at_the_rate_and_the_rest_gets_slots() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        let grant = pacer.acquire(&config, T0, 20);
        // One every 200 ms, as far as the consumer may wait (3 s): 16 calls.
        assert_eq!(grant.granted, 16);
        assert_eq!(grant.start_at_ms[..3], [T0, T0 + 200, T0 + 400]);
        assert_eq!(grant.start_at_ms[15], T0 + 3000);
        assert_eq!(grant.denial, Some(Denial::Paced));
        assert_eq!(
            grant.not_before_ms,
            [T0 + 3200, T0 + 3400, T0 + 3600, T0 + 3800]
        );
        // Each comes back at its slot and is scheduled at once.
        for (i, at) in grant.not_before_ms.iter().enumerate() {
            let g = pacer.acquire(&config, *at, 1);
            assert_eq!((g.granted, g.start_at_ms[0]), (1, *at), "slot {i}");
        }
        // A newcomer goes after the last slot handed out.
        let late = pacer.acquire(&config, T0 + 3800, 20);
        assert_eq!(late.start_at_ms[0], T0 + 4000);
        assert_eq!(
            late.not_before_ms[0],
            T0 + 7000,
            "after the last call scheduled"
        );
    }

    #[test]
    fn late_arrivals_in_a_clump_wait_within_the_invocation_rather_than_bounce() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        // Ten messages whose slots spread over two seconds arrive together.
        let g = pacer.acquire(&config, T0 + 5_000, 10);
        assert_eq!(g.granted, 10, "no message goes round the queue again");
        assert_eq!(g.start_at_ms.last(), Some(&(T0 + 6_800)));
    }

    #[test]
    fn no_second_gets_more_than_its_share() {
        let config = PacerConfig::new(5.0, None, 60_000);
        let mut pacer = Pacer::new(&config, T0);
        let g = pacer.acquire(&config, T0 + 900, 5);
        // A token bucket would let all five go at once, after a quiet spell.
        assert_eq!(
            g.start_at_ms,
            [900, 1100, 1300, 1500, 1700].map(|ms| T0 + ms)
        );
        pacer.settle(&config, T0 + 950, 2, 0);
        let g = pacer.acquire(&config, T0 + 960, 1);
        assert_eq!(g.start_at_ms, [T0 + 1500], "a refund frees the last calls");
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
        pacer.settle(&config, T0 + 10, 1, 0);
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
        assert_eq!(back_off(&mut pacer, &config, T0), T0 + 1000);
        let g = pacer.acquire(&config, T0 + 500, 2);
        assert_eq!(
            g.denial, None,
            "scheduled after the back-off, within the wait"
        );
        assert!(g.start_at_ms[0] > T0 + 1000);
        // Refused again as soon as each back-off ends: the AI is down.
        assert_eq!(back_off(&mut pacer, &config, T0 + 1020), T0 + 3020);
        assert_eq!(back_off(&mut pacer, &config, T0 + 3020), T0 + 7020);
        assert_eq!(
            back_off(&mut pacer, &config, T0 + 7020),
            T0 + 15_020,
            "capped at 8 s"
        );
        let g = pacer.acquire(&config, T0 + 9_000, 1);
        assert_eq!((g.granted, g.denial), (0, Some(Denial::Cooling)));
        assert!(pacer.acquire(&config, T0 + 16_000, 1).granted == 1);
    }

    #[test]
    fn one_episode_is_one_back_off_and_calls_resume_at_the_rate() {
        let config = PacerConfig::new(50.0, None, 30_000);
        let mut pacer = Pacer::new(&config, T0);
        assert_eq!(back_off(&mut pacer, &config, T0), T0 + 1000);
        // Other batches report refusals of the same moment: the back-off does not grow.
        assert_eq!(back_off(&mut pacer, &config, T0 + 300), T0 + 1000);
        pacer.settle(&config, T0 + 400, 10, 0);
        // When it ends, calls resume one every 20 ms, not 50 at once.
        let g = pacer.acquire(&config, T0 + 1000, 3);
        assert_eq!(g.start_at_ms, [T0 + 1020, T0 + 1040, T0 + 1060]);
        // A refusal after the AI answered starts again from the first back-off...
        pacer.settle(&config, T0 + 1200, 0, 3);
        assert_eq!(back_off(&mut pacer, &config, T0 + 1300), T0 + 2300);
        // ...and so does one after a calm spell.
        assert_eq!(back_off(&mut pacer, &config, T0 + 60_000), T0 + 61_000);
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
                prop_assert_eq!(g.start_at_ms.len(), g.granted as usize);
                prop_assert!(g.not_before_ms.iter().all(|&t| t > now));
                prop_assert!(g.start_at_ms.iter().all(|&t| t >= now && t <= now + config.wait_ms));
                calls.extend(&g.start_at_ms);
                let refund = refund.min(g.granted);
                pacer.settle(&config, now, refund, 0);
                calls.truncate(calls.len() - refund as usize);
            }
            calls.sort_unstable();
            // Calls start at least `1/rate` apart.
            let spacing = (1000.0 / rate) as u64;
            prop_assert!(calls.windows(2).all(|w| w[1] - w[0] >= spacing), "{calls:?}");
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

/// `GET /admin/usage`: the pacer's [`Usage`], and the AI calls saved by reusing the labels
/// of an image with the same bytes (`crate::storage::dedupe`): the stored images done so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    #[serde(flatten)]
    pub usage: Usage,
    pub ai_calls_saved: u64,
}
