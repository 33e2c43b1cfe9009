//! A discrete-event simulation of the tagger under Cloudflare Queues' semantics. Each consumer
//! invocation runs the production batch code, [`shared::tagging::batch::consume`] (the
//! function the tagger worker calls), on a small deterministic single-threaded executor with
//! virtual time: an event heap of timers and wakers, each invocation's future polled when one
//! of its timers fires. The simulation implements the batch's I/O trait ([`batch::Io`]) with
//! the models below; it has no copy of the orchestration.
//!
//! What is modelled (times drawn uniformly from the ranges in [`Latencies`]):
//! - **Queue**: messages become visible when sent or when their delay ends; a batch of up
//!   to `batch_size` starts when that many are visible, or when the oldest visible one has
//!   waited `batch_timeout_ms`; at most `max_concurrency` invocations run at once. With
//!   `scale_up`, the consumer starts at one invocation and, as Cloudflare documents it,
//!   adjusts after each batch: one more while a full batch is waiting, one fewer when the
//!   queue is empty. A batch's acks and retries take effect when its invocation ends; a retry
//!   of a message on delivery `max_retries + 1` moves it to the dead letter queue, whose
//!   consumer (the same batch code, `QueueKind::DeadLetter`) fails the image.
//! - **Consumer**: `batch::consume`, with D1 and KV writes taking `d1_ms`/`kv_ms`, an R2 read
//!   `r2_ms`, preparation `prepare_ms` of CPU (serialized within an invocation: one isolate,
//!   one thread), and the isolate's byte budget (one isolate per invocation here) over images
//!   of `image_bytes`. Each invocation's clock is off the pacer's by a skew drawn from
//!   `±clock_skew_ms`.
//! - **Pacer**: one object. Calls reach it after a one-way latency, are served one at a
//!   time in arrival order (`pacer_service_us` each), and answer after another; it answers
//!   through `Pacer::answer`, as the `AiPacer` object does, on its own (true) clock.
//! - **AI**: its limit ([`AiLimit`]) is its own and unknown to the pacer: a fixed window
//!   (per second or per minute, aligned on the AI's clock, offset by a random phase), or a
//!   token bucket. A call reaches the AI's counter `ai_delay_ms` after the consumer makes
//!   it; calls over the limit, and every call during an outage, are refused (3040, through
//!   the real error table) after `ai_refused_ms`; refused calls do not count. Accepted calls
//!   answer after `ai_ok_ms`.
//! - Not modelled: duplicates and redeliveries of the same message (so leases never
//!   contend), storage failures, invalid images, webhooks, D1 write limits, the queue's own
//!   throughput limit. A run stops a week after the bound; images left then count as
//!   unfinished.

use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use shared::tagging::batch::{self, Claim, ClaimedImage, Delivered, ImageState, Io, Line, Note};
use shared::tagging::error::TagError;
use shared::tagging::labels::Classified;
use shared::tagging::memory::ByteBudget;
use shared::tagging::pacer::{Ask, Grant, Pacer, PacerConfig};
use shared::tagging::retry::{Backoff, Policy, QueueKind};
use shared::wire::config::{self, Vars};
use shared::wire::keys::object_key;
use shared::wire::message::SCHEMA_VERSION;
use shared::wire::record::TagRecord;
use shared::wire::time::format_ms;
use shared::{ImageId, ImageMessage, Label, Status};

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

    /// Uniform in `[-max, max]`.
    fn signed(&mut self, max: u64) -> i64 {
        (self.next() % (2 * max + 1)) as i64 - max as i64
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

/// The image queue's consumer settings (`[[queues.consumers]]`), and how it scales.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueSettings {
    pub batch_size: usize,
    pub batch_timeout_ms: u64,
    pub max_retries: u32,
    pub max_concurrency: usize,
    /// Start at one invocation and scale after each batch (Cloudflare's documented
    /// behaviour); otherwise `max_concurrency` at once.
    pub scale_up: bool,
}

/// How the AI limits calls.
#[derive(Clone, Copy, Debug)]
pub enum AiLimit {
    /// A token bucket: `per_second`, holding at most `burst`.
    TokenBucket { per_second: f64, burst: f64 },
    /// At most `calls` in each fixed window of `window_ms` (aligned to multiples of it on
    /// the AI's clock).
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
    /// One D1 statement (claim, mark, defer).
    pub d1_ms: (u64, u64),
    /// One KV read or write.
    pub kv_ms: (u64, u64),
    /// Reading the object from R2.
    pub r2_ms: (u64, u64),
    /// Decoding and shrinking it for the model: CPU, one at a time per invocation.
    pub prepare_ms: (u64, u64),
    /// From the consumer's call to the AI's limiter counting it.
    pub ai_delay_ms: (u64, u64),
    /// From the limiter to the answer of an accepted call, and of a refused one.
    pub ai_ok_ms: (u64, u64),
    pub ai_refused_ms: (u64, u64),
    /// A queue send (a re-send).
    pub send_ms: (u64, u64),
    /// Each invocation's clock is off the pacer's by up to this much, either way.
    pub clock_skew_ms: u64,
}

