//! The tagger under Cloudflare Queues, simulated (see `sim`): every invocation runs the
//! production batch code, `shared::tagging::batch::consume`.
//!
//! The small runs below assert the goals on every `cargo test`; the figures of
//! BENCHMARKS.md come from the ignored `benchmark_table`, in release:
//! `cargo test -p shared --release --test simulation -- --ignored --nocapture`
//! (`SIM=<text>` keeps only the scenarios whose name contains it). With `SIM_JSON=1` the two
//! ignored tables are also written as raw JSON to `bench/simulation-results.json` and
//! `bench/simulation-seeds.json`, from which `bench/tables.mjs` writes BENCHMARKS.md's tables.

mod sim;

use std::collections::BTreeMap;
use std::time::Instant;

use shared::wire::config::{self, Vars};
use sim::{miniflare, run, AiLimit, Config, Load, Report, Scenario};

fn burst(n: u32) -> Scenario {
    Scenario::production(&format!("burst of {n}"), Load::Burst(n))
}

/// Steady uploads at 40/s for `minutes`, the AI down for `down` seconds in the middle.
fn outage(minutes: u64, down: u64) -> Scenario {
    let seconds = minutes * 60;
    let from = (seconds - down) / 2;
    let mut s = Scenario::production(
        &format!("40/s for {minutes} min, AI down {from}-{} s", from + down),
        Load::Steady {
            per_second: 40.0,
            seconds,
        },
    );
    s.outages = vec![(from, from + down)];
    s
}

/// A burst against an AI that also refuses `percent` % of calls at random, whatever the load.
fn sporadic(n: u32, percent: u32) -> Scenario {
    let mut s = burst(n);
    s.name = format!("burst of {n}, {percent} % of calls refused at random");
    s.sporadic_refusals = f64::from(percent) / 100.0;
    s
}

/// The same scenario against an AI that limits with a token bucket at its rate.
fn token_bucket(mut s: Scenario) -> Scenario {
    let rate = s.ai_rate();
    if let AiLimit::Window { .. } = s.ai_limit {
        s.ai_limit = AiLimit::TokenBucket {
            per_second: rate,
            burst: rate,
        };
    }
    s.name = format!("{} (AI: token bucket)", s.name);
    s
}

/// The same scenario with `max_concurrency` set to `n`.
fn invocations(mut s: Scenario, n: usize) -> Scenario {
    s.queue.max_concurrency = n;
    s.name = format!("{} [max_concurrency {n}]", s.name);
    s
}

fn run_timed(s: &Scenario) -> (Report, f64) {
    let started = Instant::now();
    let r = run(s);
    (r, started.elapsed().as_secs_f64())
}

/// Asserts the goal every scenario shares: every image tagged, none failed or stuck.
fn no_failures(r: &Report) {
    assert_eq!((r.failed, r.unfinished), (0, 0), "{r:#?}");
    assert_eq!(r.done, r.images, "{r:#?}");
}

#[test]
fn a_burst_drains_at_the_ai_rate_under_the_old_conditions() {
    for s in [burst(2_000).before(), token_bucket(burst(2_000).before())] {
        let r = run(&s);
        no_failures(&r);
        // At this size the tail counts: the last messages' waits are rounded up to whole
        // seconds, and their partial batch waits out `max_batch_timeout`.
        let tail = s.queue.batch_timeout_ms as f64 / 1000.0 + 2.0;
        assert!(r.drain_s <= 1.1 * r.bound_s + tail, "{r:#?}");
        assert!(r.per_image(r.refused_calls) <= 0.1, "{r:#?}");
    }
}

#[test]
fn a_burst_of_photos_under_the_new_conditions_loses_nothing() {
    for s in [
        burst(2_000),
        burst(2_000).pacer_at(1.2),
        burst(2_000).pacer_at(0.5),
    ] {
        let r = run(&s);
        no_failures(&r);
    }
}

#[test]
fn an_outage_under_steady_load_loses_nothing() {
    for s in [outage(4, 30).before(), token_bucket(outage(4, 30).before())] {
        let r = run(&s);
        no_failures(&r);
        assert!(r.drain_factor() <= 1.3, "{r:#?}");
        assert!(r.per_image(r.refused_calls) <= 0.1, "{r:#?}");
    }
}

