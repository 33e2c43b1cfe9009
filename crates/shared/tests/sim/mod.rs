//! A discrete-event simulation of the tagger under Cloudflare Queues' semantics, running the
//! real policy code of this crate: [`Pacer`] (held by one serialized "Durable Object"),
//! [`decide`], [`Backoff`] (through `decide`), [`jitter_seed`] and [`group`].
//!
//! What is simulated, and how (times are drawn uniformly from the ranges in [`Latencies`]):
//! - **Queue**: messages become visible when sent or when their delay ends; a batch of up
//!   to `batch_size` starts when that many are visible, or when the oldest visible one has
//!   waited `batch_timeout_ms`; at most `max_concurrency` invocations run at once (scaling up
//!   is instant). A batch's acks and retries take effect when its invocation ends; a retry of
//!   a message on delivery `max_retries + 1` moves it to the dead letter queue, whose
//!   consumer fails the image.
//! - **Consumer**: the batch algorithm of `tagger-worker/src/consumer.rs`, step for step: one
//!   `acquire(n)`; the first `granted` jobs run `concurrency` at a time (D1 claim, R2 read,
//!   prepare, wall check, AI call, D1 + KV write); a refused call raises the wall, and jobs
//!   that reach their call after it are not called; then `settle(unused, answered)` and one
//!   `refused(walled)` whose slots go to the walled messages; then `decide` for each message
//!   left (walled first, then denied), `concurrency` at a time: a D1 write, then
//!   `retry(delaySeconds)`, or an ack and a re-send of a new message.
//! - **Pacer**: one object; calls reach it after a one-way latency, are served one at a
//!   time in arrival order (`pacer_service_us` each), and answer after another one-way
//!   latency. It answers through `Pacer::answer`, as the `AiPacer` object does.
//! - **AI**: a limiter, by default a fixed window per wall-clock second (the strict reading
//!   of "50 requests a second"), or a token bucket (see [`AiLimit`]); calls over it, and
//!   every call during an outage, are refused (3040) after `ai_refused_ms`; refused calls
//!   do not count against the limit. Accepted calls answer after `ai_ok_ms`. The limiter
//!   sees a call when the consumer makes it, not when the pacer granted it.
//! - Not simulated: duplicates and redeliveries of the same message, storage failures,
//!   invalid images, CPU contention inside an isolate, the byte budget, D1 write limits,
//!   the queue's own throughput limit. A run stops a week after the bound; images left
//!   then count as unfinished.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use shared::tagging::error::TagError;
use shared::tagging::pacer::{Ask, Denial, Grant, Pacer, PacerConfig};
use shared::tagging::retry::{
    decide, group, jitter_seed, Backoff, Delivery, Policy, QueueKind, Verdict,
};

/// Simulated time, in microseconds from the start.
type Us = u64;
const MS: Us = 1_000;
const SECOND: Us = 1_000_000;
/// The wall clock at simulated time 0: 01:00 UTC, so that a day of load stays in one UTC day.
const EPOCH_MS: u64 = 20_000 * 86_400_000 + 3_600_000;

/// Deterministic random numbers (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration drawn uniformly from `range` (milliseconds), in microseconds.
    fn ms(&mut self, (lo, hi): (u64, u64)) -> Us {
        lo * MS + self.next() % ((hi - lo) * MS + 1)
    }
}

/// How uploads arrive.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// `n` uploads, all enqueued at time 0.
    Burst(u32),
    /// Poisson arrivals at `per_second`, for `seconds`.
    Steady { per_second: f64, seconds: u64 },
}

/// The image queue's consumer settings (`[[queues.consumers]]`).
#[derive(Clone, Copy, Debug)]
pub struct QueueSettings {
    pub batch_size: usize,
    pub batch_timeout_ms: u64,
    pub max_retries: u32,
    pub max_concurrency: usize,
}

