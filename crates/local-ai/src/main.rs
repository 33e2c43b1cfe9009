//! `local-ai`: the offline stand-in for Workers AI `@cf/microsoft/resnet-50` (see `USAGE`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use local_ai::{default_model_dir, Classifier, EMULATED_MODEL};

const USAGE: &str = "\
usage: local-ai serve [--addr HOST:PORT] [--model-dir DIR] [--threads N] [--quiet]
       local-ai classify FILE... [--model-dir DIR] [--threads N] [--repeat N]

serve     answers POST /run like Workers AI (see crates/local-ai/README.md); prints
          `... listening on http://ADDR` when ready (--addr defaults to 127.0.0.1:8788)
classify  prints each image's top 5 and the time per classification
--model-dir defaults to $LOCAL_AI_MODEL_DIR, else ${IMAGE_TAGGER_CACHE:-$HOME/.cache/image-tagger}/model,
where scripts/fetch-model.sh puts the weights and labels.";

struct Args {
    command: String,
    files: Vec<String>,
    addr: String,
    model_dir: PathBuf,
    threads: Option<usize>,
    repeat: usize,
    quiet: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        command: String::new(),
        files: Vec::new(),
        addr: "127.0.0.1:8788".into(),
        model_dir: default_model_dir(),
        threads: None,
        repeat: 1,
        quiet: false,
    };
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse().map_err(|_| format!("{arg}: not a number: {v}"));
        match arg.as_str() {
            "--addr" => args.addr = value()?,
            "--model-dir" => args.model_dir = value()?.into(),
            "--threads" => args.threads = Some(number(value()?)?),
            "--repeat" => args.repeat = number(value()?)?,
            "--quiet" => args.quiet = true,
            "-h" | "--help" | "help" => args.command = "help".into(),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if args.command.is_empty() => args.command = arg,
            _ => args.files.push(arg),
        }
    }
    match (args.command.as_str(), args.files.is_empty()) {
        ("serve", true) | ("classify", false) | ("help" | "", _) => Ok(args),
        ("classify", true) => Err("classify needs at least one FILE".into()),
        (command, _) => Err(format!("unexpected {command} {}", args.files.join(" "))),
    }
}

fn load(args: &Args) -> Result<Classifier, String> {
    let started = Instant::now();
    let mut classifier = Classifier::load(&args.model_dir).map_err(|e| e.to_string())?;
    if let Some(threads) = args.threads {
        classifier.set_threads(threads);
    }
    let (dir, ms) = (args.model_dir.display(), started.elapsed().as_millis());
    eprintln!("local-ai: loaded EfficientNet-Lite0 from {dir} in {ms} ms");
    Ok(classifier)
}

fn serve(args: &Args) -> Result<(), String> {
    let classifier = Arc::new(load(args)?);
    let server = tiny_http::Server::http(&args.addr)
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let addr = server.server_addr();
    // The launcher (local/local-ai.mjs) waits for this line and takes the URL from it.
    println!(
        "local-ai: EfficientNet-Lite0 (stand-in for {EMULATED_MODEL}) listening on http://{addr}"
    );
    local_ai::server::serve(&server, classifier, args.quiet);
    Ok(())
}

fn classify(args: &Args) -> Result<(), String> {
    let classifier = load(args)?;
    for file in &args.files {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let (mut top, mut ms) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat.max(1) {
            let started = Instant::now();
            top = classifier
                .classify_bytes(&bytes)
                .map_err(|e| format!("{file}: {e}"))?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        let (median, min, runs) = (ms[ms.len() / 2], ms[0], ms.len());
        let timing = format!("median {median:.1} ms, min {min:.1} ms over {runs} runs");
        println!("{file} ({timing}; decode, resize and inference)");
        for p in top {
            println!("  {:.4}  {}", p.score, p.label);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("local-ai: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command.as_str() {
        "serve" => serve(&args),
        "classify" => classify(&args),
        _ => {
            println!("{USAGE}");
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("local-ai: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