#[test]
fn miniflare_burst_meets_the_integration_goals() {
    let s = Scenario::miniflare_burst();
    let bound = s.bound_s();
    // At 150 images one unlucky clump moves the drain by seconds: judge five seeds.
    let mut drains: Vec<f64> = (1..=5)
        .map(|seed| {
            let r = run(&Scenario { seed, ..s.clone() });
            no_failures(&r);
            assert!(r.per_image(r.refused_calls) <= 0.5, "{r:#?}");
            assert!(r.drain_s <= 1.4 * bound, "{r:#?}");
            r.drain_s
        })
        .collect();
    drains.sort_by(f64::total_cmp);
    assert!(drains[2] <= 1.25 * bound, "{}: {drains:?}", s.name);
}

#[test]
fn miniflare_outage_recovers_within_a_minute() {
    let r = run(&Scenario::miniflare_outage());
    no_failures(&r);
    assert!(r.done_after_outage_s.is_some_and(|s| s <= 60.0), "{r:#?}");
}

#[test]
fn runs_are_deterministic() {
    let s = Scenario::miniflare_burst();
    assert_eq!(run(&s), run(&s));
    let other = Scenario {
        seed: 2,
        ..s.clone()
    };
    assert_ne!(run(&s), run(&other));
}

/// Pins the batch code: the exact log lines of a small scenario with refusals, walls,
/// deferrals and re-sends, as `shared::tagging::batch::consume` writes them (through the
/// simulation's `Io::log`). A change to the orchestration changes these counts, and since the
/// worker and the simulation call that one function, it changes them for both.
#[test]
fn the_batch_code_is_pinned_by_a_small_scenario() {
    // Long enough an outage that the queue's retries run low and messages are re-sent.
    let mut s = Scenario::miniflare_outage();
    s.outages = vec![(0, 240)];
    let r = run(&s);
    let counts: Vec<(&str, u64)> = r.outcomes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        (
            counts.as_slice(),
            r.ai_calls,
            r.refused_calls,
            r.pacer_calls
        ),
        (
            PINNED_OUTCOMES,
            PINNED_AI_CALLS,
            PINNED_REFUSED,
            PINNED_PACER_CALLS
        ),
        "{r:#?}"
    );
}

/// The log lines of that run, by outcome (from `batch::consume`, through `Io::log`).
const PINNED_OUTCOMES: &[(&str, u64)] = &[("deferred", 430), ("done", 10), ("resent", 40)];
const PINNED_AI_CALLS: u64 = 81;
const PINNED_REFUSED: u64 = 71;
const PINNED_PACER_CALLS: u64 = 143;

/// The worker's consumer and the simulation both call the core's batch function, and
/// neither keeps an orchestration of its own (the policy's entry points are called only in
/// `tagging/batch.rs`).
#[test]
fn the_worker_and_the_simulation_run_the_same_batch_function() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let consumer = read("crates/tagger-worker/src/consumer.rs");
    let sim = read("crates/shared/tests/sim/mod.rs");
    for (name, text) in [("consumer.rs", &consumer), ("sim/mod.rs", &sim)] {
        assert!(
            text.contains("batch::consume(") && text.contains("use shared::tagging::batch::"),
            "{name} calls shared::tagging::batch::consume"
        );
        for copy in [
            "decide(",
            "group(",
            "buffer_unordered",
            "for_each_concurrent",
            "jitter_seed",
        ] {
            assert!(
                !text.contains(copy),
                "{name} has `{copy}`: the orchestration lives in tagging/batch.rs only"
            );
        }
    }
}