/// How the AI limits calls.
#[derive(Clone, Copy, Debug)]
pub enum AiLimit {
    /// A token bucket: `per_second`, holding at most `burst`.
    TokenBucket { per_second: f64, burst: f64 },
    /// At most `calls` in each fixed window of `window_ms` (aligned to multiples of it).
    Window { calls: u32, window_ms: u64 },
}

/// Latency ranges, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latencies {
    /// From a batch being ready to its invocation starting.
    pub dispatch_ms: (u64, u64),
    /// Consumer to pacer object, and back (each way).
    pub pacer_one_way_ms: (u64, u64),
    /// The object's time per call; calls are served one at a time.
    pub pacer_service_us: u64,
    /// D1 claim + R2 read + decode and resize, before the AI call.
    pub before_call_ms: (u64, u64),
    pub ai_ok_ms: (u64, u64),
    pub ai_refused_ms: (u64, u64),
    /// D1 + KV writes of a finished or failed image.
    pub finish_ms: (u64, u64),
    /// D1 write of a deferral.
    pub defer_ms: (u64, u64),
    /// A queue send (a re-send).
    pub send_ms: (u64, u64),
}

impl Latencies {
    pub const CLOUD: Self = Self {
        dispatch_ms: (5, 20),
        pacer_one_way_ms: (1, 5),
        pacer_service_us: 200,
        before_call_ms: (20, 60),
        ai_ok_ms: (100, 300),
        ai_refused_ms: (10, 30),
        finish_ms: (10, 30),
        defer_ms: (5, 15),
        send_ms: (5, 15),
    };
}

/// Everything a run depends on.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub load: Load,
    pub queue: QueueSettings,
    /// `CONCURRENCY`: jobs of one batch at once.
    pub concurrency: usize,
    pub policy: Policy,
    pub pacer: PacerConfig,
    pub ai_limit: AiLimit,
    /// Windows `[from, to)` in seconds from the start during which every call is refused.
    pub outages: Vec<(u64, u64)>,
    /// The share of calls the AI refuses at random, whatever the load (capacity errors of
    /// a shared pool); 0 for none.
    pub sporadic_refusals: f64,
    pub latency: Latencies,
}

impl Scenario {
    /// `wrangler.tagger.toml` as deployed, against an AI allowing 50 calls in each second.
    pub fn production(name: &str, load: Load) -> Self {
        Self {
            name: name.into(),
            seed: 1,
            load,
            queue: QueueSettings {
                batch_size: 10,
                batch_timeout_ms: 5_000,
                max_retries: 10,
                max_concurrency: 10,
            },
            concurrency: 10,
            policy: Policy {
                backoff: Backoff {
                    base_seconds: 2,
                    max_seconds: 300,
                },
                max_retries: 10,
                give_up_after_ms: 86_400_000,
            },
            pacer: PacerConfig::new(50.0, None, 30_000),
            ai_limit: AiLimit::Window {
                calls: 50,
                window_ms: 1_000,
            },
            outages: Vec::new(),
            sporadic_refusals: 0.0,
            latency: Latencies::CLOUD,
        }
    }

    /// The integration tests' Miniflare set-up: one batch at a time, batches of 5 after at
    /// most 1 s, 3 retries (`MAX_RETRIES` set to match), `RETRY_BASE_SECONDS=1`, and an AI
    /// stub allowing `per_second` calls in each second, with the pacer set to that rate.
    pub fn miniflare(name: &str, load: Load, per_second: f64) -> Self {
        let mut s = Self::production(name, load);
        s.queue = QueueSettings {
            batch_size: 5,
            batch_timeout_ms: 1_000,
            max_retries: 3,
            max_concurrency: 1,
        };
        s.policy.backoff.base_seconds = 1;
        s.policy.max_retries = 3;
        s.pacer = PacerConfig::new(per_second, None, 30_000);
        s.ai_limit = AiLimit::Window {
            calls: per_second as u32,
            window_ms: 1_000,
        };
        s
    }