impl Latencies {
    /// The defaults, from measurements where there are any: preparation is the photo
    /// benchmark's tagger CPU per 4000×3000 JPEG (BENCHMARKS.md, "Large photos": 210 ms
    /// warm to 570 ms for a fresh isolate's first). The network delay to the AI's counter
    /// and the clock skew are assumptions (no measurement): 10-60 ms and ±10 ms.
    pub const CLOUD: Self = Self {
        dispatch_ms: (5, 20),
        pacer_one_way_ms: (1, 5),
        pacer_service_us: 200,
        d1_ms: (5, 15),
        kv_ms: (5, 15),
        r2_ms: (10, 30),
        prepare_ms: (210, 570),
        ai_delay_ms: (10, 60),
        ai_ok_ms: (100, 300),
        ai_refused_ms: (10, 30),
        send_ms: (5, 15),
        clock_skew_ms: 10,
    };

    /// The assumptions of the simulation before issue 21: claim, read and prepare in
    /// 20-60 ms, the AI counting each call the instant it is made, no skew.
    pub const BEFORE: Self = Self {
        r2_ms: (5, 15),
        prepare_ms: (10, 30),
        ai_delay_ms: (0, 0),
        clock_skew_ms: 0,
        ..Self::CLOUD
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
    /// The share of calls the AI refuses at random, whatever the load; 0 for none.
    pub sporadic_refusals: f64,
    pub latency: Latencies,
    /// `BYTES_IN_FLIGHT`.
    pub bytes_in_flight: u64,
    /// `LEASE_SECONDS`, in ms.
    pub lease_ms: u64,
    /// The size of every upload.
    pub image_bytes: u64,
}

/// The deployed configuration, read from `wrangler.tagger.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub queue: QueueSettings,
    pub vars: BTreeMap<String, String>,
}

impl Config {
    /// Reads the image queue's consumer and the vars of `wrangler.tagger.toml` (a small
    /// parse of the few forms the file uses: sections, `key = value`, comments).
    pub fn tagger() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wrangler.tagger.toml");
        let text = std::fs::read_to_string(path).expect("wrangler.tagger.toml");
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Self {
        let mut section = String::new();
        let mut consumers: Vec<BTreeMap<String, String>> = Vec::new();
        let mut vars = BTreeMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.starts_with('[') {
                section = line.trim_matches(|c| c == '[' || c == ']').to_string();
                if section == "queues.consumers" {
                    consumers.push(BTreeMap::new());
                }
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim().to_string(), value.trim().trim_matches('"'));
            match section.as_str() {
                "vars" => {
                    vars.insert(key, value.to_string());
                }
                "queues.consumers" => {
                    if let Some(c) = consumers.last_mut() {
                        c.insert(key, value.to_string());
                    }
                }
                _ => {}
            }
        }
        let images = consumers
            .iter()
            .find(|c| c.get("queue").map(String::as_str) == Some("image-processing-queue"))
            .expect("the image queue's consumer");
        let get = |key: &str| -> u64 { images[key].parse().expect(key) };
        Self {
            queue: QueueSettings {
                batch_size: get("max_batch_size") as usize,
                batch_timeout_ms: get("max_batch_timeout") * 1000,
                max_retries: get("max_retries") as u32,
                max_concurrency: get("max_concurrency") as usize,
                scale_up: true,
            },
            vars,
        }
    }
}