/// The Miniflare scenarios are the deployed config with the integration tests' own settings,
/// and those settings are the tests' (read from the test files).
#[test]
fn the_miniflare_scenarios_agree_with_the_config_and_the_tests() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let config = Config::tagger();
    // The config file, read by the small parser, against a few fields by name.
    let toml = read("wrangler.tagger.toml");
    for needle in [
        format!("max_batch_size = {}", config.queue.batch_size),
        format!("max_retries = {}", config.queue.max_retries),
        format!(
            "RETRY_BASE_SECONDS = \"{}\"",
            config.get(config::RETRY_BASE_SECONDS)
        ),
    ] {
        assert!(toml.contains(&needle), "{needle}");
    }
    for s in [Scenario::miniflare_burst(), Scenario::miniflare_outage()] {
        assert_eq!(s.queue.batch_size, config.queue.batch_size, "{}", s.name);
        assert_eq!(s.queue.max_retries, config.queue.max_retries, "{}", s.name);
        assert_eq!(
            s.policy.backoff.base_seconds,
            config.get(config::RETRY_BASE_SECONDS)
        );
        assert_eq!(s.policy.max_retries, config.get(config::MAX_RETRIES));
        assert_eq!(s.concurrency, config.get(config::CONCURRENCY));
        assert_eq!(
            s.queue.batch_timeout_ms,
            miniflare::BATCH_TIMEOUT_S * 1000,
            "the tests' FAST_QUEUES"
        );
        // Miniflare runs one batch of a queue at a time.
        assert_eq!(s.queue.max_concurrency, 1);
    }
    let helpers = read("tests/support/helpers.mjs");
    assert!(helpers.contains(&format!(
        "FAST_QUEUES = Object.freeze({{ \"*\": {{ maxBatchTimeout: {} }} }})",
        miniflare::BATCH_TIMEOUT_S
    )));
    let limits = read("tests/ai-limits.test.mjs");
    for needle in [
        format!("const N = {};", miniflare::BURST_N),
        format!("const RATE = {};", miniflare::BURST_RATE),
        "AI_REQUESTS_PER_SECOND: String(RATE)".to_string(),
        "rateLimit: { perSecond: RATE }".to_string(),
        format!("const N = {};", miniflare::OUTAGE_N),
        format!(
            "const OUTAGE_MS = {}_{:03};",
            miniflare::OUTAGE_MS / 1000,
            miniflare::OUTAGE_MS % 1000
        ),
        format!(
            "const COOLDOWN_MAX_S = {};",
            miniflare::OUTAGE_COOLDOWN_MAX_S
        ),
        "AI_COOLDOWN_MAX_SECONDS: String(COOLDOWN_MAX_S)".to_string(),
    ] {
        assert!(limits.contains(&needle), "ai-limits.test.mjs: {needle}");
    }
    let burst = Scenario::miniflare_burst();
    assert_eq!(
        burst.pacer.rate_per_second,
        f64::from(miniflare::BURST_RATE)
    );
    assert!(
        matches!(burst.ai_limit, AiLimit::TokenBucket { per_second, burst }
        if per_second == f64::from(miniflare::BURST_RATE) && burst == per_second)
    );
}

fn print(r: &Report, seconds: f64) {
    println!("{}", r.row());
    eprintln!(
        "    {seconds:.1} s to run ({} events): {} AI calls, {} refused; {} writes, {} reads, {} deletes, {} re-sends; {} pacer calls; peak {} reads/s, {} pacer calls/s, {} invocations; last done {:?} s after the outage; {:?}",
        r.events,
        r.ai_calls,
        r.refused_calls,
        r.queue_writes,
        r.queue_reads,
        r.queue_deletes,
        r.resends,
        r.pacer_calls,
        r.peak_reads_per_s,
        r.peak_pacer_calls_per_s,
        r.peak_invocations,
        r.done_after_outage_s.map(f64::round),
        r.outcomes,
    );
}

/// The tables of BENCHMARKS.md: each scenario under the simulation's old conditions and
/// under the new ones (per-minute AI, delay and skew, measured preparation, gradual
/// scale-up), then the two mis-set pacers.
#[test]
#[ignore = "minutes in release"]
fn benchmark_table() {
    let only = std::env::var("SIM").unwrap_or_default();
    let scenarios = [
        burst(10_000),
        burst(100_000),
        burst(1_000_000),
        outage(30, 600),
        sporadic(10_000, 1),
        sporadic(10_000, 5),
        sporadic(10_000, 20),
    ];
    let mut all: Vec<Scenario> = Vec::new();
    for s in &scenarios {
        all.push(s.clone().before());
        all.push(s.clone());
    }
    for s in [burst(10_000), burst(100_000), outage(30, 600)] {
        all.push(s.clone().pacer_at(1.2));
        all.push(s.pacer_at(0.5));
    }
    all.push(token_bucket(burst(100_000)));
    // The previous `max_concurrency` (10), and a little less and more than the deployed one.
    for s in [burst(10_000), burst(100_000), outage(30, 600)] {
        all.push(invocations(s, 10));
    }
    for n in [20, 30] {
        all.push(invocations(burst(10_000), n));
    }
    // Small images (the old conditions) at the deployed `max_concurrency`: what 25 costs them.
    for s in [burst(100_000), sporadic(10_000, 1)] {
        all.push(invocations(s.before(), 25));
    }
    all.push(Scenario::miniflare_burst());
    all.push(Scenario::miniflare_outage());
    let json = raw_json_wanted(&only);
    let mut summary = BTreeMap::new();
    let mut rows = Vec::new();
    println!("{}", Report::HEADER);
    for s in all.iter().filter(|s| s.name.contains(&only)) {
        let (r, seconds) = run_timed(s);
        print(&r, seconds);
        summary.insert(r.name.clone(), (r.failed, r.unfinished));
        if json {
            rows.push(report_json(&r, seconds));
        }
    }
    eprintln!("failed / unfinished: {summary:?}");
    if json {
        write_raw_json(
            "simulation-results.json",
            "cargo test -p shared --release --test simulation -- --ignored --nocapture benchmark_table",
            serde_json::json!({ "seed": Scenario::production("", Load::Burst(1)).seed, "rows": rows }),
        );
    }
}

