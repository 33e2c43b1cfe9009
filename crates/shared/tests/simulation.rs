//! The tagger's pacing and retry policy under Cloudflare Queues, simulated (see `sim`).
//!
//! The small runs below assert the goals on every `cargo test`; the figures of
//! BENCHMARKS.md come from the ignored `benchmark_table`, in release:
//! `cargo test -p shared --release --test simulation -- --ignored --nocapture`
//! (`SIM=<text>` keeps only the scenarios whose name contains it).

mod sim;

use std::time::Instant;

use sim::{run, AiLimit, Load, Report, Scenario};

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

fn miniflare_burst() -> Scenario {
    Scenario::miniflare("Miniflare: 150 at 5/s", Load::Burst(150), 5.0)
}

fn miniflare_outage() -> Scenario {
    let mut s = Scenario::miniflare("Miniflare: 10, AI down 0-60 s", Load::Burst(10), 5.0);
    s.outages = vec![(0, 60)];
    s
}

/// The same scenario against an AI that limits with a token bucket instead of per-second
/// windows.
fn token_bucket(mut s: Scenario) -> Scenario {
    if let AiLimit::Window { calls, .. } = s.ai_limit {
        s.ai_limit = AiLimit::TokenBucket {
            per_second: f64::from(calls),
            burst: f64::from(calls),
        };
    }
    s.name = format!("{} (AI: token bucket)", s.name);
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
fn a_burst_drains_at_the_ai_rate() {
    for s in [burst(2_000), token_bucket(burst(2_000))] {
        let r = run(&s);
        no_failures(&r);
        // At this size the tail counts: the last messages' waits are rounded up to whole
        // seconds, and their partial batch waits out `max_batch_timeout`.
        let tail = s.queue.batch_timeout_ms as f64 / 1000.0 + 2.0;
        assert!(r.drain_s <= 1.1 * r.bound_s + tail, "{r:#?}");
        // A call that reaches a per-second counter a few milliseconds late can be the 51st
        // of its second: a lone refusal, which costs that call a slot and nobody a pause.
        assert!(r.per_image(r.refused_calls) <= 0.1, "{r:#?}");
    }
}

#[test]
fn an_outage_under_steady_load_loses_nothing() {
    for s in [outage(4, 30), token_bucket(outage(4, 30))] {
        let r = run(&s);
        no_failures(&r);
        assert!(r.drain_factor() <= 1.3, "{r:#?}");
        assert!(r.per_image(r.refused_calls) <= 0.1, "{r:#?}");
    }
}

#[test]
fn miniflare_burst_meets_the_integration_goals() {
    for s in [miniflare_burst(), token_bucket(miniflare_burst())] {
        // At 150 images one unlucky clump moves the drain by seconds: judge five seeds.
        let mut drains: Vec<f64> = (1..=5)
            .map(|seed| {
                let r = run(&Scenario { seed, ..s.clone() });
                no_failures(&r);
                assert!(r.per_image(r.refused_calls) <= 0.5, "{r:#?}");
                assert!(r.drain_s <= 1.4 * 30.0, "{r:#?}");
                r.drain_s
            })
            .collect();
        drains.sort_by(f64::total_cmp);
        assert!(drains[2] <= 1.25 * 30.0, "{}: {drains:?}", s.name);
    }
}

#[test]
fn miniflare_outage_recovers_within_a_minute() {
    for s in [miniflare_outage(), token_bucket(miniflare_outage())] {
        let r = run(&s);
        no_failures(&r);
        assert!(r.done_after_outage_s.is_some_and(|s| s <= 60.0), "{r:#?}");
    }
}

#[test]
fn runs_are_deterministic() {
    let s = miniflare_burst();
    assert_eq!(run(&s), run(&s));
    let other = Scenario {
        seed: 2,
        ..s.clone()
    };
    assert_ne!(run(&s), run(&other));
}

/// The table of BENCHMARKS.md: every scenario, against both models of the AI's limit.
#[test]
#[ignore = "a minute in release"]
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
        miniflare_burst(),
        miniflare_outage(),
    ];
    println!("{}", Report::HEADER);
    for s in scenarios
        .iter()
        .cloned()
        .chain(scenarios.iter().cloned().map(token_bucket))
        .filter(|s| s.name.contains(&only))
    {
        let (r, seconds) = run_timed(&s);
        println!("{}", r.row());
        eprintln!(
            "    {seconds:.1} s to run ({} events): {} AI calls, {} refused; {} writes, {} reads, {} deletes, {} re-sends; {} pacer calls; peak {} reads/s, {} pacer calls/s; last done {:?} s after the outage",
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
            r.done_after_outage_s.map(f64::round),
        );
        no_failures(&r);
        if let Load::Burst(1_000_000) = s.load {
            assert!(r.drain_factor() <= 1.1, "{r:#?}");
        }
    }
}

/// How much the small scenarios move with the seed (latencies and arrivals), as
/// min / median / max of the drain time over ten seeds.
#[test]
#[ignore = "seconds in release"]
fn seed_spread() {
    for s in [
        burst(2_000),
        burst(10_000),
        outage(4, 30),
        miniflare_burst(),
        miniflare_outage(),
    ] {
        for s in [s.clone(), token_bucket(s)] {
            let mut runs: Vec<Report> = (1..=10)
                .map(|seed| run(&Scenario { seed, ..s.clone() }))
                .collect();
            runs.iter().for_each(no_failures);
            runs.sort_by(|a, b| a.drain_s.total_cmp(&b.drain_s));
            let refused = runs.iter().map(|r| r.per_image(r.refused_calls));
            println!(
                "| {} | {:.0} / {:.0} / {:.0} | {:.0} | {:.3} | {:.4} |",
                s.name,
                runs[0].drain_s,
                runs[5].drain_s,
                runs[9].drain_s,
                runs[0].bound_s,
                runs[9].drain_factor(),
                refused.fold(0.0, f64::max),
            );
        }
    }
}