/// The config's vars, read as the worker reads its own (defaults for unset ones).
impl Vars for Config {
    fn raw(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

/// The integration tests' own settings that differ from the config; `tests/simulation.rs`
/// checks each against the test file it comes from.
pub mod miniflare {
    /// `FAST_QUEUES` in `tests/support/helpers.mjs`: `maxBatchTimeout: 1`.
    pub const BATCH_TIMEOUT_S: u64 = 1;
    /// The burst of `tests/ai-limits.test.mjs`: `N` uploads against `RATE` calls a second
    /// (the stub's token bucket, and `AI_REQUESTS_PER_SECOND`).
    pub const BURST_N: u32 = 150;
    pub const BURST_RATE: u32 = 5;
    /// The outage of `tests/ai-limits.test.mjs`: `N` uploads, `OUTAGE_MS`, and
    /// `AI_COOLDOWN_MAX_SECONDS`.
    pub const OUTAGE_N: u32 = 10;
    pub const OUTAGE_MS: u64 = 20_000;
    pub const OUTAGE_COOLDOWN_MAX_S: u64 = 4;
}

impl Scenario {
    /// `wrangler.tagger.toml` as deployed, against an AI allowing 3,000 calls a minute (the
    /// documented limit of image classification), with the models' defaults.
    pub fn production(name: &str, load: Load) -> Self {
        let c = Config::tagger();
        let rate = c.get(config::AI_REQUESTS_PER_SECOND);
        Self {
            name: name.into(),
            seed: 1,
            load,
            queue: c.queue,
            concurrency: c.get(config::CONCURRENCY).max(1),
            policy: Policy {
                backoff: Backoff {
                    base_seconds: c.get(config::RETRY_BASE_SECONDS),
                    max_seconds: c.get(config::RETRY_MAX_SECONDS),
                },
                max_retries: c.get(config::MAX_RETRIES),
                give_up_after_ms: c.get(config::GIVE_UP_AFTER_SECONDS) * 1000,
            },
            pacer: PacerConfig::new(rate, None, c.get(config::AI_COOLDOWN_MAX_SECONDS) * 1000),
            ai_limit: AiLimit::Window {
                calls: 3_000,
                window_ms: 60_000,
            },
            outages: Vec::new(),
            sporadic_refusals: 0.0,
            latency: Latencies::CLOUD,
            bytes_in_flight: c.get(config::BYTES_IN_FLIGHT),
            lease_ms: c.get(config::LEASE_SECONDS).max(1) * 1000,
            // A 4000×3000 JPEG of the photo benchmark.
            image_bytes: 6_815_744,
        }
    }

    /// The simulation's conditions before issue 21: an AI limited per second at the pacer's
    /// rate, counting calls when made, no skew, fast preparation of small images, all
    /// invocations at once, and the `max_concurrency` of the time (10).
    pub fn before(mut self) -> Self {
        self.queue.max_concurrency = 10;
        let rate = self.pacer.rate_per_second as u32;
        self.ai_limit = AiLimit::Window {
            calls: rate,
            window_ms: 1_000,
        };
        self.latency = Latencies::BEFORE;
        self.queue.scale_up = false;
        self.image_bytes = 100 * 1024;
        self.name = format!("{} [before]", self.name);
        self
    }

    /// The pacer set to `factor` times the AI's real limit (which it does not know).
    pub fn pacer_at(mut self, factor: f64) -> Self {
        let rate = self.ai_rate() * factor;
        self.pacer = PacerConfig::new(rate, None, self.pacer.cooldown_max_ms);
        self.name = format!("{} [pacer {:+.0} %]", self.name, (factor - 1.0) * 100.0);
        self
    }

    /// The integration tests' Miniflare set-up: the config, with the tests' batch timeout,
    /// one batch at a time (Miniflare's queue), small PNGs, and an AI stub allowing `rate`
    /// calls a second (a token bucket holding `rate`) or none if `None`, with the pacer at
    /// `rate` or the config's.
    fn miniflare(name: &str, load: Load, rate: Option<u32>) -> Self {
        let mut s = Self::production(name, load);
        s.queue.batch_timeout_ms = miniflare::BATCH_TIMEOUT_S * 1000;
        s.queue.max_concurrency = 1;
        s.queue.scale_up = false;
        s.latency = Latencies::BEFORE;
        s.image_bytes = 1024;
        match rate {
            Some(rate) => {
                s.pacer = PacerConfig::new(f64::from(rate), None, s.pacer.cooldown_max_ms);
                s.ai_limit = AiLimit::TokenBucket {
                    per_second: f64::from(rate),
                    burst: f64::from(rate),
                };
            }
            None => {
                s.ai_limit = AiLimit::TokenBucket {
                    per_second: 1e6,
                    burst: 1e6,
                }
            }
        }
        s
    }

    /// `tests/ai-limits.test.mjs`'s burst: 150 uploads against 5 calls a second.
    pub fn miniflare_burst() -> Self {
        Self::miniflare(
            &format!(
                "Miniflare: {} at {}/s",
                miniflare::BURST_N,
                miniflare::BURST_RATE
            ),
            Load::Burst(miniflare::BURST_N),
            Some(miniflare::BURST_RATE),
        )
    }

    /// `tests/ai-limits.test.mjs`'s outage: 10 uploads at the start of a 20 s outage.
    pub fn miniflare_outage() -> Self {
        let outage_s = miniflare::OUTAGE_MS / 1000;
        let mut s = Self::miniflare(
            &format!("Miniflare: {}, AI down 0-{outage_s} s", miniflare::OUTAGE_N),
            Load::Burst(miniflare::OUTAGE_N),
            None,
        );
        s.pacer.cooldown_max_ms = miniflare::OUTAGE_COOLDOWN_MAX_S * 1000;
        s.outages = vec![(0, outage_s)];
        s
    }

    /// The AI's sustained rate.
    pub fn ai_rate(&self) -> f64 {
        match self.ai_limit {
            AiLimit::TokenBucket { per_second, .. } => per_second,
            AiLimit::Window { calls, window_ms } => f64::from(calls) * 1000.0 / window_ms as f64,
        }
    }

    /// When a perfect server at the AI's rate (none during outages), fed the same uploads,
    /// would finish the last one, in seconds: the fluid bound.
    pub fn bound_s(&self) -> f64 {
        let rate = self.ai_rate().min(1e4);
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

    fn batch_settings(&self) -> batch::Settings {
        batch::Settings {
            policy: self.policy,
            concurrency: self.concurrency,
            lease_ms: self.lease_ms,
            min_score: 0.1,
            daily_budget: self.pacer.daily_budget.is_some(),
        }
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
    /// Most invocations running at once.
    pub peak_invocations: usize,
    /// The batch code's log lines: each outcome, and each note, by name.
    pub outcomes: BTreeMap<String, u64>,
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

// ---------------------------------------------------------------------------------------
// The executor: virtual time, an event heap of timers (wakers) and queue events.

/// Queue events, handled by the world itself.
#[derive(Debug)]
enum Ev {
    /// The next steady upload.
    Upload,
    Visible(usize),
    BatchTimer,
}

enum Fire {
    Wake(Waker),
    Event(Ev),
}

struct Timer {
    at: Us,
    seq: u64,
    fire: Fire,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: the heap pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A task's waker: puts the task back on the ready queue.
struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.lock().expect("one thread").push_back(self.id);
    }
}

type Task<'s> = Pin<Box<dyn Future<Output = ()> + 's>>;

/// Waits until a virtual time.
struct Sleep<'a, 's> {
    w: &'a World<'s>,
    until: Us,
    armed: bool,
}

impl Future for Sleep<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.w.now.get() >= self.until {
            return Poll::Ready(());
        }
        if !self.armed {
            self.armed = true;
            self.w.at(self.until, Fire::Wake(cx.waker().clone()));
        }
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------
// The world: queue, images, pacer, AI.

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

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Retry(u32),
}

struct State {
    rng: Rng,
    msgs: Vec<Msg>,
    images: Vec<Image>,
    visible: VecDeque<(usize, Us)>,
    timer: Option<Us>,
    /// Image-queue invocations running, and how many may run (the consumer's scale).
    running: usize,
    scale: usize,
    pacer: Pacer,
    pacer_free: Us,
    ai_tokens: f64,
    ai_at: Us,
    ai_window: (u64, u32),
    /// The AI clock's phase against the windows, in µs.
    ai_phase: Us,
    /// Per second of simulated time: messages delivered, pacer calls.
    per_second: Vec<(u32, u32)>,
    r: Report,
}

struct World<'s> {
    s: &'s Scenario,
    settings: batch::Settings,
    now: Cell<Us>,
    seq: Cell<u64>,
    timers: RefCell<BinaryHeap<Timer>>,
    spawned: RefCell<Vec<Task<'s>>>,
    st: RefCell<State>,
}

impl<'s> World<'s> {
    fn at(&self, at: Us, fire: Fire) {
        self.seq.set(self.seq.get() + 1);
        self.timers.borrow_mut().push(Timer {
            at,
            seq: self.seq.get(),
            fire,
        });
    }

    fn sleep_until(&self, until: Us) -> Sleep<'_, 's> {
        Sleep {
            w: self,
            until,
            armed: false,
        }
    }

    /// Sleeps for a duration drawn from `range`.
    fn sleep_ms(&self, range: (u64, u64)) -> Sleep<'_, 's> {
        let d = self.st.borrow_mut().rng.ms(range);
        self.sleep_until(self.now.get() + d)
    }

    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.now.get() / MS
    }

    /// Sends a new message about `image`, visible from `visible_at`.
    fn send(&self, image: u32, visible_at: Us) {
        let now = self.now.get();
        let mut st = self.st.borrow_mut();
        let id = st.msgs.len();
        let text = format!("{:032x}", st.rng.next());
        st.msgs.push(Msg {
            image,
            attempt: 1,
            id: text,
        });
        st.r.queue_writes += 1;
        if visible_at <= now {
            st.visible.push_back((id, now));
        } else {
            drop(st);
            self.at(visible_at, Fire::Event(Ev::Visible(id)));
        }
    }

    fn upload(&self) {
        let image = {
            let mut st = self.st.borrow_mut();
            let image = st.images.len() as u32;
            st.images.push(Image {
                uploaded: self.now.get(),
                done: None,
                failed: false,
                deliveries: 0,
            });
            image
        };
        self.send(image, self.now.get());
    }

    fn handle(self: &Rc<Self>, ev: Ev) {
        match ev {
            Ev::Upload => {
                self.upload();
                self.pump();
                if let Load::Steady {
                    per_second,
                    seconds,
                } = self.s.load
                {
                    let u = self.st.borrow_mut().rng.unit();
                    let gap = -(1.0 - u).ln() / per_second;
                    let next = self.now.get() + (gap * SECOND as f64) as Us;
                    if next < seconds * SECOND {
                        self.at(next, Fire::Event(Ev::Upload));
                    }
                }
            }
            Ev::Visible(m) => {
                self.st.borrow_mut().visible.push_back((m, self.now.get()));
                self.pump();
            }
            Ev::BatchTimer => {
                self.st.borrow_mut().timer = None;
                self.pump();
            }
        }
    }

    /// Starts the batches the queue would deliver now, or arms the batch timer.
    fn pump(self: &Rc<Self>) {
        let q = self.s.queue;
        loop {
            let mut st = self.st.borrow_mut();
            if st.running >= st.scale {
                return;
            }
            let Some(&(_, since)) = st.visible.front() else {
                return;
            };
            let due = since + q.batch_timeout_ms * MS;
            if st.visible.len() < q.batch_size && due > self.now.get() {
                if st.timer.is_none() {
                    st.timer = Some(due);
                    drop(st);
                    self.at(due, Fire::Event(Ev::BatchTimer));
                }
                return;
            }
            let take = st.visible.len().min(q.batch_size);
            let msgs: Vec<usize> = st.visible.drain(..take).map(|(m, _)| m).collect();
            st.running += 1;
            st.r.peak_invocations = st.r.peak_invocations.max(st.running);
            drop(st);
            self.spawn(QueueKind::Images, msgs);
        }
    }

    /// Starts an invocation of the batch code on `msgs`.
    fn spawn(self: &Rc<Self>, kind: QueueKind, msgs: Vec<usize>) {
        let w = Rc::clone(self);
        let task = async move {
            let settles = Rc::new(RefCell::new(Vec::new()));
            let skew = {
                let mut st = w.st.borrow_mut();
                st.rng.signed(w.s.latency.clock_skew_ms)
            };
            w.sleep_ms(w.s.latency.dispatch_ms).await;
            let messages = w.deliver(&msgs, &settles);
            let io = SimIo {
                w: &w,
                skew_ms: skew,
                cpu_free: Cell::new(0),
                budget: ByteBudget::new(w.s.bytes_in_flight),
            };
            batch::consume(&io, kind, messages, &w.settings).await;
            let settles = settles.take();
            w.end(kind, &msgs, settles);
        };
        self.spawned.borrow_mut().push(Box::pin(task));
    }

    /// The messages of a batch, as delivered now.
    fn deliver(
        &self,
        msgs: &[usize],
        settles: &Rc<RefCell<Vec<(usize, Settle)>>>,
    ) -> Vec<SimMessage> {
        let mut st = self.st.borrow_mut();
        st.r.queue_reads += msgs.len() as u64;
        let i = (self.now.get() / SECOND) as usize;
        if st.per_second.len() <= i {
            st.per_second.resize(i + 1, (0, 0));
        }
        st.per_second[i].0 += msgs.len() as u32;
        msgs.iter()
            .map(|&m| {
                let image = st.msgs[m].image;
                st.images[image as usize].deliveries += 1;
                let uploaded = st.images[image as usize].uploaded;
                SimMessage {
                    m,
                    id: st.msgs[m].id.clone(),
                    attempt: st.msgs[m].attempt,
                    body: body(image, uploaded, self.s.image_bytes),
                    settles: Rc::clone(settles),
                }
            })
            .collect()
    }

    /// The invocation returns: its acks and retries take effect, and the consumer scales.
    fn end(self: &Rc<Self>, kind: QueueKind, msgs: &[usize], settles: Vec<(usize, Settle)>) {
        let mut dead = Vec::new();
        {
            let mut st = self.st.borrow_mut();
            let settled: BTreeMap<usize, Settle> = settles.into_iter().collect();
            for &m in msgs {
                // A message neither acked nor retried is acked when the handler returns.
                match settled.get(&m).copied().unwrap_or(Settle::Ack) {
                    Settle::Ack => st.r.queue_deletes += 1,
                    Settle::Retry(_) if st.msgs[m].attempt > self.s.queue.max_retries => {
                        // To the dead letter queue (a write), whose consumer reads it.
                        st.r.queue_writes += 1;
                        st.msgs[m].attempt = 1;
                        dead.push(m);
                    }
                    Settle::Retry(delay) => {
                        st.msgs[m].attempt += 1;
                        let at = self.now.get() + u64::from(delay) * SECOND;
                        drop(st);
                        self.at(at, Fire::Event(Ev::Visible(m)));
                        st = self.st.borrow_mut();
                    }
                }
            }
            if kind == QueueKind::Images {
                st.running -= 1;
                let max = self.s.queue.max_concurrency;
                if self.s.queue.scale_up {
                    if st.visible.len() >= self.s.queue.batch_size {
                        st.scale = (st.scale + 1).min(max);
                    } else if st.visible.is_empty() {
                        st.scale = st.scale.saturating_sub(1).max(1);
                    }
                }
            }
        }
        if !dead.is_empty() {
            self.spawn(QueueKind::DeadLetter, dead);
        }
        self.pump();
    }

    fn ai_admits(&self) -> bool {
        let t = self.now.get();
        let s = self.s;
        if s.outages
            .iter()
            .any(|&(a, b)| t >= a * SECOND && t < b * SECOND)
        {
            return false;
        }
        let mut st = self.st.borrow_mut();
        if s.sporadic_refusals > 0.0 && st.rng.unit() < s.sporadic_refusals {
            return false;
        }
        match s.ai_limit {
            AiLimit::TokenBucket { per_second, burst } => {
                let elapsed = (t - st.ai_at) as f64 / SECOND as f64;
                st.ai_tokens = (st.ai_tokens + elapsed * per_second).min(burst);
                st.ai_at = t;
                if st.ai_tokens >= 1.0 {
                    st.ai_tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            AiLimit::Window { calls, window_ms } => {
                let window = (t + st.ai_phase) / (window_ms * MS);
                if st.ai_window.0 != window {
                    st.ai_window = (window, 0);
                }
                if st.ai_window.1 < calls {
                    st.ai_window.1 += 1;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// The queue body of an upload, as the upload worker sends it.
fn body(image: u32, uploaded: Us, size: u64) -> String {
    let id = image_id(image);
    serde_json::to_string(&ImageMessage {
        schema_version: SCHEMA_VERSION,
        image_id: id,
        r2_key: object_key(&id, "jpg"),
        content_type: "image/jpeg".into(),
        size,
        uploaded_at: format_ms(EPOCH_MS + uploaded / MS),
    })
    .expect("a message")
}

/// A valid v4 id carrying the image's index in its first four bytes.
fn image_id(image: u32) -> ImageId {
    let mut bytes = [0x5a; 16];
    bytes[..4].copy_from_slice(&image.to_be_bytes());
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    ImageId::from_uuid(uuid).expect("a v4 id")
}

fn image_index(id: &ImageId) -> usize {
    let b = id.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// One delivery, as the batch code sees it.
struct SimMessage {
    m: usize,
    id: String,
    attempt: u32,
    body: String,
    settles: Rc<RefCell<Vec<(usize, Settle)>>>,
}

impl Delivered for SimMessage {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn body(&self) -> String {
        self.body.clone()
    }

    fn ack(&self) {
        self.settles.borrow_mut().push((self.m, Settle::Ack));
    }

    fn retry(&self, delay_seconds: u32) {
        self.settles
            .borrow_mut()
            .push((self.m, Settle::Retry(delay_seconds)));
    }
}

/// The batch's I/O in one invocation, on the models.
struct SimIo<'a, 's> {
    w: &'a World<'s>,
    /// This isolate's clock against the pacer's, in ms.
    skew_ms: i64,
    /// When this isolate's CPU is next free.
    cpu_free: Cell<Us>,
    /// This isolate's byte budget.
    budget: ByteBudget,
}

impl SimIo<'_, '_> {
    fn record(&self, id: &ImageId, status: Status) -> TagRecord {
        TagRecord {
            image_id: *id,
            status,
            tags: Vec::new(),
            categories: Vec::new(),
            labels: Vec::new(),
            model: String::new(),
            min_score: 0.0,
            processed_at: String::new(),
            uploaded_at: String::new(),
            content_type: "image/jpeg".into(),
            size: self.w.s.image_bytes,
            error: None,
            attempts: None,
            reused_from: None,
            notification: None,
        }
    }
}

impl Io for SimIo<'_, '_> {
    type Message = SimMessage;
    type Input = ();

    fn now_ms(&self) -> u64 {
        (self.w.now_ms() as i64 + self.skew_ms) as u64
    }

    async fn sleep_ms(&self, ms: u64) {
        self.w.sleep_until(self.w.now.get() + ms * MS).await
    }

    async fn claim(&self, id: &ImageId, now_ms: u64, lease_ms: u64) -> Result<Claim, TagError> {
        self.w.sleep_ms(self.w.s.latency.d1_ms).await;
        let st = self.w.st.borrow();
        let image = &st.images[image_index(id)];
        if image.done.is_some() || image.failed {
            return Ok(Claim::Done(None));
        }
        Ok(Claim::Claimed {
            image: ClaimedImage {
                r2_key: object_key(id, "jpg"),
                size: self.w.s.image_bytes,
                uploaded_at_ms: EPOCH_MS + image.uploaded / MS,
            },
            lease_until: now_ms + lease_ms,
        })
    }

    async fn image(&self, id: &ImageId) -> Result<Option<ImageState>, TagError> {
        self.w.sleep_ms(self.w.s.latency.d1_ms).await;
        let st = self.w.st.borrow();
        let image = &st.images[image_index(id)];
        Ok(Some(ImageState {
            status: match (image.done, image.failed) {
                (_, true) => Status::Failed,
                (Some(_), _) => Status::Done,
                (None, false) => Status::Queued,
            },
            lease_until: None,
            uploaded_at_ms: EPOCH_MS + image.uploaded / MS,
        }))
    }

    async fn mark_done(
        &self,
        id: &ImageId,
        _classified: &Classified,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        self.w.sleep_ms(self.w.s.latency.d1_ms).await;
        let now = self.w.now.get();
        let mut st = self.w.st.borrow_mut();
        let image = &mut st.images[image_index(id)];
        if image.done.is_some() || image.failed {
            return Ok(None);
        }
        image.done = Some(now);
        Ok(Some(self.record(id, Status::Done)))
    }

    async fn mark_failed(
        &self,
        id: &ImageId,
        _error: &TagError,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        self.w.sleep_ms(self.w.s.latency.d1_ms).await;
        let mut st = self.w.st.borrow_mut();
        let image = &mut st.images[image_index(id)];
        if image.done.is_some() || image.failed {
            return Ok(None);
        }
        image.failed = true;
        Ok(Some(self.record(id, Status::Failed)))
    }

    async fn defer(
        &self,
        _id: &ImageId,
        _due_ms: u64,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.d1_ms).await;
        Ok(())
    }

    async fn published(&self, _id: &ImageId) -> Result<Option<TagRecord>, TagError> {
        self.w.sleep_ms(self.w.s.latency.kv_ms).await;
        Ok(None)
    }

    async fn publish(&self, _record: &TagRecord) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.kv_ms).await;
        Ok(())
    }

    async fn unpublish(&self, _id: &ImageId) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.kv_ms).await;
        Ok(())
    }

    async fn keep_poison(
        &self,
        _message_id: &str,
        _error: &TagError,
        _body: &str,
        _now: String,
    ) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.kv_ms).await;
        Ok(())
    }

    async fn notify(&self, _record: &TagRecord) {}

    fn budget(&self) -> &ByteBudget {
        &self.budget
    }

    async fn prepare(&self, _r2_key: &str) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.r2_ms).await;
        // CPU: one image at a time in an isolate.
        let cpu = self.w.st.borrow_mut().rng.ms(self.w.s.latency.prepare_ms);
        let start = self.w.now.get().max(self.cpu_free.get());
        self.cpu_free.set(start + cpu);
        self.w.sleep_until(start + cpu).await;
        Ok(())
    }