/// How much the small scenarios move with the seed, as min / median / max of the drain time
/// over ten seeds.
#[test]
#[ignore = "seconds in release"]
fn seed_spread() {
    let json = raw_json_wanted("");
    let mut rows = Vec::new();
    for s in [
        burst(2_000).before(),
        burst(2_000),
        burst(10_000),
        outage(4, 30),
        Scenario::miniflare_burst(),
        Scenario::miniflare_outage(),
    ] {
        let mut runs: Vec<Report> = (1..=10)
            .map(|seed| run(&Scenario { seed, ..s.clone() }))
            .collect();
        runs.sort_by(|a, b| a.drain_s.total_cmp(&b.drain_s));
        let refused = runs.iter().map(|r| r.per_image(r.refused_calls));
        let failed: u64 = runs.iter().map(|r| r.failed + r.unfinished).sum();
        if json {
            rows.push(serde_json::json!({
                "name": s.name,
                "seeds": "1 to 10, ordered by drain",
                "drain_s": runs.iter().map(|r| r.drain_s).collect::<Vec<_>>(),
                "bound_s": runs.iter().map(|r| r.bound_s).collect::<Vec<_>>(),
                "refused_per_image": runs.iter().map(|r| r.per_image(r.refused_calls)).collect::<Vec<_>>(),
                "failed_or_unfinished": failed,
            }));
        }
        println!(
            "| {} | {:.0} / {:.0} / {:.0} | {:.0} | {:.3} | {:.4} | {failed} |",
            s.name,
            runs[0].drain_s,
            runs[5].drain_s,
            runs[9].drain_s,
            runs[0].bound_s,
            runs[9].drain_factor(),
            refused.fold(0.0, f64::max),
        );
    }
    if json {
        write_raw_json(
            "simulation-seeds.json",
            "cargo test -p shared --release --test simulation -- --ignored --nocapture seed_spread",
            serde_json::json!({ "rows": rows }),
        );
    }
}

/// Whether to write the raw JSON (`SIM_JSON=1`); only a full table may be written.
fn raw_json_wanted(only: &str) -> bool {
    let wanted = std::env::var("SIM_JSON").is_ok_and(|v| v == "1");
    assert!(
        !wanted || only.is_empty(),
        "SIM_JSON=1 records the whole table: unset SIM"
    );
    wanted
}

/// One scenario's figures, as `bench/simulation-results.json` keeps them.
fn report_json(r: &Report, seconds: f64) -> serde_json::Value {
    serde_json::json!({
        "name": r.name,
        "images": r.images,
        "failed": r.failed,
        "unfinished": r.unfinished,
        "drain_s": r.drain_s,
        "bound_s": r.bound_s,
        "ai_calls": r.ai_calls,
        "refused_calls": r.refused_calls,
        "queue_ops": r.queue_ops(),
        "resends": r.resends,
        "pacer_calls": r.pacer_calls,
        "max_deliveries": r.max_deliveries,
        "latency_s": [r.latency_p50_s, r.latency_p99_s, r.latency_max_s],
        "peak_invocations": r.peak_invocations,
        "seconds_to_run": seconds,
    })
}

/// Writes `bench/<file>`: the run's date, commit and command, then `body`'s fields.
fn write_raw_json(file: &str, command: &str, body: serde_json::Value) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dirty = !git(&[
        "status",
        "--porcelain",
        "--",
        "crates/shared",
        "wrangler.tagger.toml",
    ])
    .is_empty();
    let mut json = serde_json::json!({
        "date": utc_now(),
        "commit": git(&["rev-parse", "--short", "HEAD"]),
        "uncommittedChanges": dirty,
        "command": format!("SIM_JSON=1 {command}"),
    });
    if let (Some(json), serde_json::Value::Object(body)) = (json.as_object_mut(), body) {
        json.extend(body);
    }
    let path = format!("{root}/bench/{file}");
    let text = serde_json::to_string_pretty(&json).unwrap() + "\n";
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote bench/{file}");
}

/// Now, as `YYYY-MM-DDTHH:MM:SS.sssZ` (the pipeline's own timestamps).
fn utc_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    shared::wire::time::format_ms(ms as u64)
}
