//! The library API on real photos: scikit-image's `chelsea` (a cat) and `coffee`. The expected
//! scores are those of the reference preprocessing and of every version of this crate so far.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use local_ai::{Classifier, Prediction};

fn setup() -> Option<(&'static Classifier, PathBuf)> {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    let dir = common::model_dir()?;
    Some((
        CLASSIFIER.get_or_init(|| Classifier::load(&dir).unwrap()),
        dir,
    ))
}

fn assert_top(preds: &[Prediction], want: &[(&str, f32)]) {
    println!("{preds:?}");
    assert_eq!(preds.len(), 5);
    assert!(preds.windows(2).all(|w| w[0].score >= w[1].score), "sorted");
    for (p, &(label, score)) in preds.iter().zip(want) {
        assert_eq!(p.label, label);
        assert!((p.score - score).abs() < 0.002, "{p:?}, expected {score}");
    }
}

fn is_cat(p: &Prediction) -> bool {
    p.label.contains("CAT") || p.label == "TABBY"
}

#[test]
fn real_photos_get_the_reference_scores() {
    let Some((classifier, dir)) = setup() else {
        return;
    };
    let chelsea = std::fs::read(dir.join("chelsea.png")).unwrap();
    let want = [
        ("EGYPTIAN CAT", 0.3885),
        ("TIGER CAT", 0.3259),
        ("TABBY", 0.1717),
    ];
    assert_top(&classifier.classify_bytes(&chelsea).unwrap(), &want);
    let coffee = std::fs::read(dir.join("coffee.png")).unwrap();
    assert_top(
        &classifier.classify_bytes(&coffee).unwrap(),
        &[("ESPRESSO", 0.9443)],
    );
}

#[test]
fn rgb_pixels_other_formats_and_smaller_copies() {
    let Some((classifier, dir)) = setup() else {
        return;
    };
    let img = image::open(dir.join("chelsea.png")).unwrap().into_rgb8();
    let (w, h) = img.dimensions();
    let from_file = classifier.classify_bytes(&std::fs::read(dir.join("chelsea.png")).unwrap());
    assert_eq!(classifier.classify_rgb(w, h, img.as_raw()), from_file);
    let half = image::imageops::thumbnail(&img, w / 2, h / 2);
    let preds = classifier
        .classify_rgb(w / 2, h / 2, half.as_raw())
        .unwrap();
    assert!(is_cat(&preds[0]), "half size: {preds:?}");
    for format in [
        image::ImageFormat::Jpeg,
        image::ImageFormat::Gif,
        image::ImageFormat::WebP,
    ] {
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        let preds = classifier.classify_bytes(bytes.get_ref()).unwrap();
        assert!(preds[..3].iter().any(is_cat), "{format:?}: {preds:?}");
    }
}

#[test]
fn what_is_not_an_image_is_an_error() {
    let Some((classifier, _)) = setup() else {
        return;
    };
    for bytes in [
        &b""[..],
        b"definitely not an image",
        b"\x89PNG\r\n\x1a\n\0\0",
    ] {
        assert!(classifier.classify_bytes(bytes).is_err(), "{bytes:?}");
    }
    assert!(classifier.classify_rgb(2, 2, &[0; 11]).is_err());
    assert!(classifier.classify_rgb(0, 0, &[]).is_err());
}
