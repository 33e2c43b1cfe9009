//! Fidelity of image normalisation: each photo is classified as uploaded and as the tagger
//! sends it to the model (`imaging::normalise`, shorter side 512 px, JPEG), on the
//! real offline classifier (`crates/local-ai`, EfficientNet-Lite0). Top-1 must be the same;
//! the table prints both top-5s and the largest score difference.
//!
//! The photos are the two that `scripts/fetch-model.sh` brings, and the same two upscaled
//! to 4000 px on their long side and saved as JPEG (the size of a phone photo).

use std::path::PathBuf;

use image::imageops::FilterType;
use imaging::{normalise_bytes, Limits, Normalised};
use local_ai::{Classifier, Prediction};

fn model_dir() -> PathBuf {
    let dir = local_ai::default_model_dir();
    assert!(
        dir.join(local_ai::LABELS_FILE).exists(),
        "{} has no model: run scripts/fetch-model.sh first",
        dir.display()
    );
    dir
}

/// The photo upscaled so that its long side is 4000 px, as a quality-92 JPEG.
fn upscaled(bytes: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(bytes).expect("a test photo decodes");
    let (w, h) = (img.width(), img.height());
    let scale = 4000.0 / f64::from(w.max(h));
    let big = img.resize_exact(
        (f64::from(w) * scale).round() as u32,
        (f64::from(h) * scale).round() as u32,
        FilterType::Lanczos3,
    );
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&big.to_rgb8())
        .expect("JPEG encoding");
    out
}

/// What the tagger would send: the normalised JPEG, or the original when it passes as is.
fn as_sent(bytes: &[u8]) -> (Vec<u8>, String) {
    match normalise_bytes(bytes, &Limits::default()).expect("normalises") {
        Normalised::Unchanged(info) => (
            bytes.to_vec(),
            format!("unchanged {}x{}", info.width, info.height),
        ),
        Normalised::Jpeg {
            bytes,
            width,
            height,
            ..
        } => (bytes, format!("JPEG {width}x{height}")),
    }
}

fn top(predictions: &[Prediction]) -> String {
    predictions
        .iter()
        .map(|p| format!("{} {:.3}", p.label, p.score))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn normalised_photos_classify_like_the_originals() {
    let dir = model_dir();
    let classifier = Classifier::load(&dir).expect("the model loads");
    let mut photos = Vec::new();
    for name in ["chelsea.png", "coffee.png"] {
        let bytes = std::fs::read(dir.join(name)).expect("photo");
        photos.push((
            format!("{name} (upscaled to 4000 px, JPEG)"),
            upscaled(&bytes),
        ));
        photos.insert(0, (name.to_string(), bytes));
    }
    let mut largest = 0.0f32;
    println!("| photo | size | sent | top-5 as uploaded | top-5 as sent | largest difference |");
    println!("|---|---|---|---|---|---|");
    for (name, bytes) in &photos {
        let original = classifier
            .classify_bytes(bytes)
            .expect("the original classifies");
        let (sent, how) = as_sent(bytes);
        let normalised = classifier
            .classify_bytes(&sent)
            .expect("what is sent classifies");
        let diff = original
            .iter()
            .map(|p| {
                let other = normalised
                    .iter()
                    .find(|q| q.label == p.label)
                    .map_or(0.0, |q| q.score);
                (p.score - other).abs()
            })
            .fold(0.0f32, f32::max);
        largest = largest.max(diff);
        println!(
            "| {name} | {:.1} MB | {how}, {:.0} KB | {} | {} | {diff:.3} |",
            bytes.len() as f64 / 1e6,
            sent.len() as f64 / 1e3,
            top(&original),
            top(&normalised)
        );
        assert_eq!(
            original[0].label, normalised[0].label,
            "{name}: top-1 must not change"
        );
    }
    println!("largest top-5 score difference: {largest:.3}");
}
