//! Tests with the real EfficientNet-Lite0 weights and real photos (scikit-image's `chelsea`,
//! a cat, and `coffee`). They FAIL when the model is missing (run scripts/fetch-model.sh),
//! unless LOCAL_AI_SKIP_MODEL_TESTS=1. Run with `--nocapture` to see the rankings and timings.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{model_dir, request, run_body, start_server};
use local_ai::{Classifier, ClassifyError, ImageClassifier};

fn classifier() -> Option<&'static Classifier> {
    static C: OnceLock<Classifier> = OnceLock::new();
    let dir = model_dir()?;
    Some(C.get_or_init(|| Classifier::load(&dir).unwrap()))
}

fn is_cat(label: &str) -> bool {
    label.contains("CAT") || label.contains("TABBY")
}

#[test]
fn chelsea_is_a_cat() {
    let Some(c) = classifier() else { return };
    let bytes = std::fs::read(model_dir().unwrap().join("chelsea.png")).unwrap();
    let (preds, t) = c.classify_timed(&bytes, 5).unwrap();
    println!(
        "chelsea.png top 3 ({:.1} ms inference):",
        t.as_secs_f64() * 1000.0
    );
    for p in &preds[..3] {
        println!("  {:.4}  {}", p.score, p.label);
    }
    assert_eq!(preds.len(), 5);
    assert!(preds.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(preds[..3].iter().any(|p| is_cat(&p.label)), "{preds:?}");
    // The reference ranking: EGYPTIAN CAT ~0.38, TIGER CAT ~0.36, TABBY ~0.17.
    let want = [("EGYPTIAN CAT", 0.38), ("TIGER CAT", 0.36), ("TABBY", 0.17)];
    for (p, (label, score)) in preds.iter().zip(want) {
        assert_eq!(p.label, label, "{preds:?}");
        assert!((p.score - score).abs() < 0.06, "{preds:?}");
    }
}

#[test]
fn coffee_is_espresso() {
    let Some(c) = classifier() else { return };
    let bytes = std::fs::read(model_dir().unwrap().join("coffee.png")).unwrap();
    let (preds, t) = c.classify_timed(&bytes, 5).unwrap();
    println!(
        "coffee.png top 1 ({:.1} ms inference): {:.4} {}",
        t.as_secs_f64() * 1000.0,
        preds[0].score,
        preds[0].label
    );
    assert_eq!(preds[0].label, "ESPRESSO");
    assert!(preds[0].score > 0.85, "{preds:?}");
}

#[test]
fn same_photo_in_other_formats() {
    let Some(c) = classifier() else { return };
    let img = image::open(model_dir().unwrap().join("chelsea.png")).unwrap();
    for fmt in [
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::WebP,
    ] {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        let preds = c.classify(buf.get_ref(), 3).unwrap();
        println!(
            "chelsea as {fmt:?}: {} {:.3}",
            preds[0].label, preds[0].score
        );
        assert!(preds.iter().any(|p| is_cat(&p.label)), "{fmt:?}: {preds:?}");
    }
}

#[test]
fn not_an_image_is_rejected() {
    let Some(c) = classifier() else { return };
    for bytes in [
        &b"definitely not an image"[..],
        b"",
        b"\x89PNG\r\n\x1a\n\x00\x00",
    ] {
        match c.classify(bytes, 5) {
            Err(ClassifyError::InvalidImage(_)) => {}
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
}

#[test]
fn http_end_to_end() {
    let Some(c) = classifier() else { return };
    let addr = start_server(c.clone());
    let bytes = std::fs::read(model_dir().unwrap().join("chelsea.png")).unwrap();
    let t0 = std::time::Instant::now();
    let r = request(
        addr,
        "POST",
        "/run",
        Some("application/json"),
        &run_body("@cf/microsoft/resnet-50", &bytes),
    );
    println!("POST /run (JSON body) took {} ms", t0.elapsed().as_millis());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 5);
    assert!(is_cat(arr[0]["label"].as_str().unwrap()), "{v}");
    let r = request(
        addr,
        "POST",
        "/run",
        Some("application/octet-stream"),
        &bytes,
    );
    assert_eq!(r.json(), v, "raw and JSON bodies must agree");
    let r = request(
        addr,
        "POST",
        "/run",
        Some("application/octet-stream"),
        b"GIF89a...",
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("5006: Invalid image: "));
}

#[test]
fn binary_serves_and_classifies() {
    let Some(dir) = model_dir() else { return };
    let bin = env!("CARGO_BIN_EXE_local-ai");
    // classify
    let out = Command::new(bin)
        .arg("classify")
        .arg(dir.join("chelsea.png"))
        .arg("--model-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("EGYPTIAN CAT") && stdout.contains("ms"),
        "{stdout}"
    );
    // serve on an ephemeral port; the first stdout line names the address.
    let mut child = Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1:0", "--quiet", "--model-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let prefix =
            "local-ai: EfficientNet-Lite0 (stand-in for @cf/microsoft/resnet-50) listening on http://";
        assert!(line.starts_with(prefix), "{line:?}");
        let addr = line[prefix.len()..].trim().parse().unwrap();
        let r = request(addr, "GET", "/healthz", None, b"");
        assert_eq!(r.status, 200);
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
