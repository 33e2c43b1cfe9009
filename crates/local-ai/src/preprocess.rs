//! Image decoding (JPEG, PNG, GIF, WebP) and the reference preprocessing: shorter side to 224
//! (bilinear, antialiased, as Pillow does it), centre crop 224×224, RGB, `(x − 127) / 128`,
//! channel-major.

use std::fmt;
use std::io::Cursor;

use image::{ImageReader, Limits, RgbImage};

use crate::model::INPUT_SIZE;

/// Largest width or height accepted, in pixels.
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest allocation the decoder may make, in bytes.
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// Bytes that are not a decodable image (or too large to decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidImage(pub String);

impl fmt::Display for InvalidImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidImage {}

/// Decodes JPEG, PNG, GIF (first frame) or WebP bytes to 8-bit RGB (alpha is dropped).
pub fn decode(bytes: &[u8]) -> Result<RgbImage, InvalidImage> {
    if bytes.is_empty() {
        return Err(InvalidImage("empty input".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InvalidImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(InvalidImage(
            "not a JPEG, PNG, GIF or WebP image (unrecognised format)".into(),
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| InvalidImage(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(InvalidImage("image has no pixels".into()));
    }
    Ok(img.to_rgb8())
}

/// Python's `round()` (half to even) of `n / 2` for a non-negative `n`.
fn half_round_even(n: u32) -> u32 {
    let q = n / 2;
    if n % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Fixed-point precision of PIL's 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// PIL's resampling coefficients for one axis (bilinear, antialiased when shrinking), for the
/// output positions `first..first + count` of an `in_size` → `out_size` resize.
struct Coeffs {
    /// Per output position: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output position.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    /// Mirrors Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc`.
    fn new(in_size: usize, out_size: usize, first: usize, count: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0, scaled
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(count);
        let mut weights = vec![0i32; count * ksize];
        let mut k = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let t = ((x + xmin) as f64 - center + 0.5) / filterscale;
                *kx = (1.0 - t.abs()).max(0.0);
                total += *kx;
            }
            for (x, &kx) in k.iter().enumerate().take(n) {
                let v = if total != 0.0 { kx / total } else { 0.0 };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                weights[i * ksize + x] = if f < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Self {
            bounds,
            weights,
            ksize,
        }
    }

    /// Weighted sum of `n` taps read by `px(first input index + tap)`, rounded and clipped.
    #[inline]
    fn apply(&self, i: usize, px: impl Fn(usize) -> u8) -> u8 {
        let (xmin, n) = self.bounds[i];
        let w = &self.weights[i * self.ksize..i * self.ksize + n];
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (x, &k) in w.iter().enumerate() {
            acc += i64::from(px(xmin + x)) * i64::from(k);
        }
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// Resizes (shorter side to 224, as torchvision's `Resize(224)` with PIL bilinear), centre-crops
/// to 224×224 (as `CenterCrop(224)`) and normalises to `(x − 127) / 128`, channel-major.
///
/// The resize reproduces Pillow's two-pass 8-bit resampling (horizontal, then vertical),
/// computing only the output pixels inside the crop, so even very elongated images stay cheap.
pub fn preprocess(img: &RgbImage) -> Vec<f32> {
    let size = INPUT_SIZE as u32;
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (
            size,
            (u64::from(size) * u64::from(h) / u64::from(w.max(1))) as u32,
        )
    } else {
        (
            (u64::from(size) * u64::from(w) / u64::from(h.max(1))) as u32,
            size,
        )
    };
    let (nw, nh) = (nw.max(size), nh.max(size));
    let left = half_round_even(nw - size) as usize;
    let top = half_round_even(nh - size) as usize;
    let n = INPUT_SIZE;
    let hc = Coeffs::new(w as usize, nw as usize, left, n);
    let vc = Coeffs::new(h as usize, nh as usize, top, n);
    // Input rows that the crop's output rows read.
    let y0 = vc.bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let y1 = vc.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
    let raw = img.as_raw();
    let stride = w as usize * 3;
    // Horizontal pass over rows y0..y1: (y1 - y0) × 224 × RGB.
    let mut tmp = vec![0u8; (y1 - y0) * n * 3];
    for y in y0..y1 {
        let row = &raw[y * stride..(y + 1) * stride];
        let out = &mut tmp[(y - y0) * n * 3..(y - y0 + 1) * n * 3];
        for j in 0..n {
            for c in 0..3 {
                out[j * 3 + c] = hc.apply(j, |x| row[x * 3 + c]);
            }
        }
    }
    // Vertical pass, normalised straight into channel-major planes.
    let plane = n * n;
    let mut out = vec![0f32; 3 * plane];
    for i in 0..n {
        for j in 0..n {
            for c in 0..3 {
                let v = vc.apply(i, |y| tmp[((y - y0) * n + j) * 3 + c]);
                out[c * plane + i * n + j] = (f32::from(v) - 127.0) / 128.0;
            }
        }
    }
    out
}

/// [`decode`] then [`preprocess`].
pub fn load_input(bytes: &[u8]) -> Result<Vec<f32>, InvalidImage> {
    Ok(preprocess(&decode(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};

    fn encode(img: &RgbImage, fmt: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        buf.into_inner()
    }

    #[test]
    fn rejects_non_images() {
        for bytes in [
            &b""[..],
            b"hello, world",
            b"\x89PNG\r\n\x1a\n truncated",
            b"\xff\xd8\xff\xe0 broken jpeg",
            b"GIF89a",
            b"BM not enabled",
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?} decoded");
        }
    }

    #[test]
    fn decodes_png_and_normalises() {
        let img = RgbImage::from_pixel(300, 200, Rgb([255, 127, 0]));
        let x = load_input(&encode(&img, ImageFormat::Png)).unwrap();
        assert_eq!(x.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        assert!((x[0] - 1.0).abs() < 1e-6);
        assert!(x[plane].abs() < 1e-6);
        assert!((x[2 * plane] + 127.0 / 128.0).abs() < 1e-6);
    }

    #[test]
    fn decodes_gif() {
        let img = RgbImage::from_pixel(10, 30, Rgb([10, 20, 30]));
        assert!(load_input(&encode(&img, ImageFormat::Gif)).is_ok());
    }

    #[test]
    fn crop_is_centred_and_extreme_shapes_work() {
        // Left half black, right half white, 448x224: the crop shows the middle 224 columns.
        let img = RgbImage::from_fn(448, 224, |x, _| {
            if x < 224 {
                Rgb([0, 0, 0])
            } else {
                Rgb([255, 255, 255])
            }
        });
        let x = preprocess(&img);
        assert!(x[0] < -0.9 && x[223] > 0.9);
        for (w, h) in [(1, 1), (1, 5000), (5000, 1), (225, 224), (224, 224)] {
            let img = RgbImage::from_pixel(w, h, Rgb([1, 2, 3]));
            assert_eq!(preprocess(&img).len(), 3 * 224 * 224, "{w}x{h}");
        }
        assert_eq!(half_round_even(1), 0);
        assert_eq!(half_round_even(3), 2);
        assert_eq!(half_round_even(5), 2);
        assert_eq!(half_round_even(112), 56);
    }
}