    /// The AI's sustained rate.
    fn ai_rate(&self) -> f64 {
        match self.ai_limit {
            AiLimit::TokenBucket { per_second, .. } => per_second,
            AiLimit::Window { calls, window_ms } => f64::from(calls) * 1000.0 / window_ms as f64,
        }
    }

    /// When a perfect server at the AI's rate (none during outages), fed the same uploads,
    /// would finish the last one, in seconds: the fluid bound.
    pub fn bound_s(&self) -> f64 {
        let rate = self.ai_rate();
        let (mut backlog, arrival, until) = match self.load {
            Load::Burst(n) => (f64::from(n), 0.0, 0.0),
            Load::Steady {
                per_second,
                seconds,
            } => (0.0, per_second, seconds as f64),
        };
        let step = 0.001;
        let mut t = 0.0f64;
        while t < until || backlog > 1e-9 {
            let down = self
                .outages
                .iter()
                .any(|&(a, b)| t >= a as f64 && t < b as f64);
            if t < until {
                backlog += arrival * step;
            }
            if !down {
                backlog = (backlog - rate * step).max(0.0);
            }
            t += step;
        }
        t
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub name: String,
    pub images: u64,
    pub done: u64,
    pub failed: u64,
    /// Neither done nor failed when the run was cut off (a week after the bound).
    pub unfinished: u64,
    /// From the first upload to the last image done, in seconds.
    pub drain_s: f64,
    pub bound_s: f64,
    pub ai_calls: u64,
    pub refused_calls: u64,
    pub queue_writes: u64,
    pub queue_reads: u64,
    pub queue_deletes: u64,
    pub resends: u64,
    pub pacer_calls: u64,
    /// Deliveries of the image that needed the most, re-sends included.
    pub max_deliveries: u32,
    /// Upload to done, in seconds.
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    /// The last image done, in seconds after the last outage ended.
    pub done_after_outage_s: Option<f64>,
    /// Busiest second: messages delivered, and calls to the pacer object.
    pub peak_reads_per_s: u32,
    pub peak_pacer_calls_per_s: u32,
    pub events: u64,
}

impl Report {
    pub fn per_image(&self, count: u64) -> f64 {
        count as f64 / self.images as f64
    }

    pub fn queue_ops(&self) -> u64 {
        self.queue_writes + self.queue_reads + self.queue_deletes
    }

    /// Drain time over the bound.
    pub fn drain_factor(&self) -> f64 {
        self.drain_s / self.bound_s
    }

    pub const HEADER: &'static str = "| scenario | images | failed | drain s | bound s | drain / bound | refused calls / image | queue ops / image | pacer calls / image | most deliveries | p50 / p99 / max latency s |\n|---|---|---|---|---|---|---|---|---|---|---|";

    /// One row of the Markdown table.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {}{} | {:.0} | {:.0} | {:.3} | {:.4} | {:.2} | {:.2} | {} | {:.0} / {:.0} / {:.0} |",
            self.name,
            self.images,
            self.failed,
            match self.unfinished {
                0 => String::new(),
                n => format!(" (+{n} unfinished)"),
            },
            self.drain_s,
            self.bound_s,
            self.drain_factor(),
            self.per_image(self.refused_calls),
            self.per_image(self.queue_ops()),
            self.per_image(self.pacer_calls),
            self.max_deliveries,
            self.latency_p50_s,
            self.latency_p99_s,
            self.latency_max_s,
        )
    }
}

#[derive(Debug)]
enum Ev {
    /// The next steady upload.
    Upload,
    Visible(usize),
    BatchTimer,
    Start(usize),
    PacerIn(usize, Ask),
    PacerOut(usize, Grant),
    /// A job reached its wall check and AI call.
    Call(usize, usize),
    AiDone(usize, usize, bool),
    JobDone(usize, usize),
    AgainDone(usize),
}

