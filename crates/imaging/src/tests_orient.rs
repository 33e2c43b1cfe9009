//! EXIF orientation: a real photo stored in each of the 8 orientations normalises to the
//! upright photo's output; turned small images are no longer sent unchanged.

use super::*;
use image::{imageops, RgbImage};

const PHOTO: &[u8] = include_bytes!("testdata/lossy.webp"); // 1024 x 768
const EXIF_WEBP: &[u8] = include_bytes!("testdata/lossy-exif.webp"); // 200 x 100, orientation 1

/// A TIFF structure whose IFD0 holds one orientation entry.
fn tiff(orientation: u16, big: bool) -> Vec<u8> {
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut t = Vec::new();
    t.extend_from_slice(if big { b"MM" } else { b"II" });
    t.extend_from_slice(&u16b(42));
    t.extend_from_slice(&u32b(8));
    t.extend_from_slice(&u16b(1));
    t.extend_from_slice(&u16b(0x0112));
    t.extend_from_slice(&u16b(3));
    t.extend_from_slice(&u32b(1));
    t.extend_from_slice(&u16b(orientation));
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    t
}

/// `img` as a quality-95 JPEG with an APP1 `Exif` segment holding `orientation`.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut plain = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut plain, 95)
        .encode_image(img)
        .unwrap();
    let payload = [
        b"Exif\0\0".as_slice(),
        &tiff(orientation, orientation.is_multiple_of(2)),
    ]
    .concat();
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// How a camera stores `upright` so that `orientation` shows it upright again (the inverse of
/// the EXIF transform, made with the `image` crate's own operations).
fn stored_as(upright: &RgbImage, orientation: u16) -> RgbImage {
    match orientation {
        1 => upright.clone(),
        2 => imageops::flip_horizontal(upright),
        3 => imageops::rotate180(upright),
        4 => imageops::flip_vertical(upright),
        5 => imageops::flip_horizontal(&imageops::rotate90(upright)),
        6 => imageops::rotate270(upright),
        7 => imageops::flip_horizontal(&imageops::rotate270(upright)),
        8 => imageops::rotate90(upright),
        _ => unreachable!(),
    }
}

fn output(file: &[u8]) -> RgbImage {
    match normalise_bytes(file, &Limits::default()).unwrap() {
        Normalised::Jpeg { bytes, .. } => image::load_from_memory(&bytes).unwrap().to_rgb8(),
        Normalised::Unchanged(_) => image::load_from_memory(file).unwrap().to_rgb8(),
    }
}

/// Mean absolute difference per channel, after checking the sizes match.
fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn a_photo_in_each_orientation_normalises_upright() {
    let upright = image::load_from_memory(PHOTO).unwrap().to_rgb8();
    let want = output(&jpeg_with_orientation(&upright, 1));
    assert_eq!(want.dimensions(), (683, 512));
    // The stored pixels without the tag: what the model saw before.
    let turned = output(&jpeg_with_orientation(&stored_as(&upright, 6), 0));
    assert_eq!(turned.dimensions(), (512, 683));
    for orientation in 1..=8 {
        let file = jpeg_with_orientation(&stored_as(&upright, orientation), orientation);
        let got = output(&file);
        let d = mean_difference(&got, &want);
        // Two JPEG generations and box bins that fall a pixel apart when mirrored: a few
        // levels. A wrong turn differs by tens.
        assert!(d < 3.0, "orientation {orientation}: mean difference {d:.2}");
        if orientation != 1 {
            let wrong = imageops::rotate180(&want);
            assert!(mean_difference(&got, &wrong) > 10.0, "{orientation}");
        }
    }
}

#[test]
fn a_small_turned_jpeg_is_re_encoded_upright() {
    let upright = imageops::thumbnail(&image::load_from_memory(PHOTO).unwrap().to_rgb8(), 200, 150);
    let plain = jpeg_with_orientation(&upright, 1);
    assert!(matches!(
        normalise_bytes(&plain, &Limits::default()),
        Ok(Normalised::Unchanged(_))
    ));
    let file = jpeg_with_orientation(&stored_as(&upright, 8), 8);
    match normalise_bytes(&file, &Limits::default()).unwrap() {
        Normalised::Jpeg {
            width,
            height,
            source,
            ..
        } => {
            assert_eq!((width, height), (200, 150));
            assert_eq!((source.width, source.height), (150, 200), "as stored");
        }
        other => panic!("a turned image was not re-encoded: {other:?}"),
    }
    assert!(mean_difference(&output(&file), &output(&plain)) < 3.0);
}

#[test]
fn a_webp_exif_chunk_turns_the_image() {
    let at = EXIF_WEBP.windows(4).position(|w| w == b"EXIF").unwrap();
    // IFD0's first entry is the orientation (II, SHORT, 1): its value follows the count.
    let value = at + 8 + 6 + 8 + 2 + 8;
    assert_eq!(&EXIF_WEBP[value - 8..value - 6], &[0x12, 0x01]);
    assert_eq!(EXIF_WEBP[value], 1);
    let upright = output(EXIF_WEBP);
    assert_eq!(upright.dimensions(), (200, 100));
    for (orientation, want) in [
        (3, imageops::rotate180(&upright)),
        (6, imageops::rotate90(&upright)),
        (8, imageops::rotate270(&upright)),
    ] {
        let mut file = EXIF_WEBP.to_vec();
        file[value] = orientation;
        let got = output(&file);
        assert!(
            mean_difference(&got, &want) < 2.0,
            "orientation {orientation}"
        );
    }
    // Out of range: shown as stored.
    let mut file = EXIF_WEBP.to_vec();
    file[value] = 9;
    assert!(mean_difference(&output(&file), &upright) < 0.5);
}
