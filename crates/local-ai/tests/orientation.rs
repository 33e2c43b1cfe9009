//! Upright images: each photo stored in each of the 8 EXIF orientations (the pixels turned the
//! way a camera would store them, plus the matching tag) is normalised as the tagger does
//! (`imaging::normalise`) and classified by the real offline classifier. The top label must be
//! the upright photo's. The table also shows what the model saw before orientations were
//! applied (the stored pixels as they are).

mod common;

use image::{imageops, RgbImage};
use imaging::{normalise_bytes, Limits, Normalised};
use local_ai::Classifier;

/// `img` as a quality-92 JPEG with an APP1 `Exif` segment (little-endian TIFF) holding
/// `orientation`, or none when it is 0.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut plain = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 92)
        .encode_image(img)
        .expect("JPEG encoding");
    if orientation == 0 {
        return plain;
    }
    let mut payload = b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
    payload.extend_from_slice(&orientation.to_le_bytes());
    payload.extend_from_slice(&[0; 6]);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// How a camera stores `upright` so that `orientation` shows it upright.
fn stored_as(upright: &RgbImage, orientation: u16) -> RgbImage {
    match orientation {
        2 => imageops::flip_horizontal(upright),
        3 => imageops::rotate180(upright),
        4 => imageops::flip_vertical(upright),
        5 => imageops::flip_horizontal(&imageops::rotate90(upright)),
        6 => imageops::rotate270(upright),
        7 => imageops::flip_horizontal(&imageops::rotate270(upright)),
        8 => imageops::rotate90(upright),
        _ => upright.clone(),
    }
}

/// What the tagger sends to the model.
fn as_sent(file: &[u8]) -> Vec<u8> {
    match normalise_bytes(file, &Limits::default()).expect("normalises") {
        Normalised::Unchanged(_) => file.to_vec(),
        Normalised::Jpeg { bytes, .. } => bytes,
    }
}

#[test]
fn every_orientation_classifies_like_the_upright_photo() {
    let Some(dir) = common::model_dir() else {
        return;
    };
    let classifier = Classifier::load(&dir).expect("the model loads");
    let top = |bytes: &[u8]| {
        let p = classifier.classify_bytes(bytes).expect("classifies");
        (p[0].label.clone(), p[0].score)
    };
    println!("| photo | orientation | top-1 as stored (before) | top-1 as sent (upright) |");
    println!("|---|---|---|---|");
    for name in ["chelsea.png", "coffee.png"] {
        let bytes = std::fs::read(dir.join(name)).expect("photo");
        let upright = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
        let (want, score) = top(&as_sent(&jpeg_with_orientation(&upright, 1)));
        println!("| {name} | 1 | | {want} {score:.3} |");
        for orientation in 2..=8 {
            let stored = stored_as(&upright, orientation);
            let (before, before_score) = top(&jpeg_with_orientation(&stored, 0));
            let (got, got_score) = top(&as_sent(&jpeg_with_orientation(&stored, orientation)));
            println!(
                "| {name} | {orientation} | {before} {before_score:.3} | {got} {got_score:.3} |"
            );
            assert_eq!(got, want, "{name}, orientation {orientation}");
        }
    }
}
