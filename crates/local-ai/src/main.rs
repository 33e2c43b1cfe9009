//! `local-ai`: an offline stand-in for Workers AI `@cf/microsoft/resnet-50` (see `--help`).

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use local_ai::{default_model_dir, server, Classifier, EMULATED_MODEL, TOP_K};

const DEFAULT_ADDR: &str = "127.0.0.1:8788";

const USAGE: &str = "\
local-ai: offline stand-in for Workers AI @cf/microsoft/resnet-50 (a real EfficientNet-Lite0
ImageNet classifier, pure Rust). Set up the model first with scripts/fetch-model.sh.

USAGE:
  local-ai serve [--addr HOST:PORT] [--model-dir DIR] [--threads N] [--quiet]
  local-ai classify FILE... [--model-dir DIR] [--threads N] [--repeat N]
  local-ai help

SERVE:
  POST /run (or POST /, POST /run/@cf/microsoft/resnet-50)
       body {\"model\": \"@cf/microsoft/resnet-50\", \"image\": [u8, ...]} or raw image bytes
       -> 200 [{\"label\": \"EGYPTIAN CAT\", \"score\": 0.38}, ...] (top 5)
       -> 400 {\"errors\":[{\"code\":5006,\"message\":\"5006: Invalid image: ...\"}]}
  GET /healthz -> {\"ok\":true,\"model\":\"efficientnet-lite0\"}

ENVIRONMENT:
  LOCAL_AI_ADDR       listen address (default 127.0.0.1:8788)
  LOCAL_AI_PORT       port on 127.0.0.1, when LOCAL_AI_ADDR is not set
  LOCAL_AI_MODEL_DIR  model directory (default ${IMAGE_TAGGER_CACHE:-$HOME/.cache/image-tagger}/model)
  LOCAL_AI_THREADS    threads per classification (default: all cores)
";

/// Parsed command line.
struct Args {
    command: String,
    files: Vec<PathBuf>,
    addr: Option<String>,
    model_dir: Option<PathBuf>,
    threads: Option<usize>,
    repeat: usize,
    quiet: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        command: String::new(),
        files: Vec::new(),
        addr: None,
        model_dir: None,
        threads: None,
        repeat: 1,
        quiet: false,
    };
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => a.command = "help".into(),
            "--addr" => a.addr = Some(value("--addr")?),
            "--model-dir" => a.model_dir = Some(PathBuf::from(value("--model-dir")?)),
            "--threads" => {
                let v = value("--threads")?;
                a.threads = Some(
                    v.parse()
                        .map_err(|_| format!("--threads: not a number: {v}"))?,
                );
            }
            "--repeat" => {
                let v = value("--repeat")?;
                a.repeat = v
                    .parse::<usize>()
                    .map_err(|_| format!("--repeat: not a number: {v}"))?
                    .max(1);
            }
            "--quiet" | "-q" => a.quiet = true,
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ if a.command.is_empty() => a.command = arg,
            _ => a.files.push(PathBuf::from(arg)),
        }
    }
    if a.command.is_empty() {
        a.command = "help".into();
    }
    Ok(a)
}

fn env_nonempty(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

fn load(args: &Args) -> Result<Classifier, String> {
    let dir = args.model_dir.clone().unwrap_or_else(default_model_dir);
    let t0 = Instant::now();
    let mut c = Classifier::load(&dir).map_err(|e| e.to_string())?;
    let threads = match args.threads {
        Some(t) => Some(t),
        None => match env_nonempty("LOCAL_AI_THREADS") {
            Some(v) => Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("LOCAL_AI_THREADS: not a number: {v}"))?,
            ),
            None => None,
        },
    };
    if let Some(t) = threads {
        c.set_threads(t);
    }
    eprintln!(
        "local-ai: loaded EfficientNet-Lite0 from {} in {} ms",
        dir.display(),
        t0.elapsed().as_millis()
    );
    Ok(c)
}

fn listen_addr(args: &Args) -> Result<String, String> {
    if let Some(a) = &args.addr {
        return Ok(a.clone());
    }
    if let Some(a) = env_nonempty("LOCAL_AI_ADDR") {
        return Ok(a);
    }
    if let Some(p) = env_nonempty("LOCAL_AI_PORT") {
        let port: u16 = p
            .trim()
            .parse()
            .map_err(|_| format!("LOCAL_AI_PORT: not a port: {p}"))?;
        return Ok(format!("127.0.0.1:{port}"));
    }
    Ok(DEFAULT_ADDR.to_string())
}

/// Restores the default action (terminate) for SIGINT and SIGTERM: a non-interactive shell
/// starts background jobs with SIGINT ignored, which would make `kill -INT` a no-op. The
/// server keeps no state worth saving and starts no child processes, so dying is clean.
#[cfg(unix)]
fn default_signal_actions() {
    extern "C" {
        fn signal(signum: std::os::raw::c_int, handler: usize) -> usize;
    }
    const SIGINT: std::os::raw::c_int = 2;
    const SIGTERM: std::os::raw::c_int = 15;
    const SIG_DFL: usize = 0;
    // SAFETY: installing SIG_DFL runs no code of ours in signal context; it only resets the
    // dispositions of two standard signals (same numbers on Linux and macOS).
    unsafe {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_signal_actions() {}

fn serve(args: &Args) -> Result<(), String> {
    if let Some(extra) = args.files.first() {
        return Err(format!(
            "serve takes no FILE arguments (got {})",
            extra.display()
        ));
    }
    default_signal_actions();
    let addr = listen_addr(args)?;
    let classifier = load(args)?;
    let listener = TcpListener::bind(&addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
    println!(
        "local-ai: EfficientNet-Lite0 (stand-in for {EMULATED_MODEL}) listening on http://{bound}"
    );
    let _ = std::io::stdout().flush();
    let opts = server::Options {
        log: !args.quiet,
        ..server::Options::default()
    };
    server::serve(listener, Arc::new(classifier), opts).map_err(|e| format!("server failed: {e}"))
}

/// `(first, median, min)` of the durations, in milliseconds.
fn stats(times: &[Duration]) -> (f64, f64, f64) {
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let mut sorted = times.to_vec();
    sorted.sort();
    (
        times.first().map(ms).unwrap_or(0.0),
        sorted.get(sorted.len() / 2).map(ms).unwrap_or(0.0),
        sorted.first().map(ms).unwrap_or(0.0),
    )
}

fn classify(args: &Args) -> Result<(), String> {
    if args.files.is_empty() {
        return Err("classify needs at least one FILE".into());
    }
    let classifier = load(args)?;
    let mut failed = 0;
    for file in &args.files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let mut times: Vec<Duration> = Vec::new();
        let mut totals: Vec<Duration> = Vec::new();
        let mut result = None;
        for _ in 0..args.repeat {
            let t0 = Instant::now();
            match classifier.classify_timed(&bytes, TOP_K) {
                Ok((preds, t)) => {
                    times.push(t);
                    totals.push(t0.elapsed());
                    result = Some(preds);
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    break;
                }
            }
        }
        let Some(preds) = result else {
            failed += 1;
            continue;
        };
        let timing = if times.len() > 1 {
            let (first, median, min) = stats(&times);
            let (_, total_median, _) = stats(&totals);
            format!(
                "inference: first {first:.1} ms, median {median:.1} ms, min {min:.1} ms over {} runs; \
                 with decoding and resizing: median {total_median:.1} ms",
                times.len()
            )
        } else {
            let (t, total) = (stats(&times).0, stats(&totals).0);
            format!("inference: {t:.1} ms; with decoding and resizing: {total:.1} ms")
        };
        println!("{} ({timing})", file.display());
        for p in &preds {
            println!("  {:.4}  {}", p.score, p.label);
        }
    }
    if failed > 0 {
        Err(format!("{failed} file(s) failed"))
    } else {
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("local-ai: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_str() {
        "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "serve" => serve(&args),
        "classify" => classify(&args),
        other => {
            eprintln!("local-ai: unknown command {other}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-ai: {e}");
            ExitCode::FAILURE
        }
    }
}
