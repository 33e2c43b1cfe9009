//! Peak heap use and time of `imaging::normalise` on image files.
//!
//! ```text
//! cargo run --release -p imaging --example imaging_peak -- FILE...
//! ```
//!
//! For each file it prints the format and size, the outcome, the peak heap above what was
//! allocated before the call (a counting global allocator), and the wall time, twice: once
//! with the file in memory (`normalise_bytes`; the file's own bytes are not counted) and once
//! read through a 64 KiB `BufReader<File>` (`normalise`).
//!
//! Times are the best of `IMAGING_REPS` runs (default 3), wall clock and, on Linux, the
//! process's CPU time (all threads, 10 ms ticks), which a busy machine disturbs less.
//!
//! `IMAGING_MAX_DECODE_MIB=N` raises `Limits::max_decode_bytes`, to see what images refused by
//! the default budget would cost.
//!
//! Natively, `jpeg-decoder` decodes components on threads (wasm has none); the peaks are
//! close to wasm's but not identical.

#[path = "../tests/counting_alloc/mod.rs"]
mod counting_alloc;

use imaging::{normalise, normalise_bytes, Limits, Normalised};
use std::time::Instant;

/// The process's user plus system CPU time in ms (Linux), 0 elsewhere.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and
    // 13th, in ticks of (almost everywhere) 10 ms.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) * 10.0
}

/// Runs `f` `reps` times: its last result, the peak heap above the start in MiB, and the best
/// wall and CPU milliseconds.
fn measure<T>(reps: usize, mut f: impl FnMut() -> T) -> (T, f64, f64, f64) {
    let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
    let (out, peak) = counting_alloc::peak(|| {
        let mut out = f();
        for _ in 0..reps {
            let (start, cpu_start) = (Instant::now(), cpu_ms());
            out = f();
            wall = wall.min(start.elapsed().as_secs_f64() * 1000.0);
            cpu = cpu.min(cpu_ms() - cpu_start);
        }
        out
    });
    (out, peak as f64 / (1 << 20) as f64, wall, cpu)
}

fn describe(result: &Result<Normalised, imaging::ImageError>) -> String {
    match result {
        Ok(Normalised::Unchanged(i)) => format!("unchanged {}x{}", i.width, i.height),
        Ok(Normalised::Jpeg {
            bytes,
            width,
            height,
            source,
        }) => format!(
            "{:?} {}x{} -> JPEG {width}x{height}, {} KiB",
            source.format,
            source.width,
            source.height,
            bytes.len() / 1024
        ),
        Err(e) => e.to_string(),
    }
}

fn main() {
    let mut limits = Limits::default();
    if let Some(mib) = env_number("IMAGING_MAX_DECODE_MIB") {
        limits.max_decode_bytes = mib << 20;
    }
    let reps = env_number("IMAGING_REPS").unwrap_or(3) as usize;
    for path in std::env::args().skip(1) {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let bytes = std::fs::read(&path).unwrap_or_default();
        let (result, peak, wall, cpu) = measure(reps, || normalise_bytes(&bytes, &limits));
        println!(
            "{path} ({:.1} MiB)\n  bytes:  {}; peak {peak:.1} MiB, {wall:.0} ms, CPU {cpu:.0} ms",
            len as f64 / (1 << 20) as f64,
            describe(&result)
        );
        drop(bytes);
        let (result, peak, wall, cpu) = measure(reps, || match std::fs::File::open(&path) {
            Ok(file) => normalise(
                std::io::BufReader::with_capacity(64 << 10, file),
                len,
                &limits,
            ),
            Err(e) => Err(imaging::ImageError::Read(e.to_string())),
        });
        println!(
            "  reader: {}; peak {peak:.1} MiB, {wall:.0} ms, CPU {cpu:.0} ms",
            describe(&result)
        );
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