    async fn classify(&self, _input: &()) -> Result<Vec<Label>, TagError> {
        let lat = self.w.s.latency;
        self.w.sleep_ms(lat.ai_delay_ms).await;
        self.w.st.borrow_mut().r.ai_calls += 1;
        if self.w.ai_admits() {
            self.w.sleep_ms(lat.ai_ok_ms).await;
            Ok(vec![Label {
                label: "tabby".into(),
                score: 0.9,
            }])
        } else {
            self.w.st.borrow_mut().r.refused_calls += 1;
            self.w.sleep_ms(lat.ai_refused_ms).await;
            Err(TagError::from_ai_error(
                "InferenceUpstreamError: 3040: Capacity temporarily exceeded",
            ))
        }
    }

    async fn pacer(&self, ask: Ask) -> Result<Grant, String> {
        let lat = self.w.s.latency;
        {
            let mut st = self.w.st.borrow_mut();
            st.r.pacer_calls += 1;
            let i = (self.w.now.get() / SECOND) as usize;
            if st.per_second.len() <= i {
                st.per_second.resize(i + 1, (0, 0));
            }
            st.per_second[i].1 += 1;
        }
        self.w.sleep_ms(lat.pacer_one_way_ms).await;
        // The object serves one call at a time, as `AiPacer::fetch` does, on its own clock.
        let (grant, back) = {
            let mut st = self.w.st.borrow_mut();
            let start = self.w.now.get().max(st.pacer_free);
            st.pacer_free = start + lat.pacer_service_us;
            let grant = st.pacer.answer(&self.w.s.pacer, EPOCH_MS + start / MS, ask);
            let back = st.pacer_free + st.rng.ms(lat.pacer_one_way_ms);
            (grant, back)
        };
        self.w.sleep_until(back).await;
        Ok(grant)
    }