struct Entry {
    at: Us,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Msg {
    image: u32,
    /// The queue's delivery count of the current or next delivery.
    attempt: u32,
    id: String,
}

struct Image {
    uploaded: Us,
    done: Option<Us>,
    failed: bool,
    deliveries: u32,
}

/// A message to be tried again, once the batch knows when (`Later` in consumer.rs).
struct Later {
    msg: usize,
    error: TagError,
    not_before: Option<u64>,
    walled: bool,
}

enum Settle {
    Ack,
    Retry(u32),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Acquire,
    Refund,
    Refused,
}

/// One consumer invocation.
struct Inv {
    msgs: Vec<usize>,
    step: Step,
    granted: usize,
    next_job: usize,
    in_flight: usize,
    unused: u32,
    /// When each granted call may start (ms since the epoch), from the pacer.
    start_at: Vec<u64>,
    /// Calls the AI answered (not refused).
    answered: u32,
    wall: bool,
    later: Vec<Later>,
    denied: Vec<Later>,
    again: VecDeque<Later>,
    again_in_flight: usize,
    settles: Vec<(usize, Settle)>,
}

struct Sim<'a> {
    s: &'a Scenario,
    rng: Rng,
    now: Us,
    seq: u64,
    heap: BinaryHeap<Entry>,
    msgs: Vec<Msg>,
    images: Vec<Image>,
    visible: VecDeque<(usize, Us)>,
    timer: Option<Us>,
    running: usize,
    invs: Vec<Option<Inv>>,
    free_invs: Vec<usize>,
    pacer: Pacer,
    pacer_free: Us,
    ai_tokens: f64,
    ai_at: Us,
    ai_window: (u64, u32),
    /// Per second of simulated time: messages delivered, pacer calls.
    per_second: Vec<(u32, u32)>,
    r: Report,
}

/// Runs a scenario to the end (every image done or failed).
pub fn run(s: &Scenario) -> Report {
    let mut sim = Sim {
        s,
        rng: Rng::new(s.seed),
        now: 0,
        seq: 0,
        heap: BinaryHeap::new(),
        msgs: Vec::new(),
        images: Vec::new(),
        visible: VecDeque::new(),
        timer: None,
        running: 0,
        invs: Vec::new(),
        free_invs: Vec::new(),
        pacer: Pacer::new(&s.pacer, EPOCH_MS),
        pacer_free: 0,
        ai_tokens: match s.ai_limit {
            AiLimit::TokenBucket { burst, .. } => burst,
            AiLimit::Window { .. } => 0.0,
        },
        ai_at: 0,
        ai_window: (0, 0),
        per_second: Vec::new(),
        r: Report {
            name: s.name.clone(),
            images: 0,
            done: 0,
            failed: 0,
            unfinished: 0,
            drain_s: 0.0,
            bound_s: s.bound_s(),
            ai_calls: 0,
            refused_calls: 0,
            queue_writes: 0,
            queue_reads: 0,
            queue_deletes: 0,
            resends: 0,
            pacer_calls: 0,
            max_deliveries: 0,
            latency_p50_s: 0.0,
            latency_p99_s: 0.0,
            latency_max_s: 0.0,
            done_after_outage_s: None,
            peak_reads_per_s: 0,
            peak_pacer_calls_per_s: 0,
            events: 0,
        },
    };
    match s.load {
        Load::Burst(n) => {
            for _ in 0..n {
                sim.upload();
            }
        }
        Load::Steady { .. } => sim.at(0, Ev::Upload),
    }
    sim.pump();
    // A policy that never lets some message through must not hang the test.
    let give_up = (s.bound_s() * 20.0) as Us * SECOND + 7 * 86_400 * SECOND;
    while let Some(Entry { at, ev, .. }) = sim.heap.pop() {
        if at > give_up {
            break;
        }
        sim.now = at;
        sim.r.events += 1;
        sim.handle(ev);
    }
    sim.finish()
}

