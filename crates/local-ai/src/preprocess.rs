//! Image decoding (JPEG, PNG, GIF, WebP) and the reference preprocessing: shorter side to 224
//! (bilinear, antialiased, as Pillow does it), centre crop 224×224, RGB, `(x − 127) / 128`,
//! channel-major.

use std::fmt;
use std::io::Cursor;

use image::{ImageReader, Limits};

use crate::model::INPUT_SIZE;

/// Largest width or height accepted, in pixels.
const MAX_DIMENSION: u32 = 16_384;

/// Bytes that are not a decodable image (or too large to decode), or RGB data that does not fit
/// its stated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidImage(pub String);

impl fmt::Display for InvalidImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidImage {}

/// Decodes JPEG, PNG, GIF (first frame) or WebP bytes to `(width, height, 8-bit RGB)`.
pub fn decode(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), InvalidImage> {
    let invalid = |e: &dyn fmt::Display| InvalidImage(e.to_string());
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format();
    let mut reader = reader.map_err(|e| invalid(&e))?;
    if reader.format().is_none() {
        return Err(InvalidImage("not a JPEG, PNG, GIF or WebP image".into()));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    reader.limits(limits); // and the default 512 MiB allocation limit
    let img = reader.decode().map_err(|e| invalid(&e))?.into_rgb8();
    Ok((img.width(), img.height(), img.into_raw()))
}

/// Python's `round()` (half to even) of `n / 2` for a non-negative `n`.
fn half_round_even(n: u32) -> u32 {
    n / 2 + (n & (n / 2) & 1) // one more when both n and n / 2 are odd
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
                weights[i * ksize + x] = (f + 0.5f64.copysign(f)) as i32; // C's rounding
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

/// Resizes `width × height` RGB bytes (shorter side to 224, as torchvision's `Resize(224)` with
/// PIL bilinear), centre-crops to 224×224 (as `CenterCrop(224)`) and normalises to
/// `(x − 127) / 128`, channel-major.
///
/// The resize reproduces Pillow's two-pass 8-bit resampling (horizontal, then vertical),
/// computing only the output pixels inside the crop, so even very elongated images stay cheap.
pub fn preprocess(width: u32, height: u32, raw: &[u8]) -> Result<Vec<f32>, InvalidImage> {
    let (w, h, max) = (
        u64::from(width),
        u64::from(height),
        u64::from(MAX_DIMENSION),
    );
    if !(1..=max).contains(&w) || !(1..=max).contains(&h) || raw.len() as u64 != w * h * 3 {
        let msg = format!("{} bytes are not a {width}x{height} RGB image", raw.len());
        return Err(InvalidImage(msg + &format!(" (1 to {max} pixels a side)")));
    }
    let size = INPUT_SIZE as u64;
    let (nw, nh) = (size * w / w.min(h), size * h / w.min(h));
    let (nw, nh) = (nw as u32, nh as u32);
    let size = INPUT_SIZE as u32;
    let left = half_round_even(nw - size) as usize;
    let top = half_round_even(nh - size) as usize;
    let n = INPUT_SIZE;
    let hc = Coeffs::new(w as usize, nw as usize, left, n);
    let vc = Coeffs::new(h as usize, nh as usize, top, n);
    // Input rows that the crop's output rows read.
    let y0 = vc.bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let y1 = vc.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_images() {
        for bytes in [
            &b""[..],
            b"hello",
            b"\x89PNG\r\n\x1a\n truncated",
            b"\xff\xd8\xff\xe0 jpeg",
            b"GIF89a",
            b"BM",
        ] {
            assert!(decode(bytes).is_err(), "{bytes:?} decoded");
        }
        for (w, h, len) in [(0, 0, 0), (2, 2, 11), (1, 20_000, 60_000)] {
            assert!(preprocess(w, h, &vec![0; len]).is_err(), "{w}x{h}");
        }
    }

    #[test]
    fn normalises_crops_the_centre_and_takes_any_shape() {
        let x = preprocess(3, 2, &[255, 127, 0].repeat(6)).unwrap();
        let plane = 224 * 224;
        assert_eq!(x.len(), 3 * plane);
        assert_eq!((x[0], x[plane], x[2 * plane]), (1.0, 0.0, -127.0 / 128.0));
        // Left half black, right half white, 448x224: the crop shows the middle 224 columns.
        let img: Vec<u8> = (0..224 * 448)
            .flat_map(|i| [if i % 448 < 224 { 0 } else { 255 }; 3])
            .collect();
        let x = preprocess(448, 224, &img).unwrap();
        assert!(x[0] < -0.9 && x[223] > 0.9);
        for (w, h) in [(1, 1), (1, 5000), (5000, 1), (225, 224)] {
            assert!(
                preprocess(w, h, &vec![7; (w * h * 3) as usize]).is_ok(),
                "{w}x{h}"
            );
        }
        assert_eq!([1, 3, 5, 112].map(half_round_even), [0, 2, 2, 56]);
    }
}