    async fn resend(&self, body: &ImageMessage, delay_seconds: u32) -> Result<(), TagError> {
        self.w.sleep_ms(self.w.s.latency.send_ms).await;
        self.w.st.borrow_mut().r.resends += 1;
        let visible_at = self.w.now.get() + u64::from(delay_seconds) * SECOND;
        self.w.send(image_index(&body.image_id) as u32, visible_at);
        Ok(())
    }

    fn log(&self, _message: &SimMessage, line: Line) {
        let name = serde_json::to_value(line.outcome)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        *self.w.st.borrow_mut().r.outcomes.entry(name).or_default() += 1;
    }

    fn note(&self, note: Note<'_>) {
        let name = match note {
            Note::PacerUnavailable(_) => "note: pacer unavailable",
            Note::DeferNotRecorded(..) => "note: defer not recorded",
            Note::ResendFailed(..) => "note: resend failed",
        };
        *self
            .w
            .st
            .borrow_mut()
            .r
            .outcomes
            .entry(name.into())
            .or_default() += 1;
    }
}

/// Runs a scenario to the end (every image done or failed, or a week after the bound).
pub fn run(s: &Scenario) -> Report {
    let mut rng = Rng::new(s.seed);
    let ai_phase = match s.ai_limit {
        AiLimit::Window { window_ms, .. } if s.latency.clock_skew_ms > 0 => {
            rng.next() % (window_ms * MS)
        }
        _ => 0,
    };
    let world = Rc::new(World {
        s,
        settings: s.batch_settings(),
        now: Cell::new(0),
        seq: Cell::new(0),
        timers: RefCell::new(BinaryHeap::new()),
        spawned: RefCell::new(Vec::new()),
        st: RefCell::new(State {
            rng,
            msgs: Vec::new(),
            images: Vec::new(),
            visible: VecDeque::new(),
            timer: None,
            running: 0,
            scale: if s.queue.scale_up {
                1
            } else {
                s.queue.max_concurrency
            },
            pacer: Pacer::new(&s.pacer, EPOCH_MS),
            pacer_free: 0,
            ai_tokens: match s.ai_limit {
                AiLimit::TokenBucket { burst, .. } => burst,
                AiLimit::Window { .. } => 0.0,
            },
            ai_at: 0,
            ai_window: (u64::MAX, 0),
            ai_phase,
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
                peak_invocations: 0,
                outcomes: BTreeMap::new(),
                events: 0,
            },
        }),
    });
    match s.load {
        Load::Burst(n) => {
            for _ in 0..n {
                world.upload();
            }
        }
        Load::Steady { .. } => world.at(0, Fire::Event(Ev::Upload)),
    }
    world.pump();
    // A policy that never lets some message through must not hang the test.
    let give_up = (s.bound_s() * 20.0) as Us * SECOND + 7 * 86_400 * SECOND;
    let ready = Arc::new(Mutex::new(VecDeque::new()));
    let mut tasks: Vec<Option<(Task<'_>, Waker)>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = 0u64;
    loop {
        for task in world.spawned.borrow_mut().drain(..) {
            let id = free.pop().unwrap_or_else(|| {
                tasks.push(None);
                tasks.len() - 1
            });
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: Arc::clone(&ready),
            }));
            tasks[id] = Some((task, waker));
            ready.lock().expect("one thread").push_back(id);
        }
        let next = ready.lock().expect("one thread").pop_front();
        if let Some(id) = next {
            let Some((mut task, waker)) = tasks[id].take() else {
                continue;
            };
            match task.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Ready(()) => free.push(id),
                Poll::Pending => tasks[id] = Some((task, waker)),
            }
            continue;
        }
        let Some(timer) = world.timers.borrow_mut().pop() else {
            break;
        };
        if timer.at > give_up {
            break;
        }
        world.now.set(timer.at);
        events += 1;
        match timer.fire {
            Fire::Wake(waker) => waker.wake(),
            Fire::Event(ev) => world.handle(ev),
        }
    }
    drop(tasks);
    let world = Rc::try_unwrap(world).ok().expect("no task left");
    let mut st = world.st.into_inner();
    st.r.events = events;
    finish(s, st)
}

fn finish(s: &Scenario, st: State) -> Report {
    let mut r = st.r;
    let mut latencies = Vec::with_capacity(st.images.len());
    let mut last_done = 0;
    for image in &st.images {
        r.max_deliveries = r.max_deliveries.max(image.deliveries);
        match (image.failed, image.done) {
            (true, _) => r.failed += 1,
            (false, None) => r.unfinished += 1,
            (false, Some(done)) => {
                r.done += 1;
                last_done = last_done.max(done);
                latencies.push(done - image.uploaded);
            }
        }
    }
    r.images = st.images.len() as u64;
    r.peak_reads_per_s = st.per_second.iter().map(|c| c.0).max().unwrap_or(0);
    r.peak_pacer_calls_per_s = st.per_second.iter().map(|c| c.1).max().unwrap_or(0);
    r.drain_s = last_done as f64 / SECOND as f64;
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |&us| us as f64 / SECOND as f64)
    };
    r.latency_p50_s = quantile(0.5);
    r.latency_p99_s = quantile(0.99);
    r.latency_max_s = quantile(1.0);
    r.done_after_outage_s = s
        .outages
        .iter()
        .map(|&(_, to)| to)
        .max()
        .map(|to| r.drain_s - to as f64);
    r
}