impl Sim<'_> {
    fn at(&mut self, at: Us, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn after(&mut self, range_ms: (u64, u64), ev: Ev) {
        let at = self.now + self.rng.ms(range_ms);
        self.at(at, ev);
    }

    /// This second's counters.
    fn second(&mut self) -> &mut (u32, u32) {
        let i = (self.now / SECOND) as usize;
        if self.per_second.len() <= i {
            self.per_second.resize(i + 1, (0, 0));
        }
        &mut self.per_second[i]
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.now / MS
    }

    /// Sends a new message about `image`, visible from `visible_at`.
    fn send(&mut self, image: u32, visible_at: Us) {
        let id = self.msgs.len();
        self.msgs.push(Msg {
            image,
            attempt: 1,
            id: format!("{:032x}", self.rng.next()),
        });
        self.r.queue_writes += 1;
        if visible_at <= self.now {
            self.visible.push_back((id, self.now));
        } else {
            self.at(visible_at, Ev::Visible(id));
        }
    }

    fn upload(&mut self) {
        let image = self.images.len() as u32;
        self.images.push(Image {
            uploaded: self.now,
            done: None,
            failed: false,
            deliveries: 0,
        });
        self.send(image, self.now);
    }

    /// Starts the batches the queue would deliver now, or arms the batch timer.
    fn pump(&mut self) {
        let q = self.s.queue;
        while self.running < q.max_concurrency {
            let Some(&(_, since)) = self.visible.front() else {
                return;
            };
            let due = since + q.batch_timeout_ms * MS;
            if self.visible.len() < q.batch_size && due > self.now {
                if self.timer.is_none() {
                    self.timer = Some(due);
                    self.at(due, Ev::BatchTimer);
                }
                return;
            }
            let take = self.visible.len().min(q.batch_size);
            let msgs: Vec<usize> = self.visible.drain(..take).map(|(m, _)| m).collect();
            let inv = Inv {
                msgs,
                step: Step::Acquire,
                granted: 0,
                next_job: 0,
                in_flight: 0,
                unused: 0,
                start_at: Vec::new(),
                answered: 0,
                wall: false,
                later: Vec::new(),
                denied: Vec::new(),
                again: VecDeque::new(),
                again_in_flight: 0,
                settles: Vec::new(),
            };
            let id = match self.free_invs.pop() {
                Some(id) => {
                    self.invs[id] = Some(inv);
                    id
                }
                None => {
                    self.invs.push(Some(inv));
                    self.invs.len() - 1
                }
            };
            self.running += 1;
            self.after(self.s.latency.dispatch_ms, Ev::Start(id));
        }
    }

    fn inv(&mut self, id: usize) -> &mut Inv {
        self.invs[id].as_mut().expect("a running invocation")
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Upload => {
                self.upload();
                self.pump();
                if let Load::Steady {
                    per_second,
                    seconds,
                } = self.s.load
                {
                    let gap = -(1.0 - self.rng.unit()).ln() / per_second;
                    let next = self.now + (gap * SECOND as f64) as Us;
                    if next < seconds * SECOND {
                        self.at(next, Ev::Upload);
                    }
                }
            }
            Ev::Visible(m) => {
                self.visible.push_back((m, self.now));
                self.pump();
            }
            Ev::BatchTimer => {
                self.timer = None;
                self.pump();
            }
            Ev::Start(id) => self.start(id),
            Ev::PacerIn(id, ask) => self.pacer_in(id, ask),
            Ev::PacerOut(id, grant) => self.pacer_out(id, grant),
            Ev::Call(id, m) => self.call(id, m),
            Ev::AiDone(id, m, ok) => self.ai_done(id, m, ok),
            Ev::JobDone(id, m) => {
                let image = self.msgs[m].image as usize;
                self.images[image].done = Some(self.now);
                self.inv(id).settles.push((m, Settle::Ack));
                self.job_finished(id);
            }
            Ev::AgainDone(id) => {
                self.inv(id).again_in_flight -= 1;
                self.next_again(id);
            }
        }
    }

    /// A batch arrives: every message is read, grouped (no duplicates here) and paced.
    fn start(&mut self, id: usize) {
        let msgs = std::mem::take(&mut self.inv(id).msgs);
        self.r.queue_reads += msgs.len() as u64;
        self.second().0 += msgs.len() as u32;
        let jobs = group(msgs.iter().map(|&m| (self.msgs[m].image, m)));
        for &m in &msgs {
            self.images[self.msgs[m].image as usize].deliveries += 1;
        }
        let n = jobs.len() as u32;
        self.inv(id).msgs = jobs.into_iter().map(|g| g.first).collect();
        self.ask(id, Ask::Acquire { n });
    }

    fn ask(&mut self, id: usize, ask: Ask) {
        self.r.pacer_calls += 1;
        self.second().1 += 1;
        self.after(self.s.latency.pacer_one_way_ms, Ev::PacerIn(id, ask));
    }

    /// The pacer object serves one call at a time, as `AiPacer::fetch` does.
    fn pacer_in(&mut self, id: usize, ask: Ask) {
        let start = self.now.max(self.pacer_free);
        self.pacer_free = start + self.s.latency.pacer_service_us;
        let now_ms = EPOCH_MS + start / MS;
        let config = &self.s.pacer;
        let grant = self.pacer.answer(config, now_ms, ask);
        let back = self.pacer_free + self.rng.ms(self.s.latency.pacer_one_way_ms);
        self.at(back, Ev::PacerOut(id, grant));
    }

    fn pacer_out(&mut self, id: usize, grant: Grant) {
        match self.inv(id).step {
            Step::Acquire => {
                // As `tag_all`: the first `granted` are tagged, the rest get the slots.
                let error = match grant.denial {
                    Some(Denial::Tomorrow) if self.s.pacer.daily_budget.is_some() => {
                        TagError::BudgetSpent
                    }
                    Some(Denial::Tomorrow) => {
                        TagError::AiQuota("the daily allocation is used up".into())
                    }
                    Some(Denial::Cooling) => {
                        TagError::AiBusy("fleet-wide back-off after a refusal".into())
                    }
                    Some(Denial::Paced) | None => TagError::Paced,
                };
                let inv = self.inv(id);
                inv.granted = (grant.granted as usize).min(inv.msgs.len());
                inv.start_at = grant.start_at_ms.clone();
                let mut slots = grant.not_before_ms.into_iter();
                for i in inv.granted..inv.msgs.len() {
                    let later = Later {
                        msg: inv.msgs[i],
                        error: error.clone(),
                        not_before: slots.next(),
                        walled: false,
                    };
                    inv.denied.push(later);
                }
                self.start_jobs(id);
            }
            Step::Refund => self.after_refund(id),
            Step::Refused => {
                let inv = self.inv(id);
                let mut slots = grant.not_before_ms.into_iter();
                for l in inv.later.iter_mut().filter(|l| l.walled) {
                    l.not_before = slots.next();
                }
                self.start_again(id);
            }
        }
    }

    fn start_jobs(&mut self, id: usize) {
        let concurrency = self.s.concurrency;
        let before = self.s.latency.before_call_ms;
        loop {
            let inv = self.inv(id);
            if inv.in_flight >= concurrency || inv.next_job >= inv.granted {
                break;
            }
            let m = inv.msgs[inv.next_job];
            // As the worker: prepare the image, then wait for the call's scheduled start.
            let start = inv.start_at.get(inv.next_job).copied();
            inv.next_job += 1;
            inv.in_flight += 1;
            let ready = self.now + self.rng.ms(before);
            let scheduled = start.map_or(0, |ms| ms.saturating_sub(EPOCH_MS) * MS);
            self.at(ready.max(scheduled), Ev::Call(id, m));
        }
        let inv = self.inv(id);
        if inv.in_flight == 0 && inv.next_job >= inv.granted {
            self.after_jobs(id);
        }
    }

    /// The wall check, then the AI call.
    fn call(&mut self, id: usize, m: usize) {
        if self.inv(id).wall {
            let later = Later {
                msg: m,
                error: TagError::AiBusy(
                    "not called: the AI refused another call of this batch".into(),
                ),
                not_before: None,
                walled: true,
            };
            let inv = self.inv(id);
            inv.later.push(later);
            inv.unused += 1;
            self.job_finished(id);
            return;
        }
        self.r.ai_calls += 1;
        let ok = self.ai_admits();
        let lat = self.s.latency;
        if ok {
            self.after(lat.ai_ok_ms, Ev::AiDone(id, m, true));
        } else {
            self.r.refused_calls += 1;
            self.after(lat.ai_refused_ms, Ev::AiDone(id, m, false));
        }
    }

    fn ai_admits(&mut self) -> bool {
        let t = self.now;
        if self
            .s
            .outages
            .iter()
            .any(|&(a, b)| t >= a * SECOND && t < b * SECOND)
        {
            return false;
        }
        if self.s.sporadic_refusals > 0.0 && self.rng.unit() < self.s.sporadic_refusals {
            return false;
        }
        match self.s.ai_limit {
            AiLimit::TokenBucket { per_second, burst } => {
                let elapsed = (t - self.ai_at) as f64 / SECOND as f64;
                self.ai_tokens = (self.ai_tokens + elapsed * per_second).min(burst);
                self.ai_at = t;
                if self.ai_tokens >= 1.0 {
                    self.ai_tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            AiLimit::Window { calls, window_ms } => {
                let window = t / (window_ms * MS);
                if self.ai_window.0 != window {
                    self.ai_window = (window, 0);
                }
                if self.ai_window.1 < calls {
                    self.ai_window.1 += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    fn ai_done(&mut self, id: usize, m: usize, ok: bool) {
        if ok {
            self.inv(id).answered += 1;
            self.after(self.s.latency.finish_ms, Ev::JobDone(id, m));
            return;
        }
        let inv = self.inv(id);
        inv.wall = true;
        inv.later.push(Later {
            msg: m,
            error: TagError::AiBusy("3040: Out of capacity".into()),
            not_before: None,
            walled: true,
        });
        self.job_finished(id);
    }

    fn job_finished(&mut self, id: usize) {
        self.inv(id).in_flight -= 1;
        self.start_jobs(id);
    }

    /// Every granted job is over: refund unused calls, then slot the walled messages.
    fn after_jobs(&mut self, id: usize) {
        let unused = self.inv(id).unused;
        let answered = self.inv(id).answered;
        if unused > 0 || answered > 0 {
            self.inv(id).step = Step::Refund;
            self.ask(id, Ask::Settle { unused, answered });
        } else {
            self.after_refund(id);
        }
    }

    fn after_refund(&mut self, id: usize) {
        let walled = self.inv(id).later.iter().filter(|l| l.walled).count() as u32;
        if walled > 0 {
            self.inv(id).step = Step::Refused;
            self.ask(id, Ask::Refused { n: walled });
        } else {
            self.start_again(id);
        }
    }

    fn start_again(&mut self, id: usize) {
        let inv = self.inv(id);
        let mut again: VecDeque<Later> = std::mem::take(&mut inv.later).into();
        again.extend(std::mem::take(&mut inv.denied));
        inv.again = again;
        self.next_again(id);
    }

    /// Runs `again` for the messages left, `concurrency` at a time; ends the invocation
    /// when all are settled.
    fn next_again(&mut self, id: usize) {
        while self.inv(id).again_in_flight < self.s.concurrency {
            let Some(later) = self.inv(id).again.pop_front() else {
                break;
            };
            self.inv(id).again_in_flight += 1;
            self.again(id, later);
        }
        let inv = self.inv(id);
        if inv.again_in_flight == 0 && inv.again.is_empty() {
            self.end(id);
        }
    }

    /// `Ctx::again`: the policy's verdict, then a D1 write and a retry or a re-send.
    fn again(&mut self, id: usize, l: Later) {
        let msg = &self.msgs[l.msg];
        let image = msg.image;
        let delivery = Delivery {
            queue: QueueKind::Images,
            attempt: msg.attempt,
            now_ms: self.now_ms(),
            uploaded_at_ms: Some(EPOCH_MS + self.images[image as usize].uploaded / MS),
            seed: jitter_seed(&msg.id, msg.attempt),
        };
        let lat = self.s.latency;
        match decide(l.error, l.not_before, &delivery, &self.s.policy) {
            Verdict::Fail(_) => {
                self.fail(image);
                self.inv(id).settles.push((l.msg, Settle::Ack));
                self.after(lat.finish_ms, Ev::AgainDone(id));
            }
            Verdict::Again {
                delay_seconds,
                resend,
                ..
            } => {
                let mut took = self.rng.ms(lat.defer_ms);
                if resend {
                    took += self.rng.ms(lat.send_ms);
                    self.r.resends += 1;
                    let visible_at = self.now + took + u64::from(delay_seconds) * SECOND;
                    self.send(image, visible_at);
                    self.inv(id).settles.push((l.msg, Settle::Ack));
                } else {
                    self.inv(id)
                        .settles
                        .push((l.msg, Settle::Retry(delay_seconds)));
                }
                self.at(self.now + took, Ev::AgainDone(id));
            }
        }
    }

    fn fail(&mut self, image: u32) {
        let image = &mut self.images[image as usize];
        if image.done.is_none() && !image.failed {
            image.failed = true;
        }
    }

    /// The invocation returns: its acks and retries take effect.
    fn end(&mut self, id: usize) {
        let inv = self.invs[id].take().expect("a running invocation");
        self.free_invs.push(id);
        self.running -= 1;
        for (m, settle) in inv.settles {
            match settle {
                Settle::Ack => self.r.queue_deletes += 1,
                Settle::Retry(_) if self.msgs[m].attempt > self.s.queue.max_retries => {
                    // To the dead letter queue (a write), whose consumer reads it, fails
                    // the image and acks.
                    self.r.queue_writes += 1;
                    self.r.queue_reads += 1;
                    self.r.queue_deletes += 1;
                    self.fail(self.msgs[m].image);
                }
                Settle::Retry(delay) => {
                    self.msgs[m].attempt += 1;
                    self.at(self.now + u64::from(delay) * SECOND, Ev::Visible(m));
                }
            }
        }
        self.pump();
    }

    fn finish(mut self) -> Report {
        let mut latencies = Vec::with_capacity(self.images.len());
        let mut last_done = 0;
        for image in &self.images {
            self.r.max_deliveries = self.r.max_deliveries.max(image.deliveries);
            match (image.failed, image.done) {
                (true, _) => self.r.failed += 1,
                (false, None) => self.r.unfinished += 1,
                (false, Some(done)) => {
                    self.r.done += 1;
                    last_done = last_done.max(done);
                    latencies.push(done - image.uploaded);
                }
            }
        }
        self.r.images = self.images.len() as u64;
        self.r.peak_reads_per_s = self.per_second.iter().map(|c| c.0).max().unwrap_or(0);
        self.r.peak_pacer_calls_per_s = self.per_second.iter().map(|c| c.1).max().unwrap_or(0);
        self.r.drain_s = last_done as f64 / SECOND as f64;
        latencies.sort_unstable();
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |&us| us as f64 / SECOND as f64)
        };
        self.r.latency_p50_s = quantile(0.5);
        self.r.latency_p99_s = quantile(0.99);
        self.r.latency_max_s = quantile(1.0);
        self.r.done_after_outage_s = self
            .s
            .outages
            .iter()
            .map(|&(_, to)| to)
            .max()
            .map(|to| self.r.drain_s - to as f64);
        self.r
    }
}
