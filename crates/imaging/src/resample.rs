//! Box-filter (area-averaging) downscaling, fed one source row at a time.
//!
//! Each source pixel belongs to exactly one output pixel: source column `x` to output column
//! `x * out_w / src_w` (rounded down), rows likewise. An output pixel is the mean of its source
//! pixels. Bins differ by at most one source pixel in each direction, which at the downscale
//! factors used here is invisible.

use super::ImageError;

/// White, what transparent pixels become.
pub(crate) const WHITE: [u8; 3] = [255; 3];

/// Most source pixels one output pixel may average: sums of 8-bit samples must fit a `u32`.
pub(crate) const MAX_BIN_PIXELS: u64 = 1 << 24;

/// Whether rows arrive top to bottom (and so only one output row of sums is needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Rows come top to bottom; pixels of a row left to right.
    TopDown,
    /// Rows (and pixels, with a step) in any order: interlaced images.
    Any,
}

/// An RGB image, 3 bytes a pixel, rows top to bottom.
#[derive(Debug)]
pub(crate) struct Rgb {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Sums source pixels into output bins.
pub(crate) struct Resampler {
    src_w: u32,
    src_h: u32,
    out_w: u32,
    out_h: u32,
    /// First source column of each output column, and `src_w` at the end.
    col_start: Vec<u32>,
    /// First source row of each output row, and `src_h` at the end.
    row_start: Vec<u32>,
    /// `TopDown`: the sums of one output row; `Any`: of every output pixel.
    sums: Vec<u32>,
    /// `TopDown`: the output row `sums` holds.
    band: Option<u32>,
    order: Order,
    out: Vec<u8>,
}

/// `ceil(i * src / out)`: the first source index of bin `i`.
fn bin_starts(src: u32, out: u32) -> Vec<u32> {
    (0..=u64::from(out))
        .map(|i| (i * u64::from(src)).div_ceil(u64::from(out)) as u32)
        .collect()
}

/// A zeroed buffer, or `image_too_large` where the allocator says no.
pub(crate) fn zeroed<T: Clone + Default>(len: usize) -> Result<Vec<T>, ImageError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| ImageError::TooLarge(format!("cannot allocate {len} pixel values")))?;
    v.resize(len, T::default());
    Ok(v)
}

impl Resampler {
    /// A resampler from `src_w × src_h` to `out_w × out_h`, each at least 1 and at most the
    /// source's, and bins of at most [`MAX_BIN_PIXELS`].
    pub fn new(
        src_w: u32,
        src_h: u32,
        out_w: u32,
        out_h: u32,
        order: Order,
    ) -> Result<Self, ImageError> {
        if out_w == 0 || out_h == 0 || out_w > src_w || out_h > src_h {
            return Err(ImageError::Invalid(format!(
                "cannot resample {src_w}x{src_h} to {out_w}x{out_h}"
            )));
        }
        if u64::from(src_w.div_ceil(out_w)) * u64::from(src_h.div_ceil(out_h)) > MAX_BIN_PIXELS {
            return Err(ImageError::TooLarge(format!(
                "a {src_w}x{src_h} image cannot be averaged down to {out_w}x{out_h}"
            )));
        }
        let out_px = out_w as usize * out_h as usize;
        let sums = match order {
            Order::TopDown => zeroed(out_w as usize * 3)?,
            Order::Any => zeroed(out_px * 3)?,
        };
        Ok(Self {
            src_w,
            src_h,
            out_w,
            out_h,
            col_start: bin_starts(src_w, out_w),
            row_start: bin_starts(src_h, out_h),
            sums,
            band: None,
            order,
            out: zeroed(out_px * 3)?,
        })
    }

    /// The heap a resampler to `out_w × out_h` takes: the output plus the sums.
    pub fn bytes(out_w: u32, out_h: u32, order: Order) -> u64 {
        let out = u64::from(out_w) * u64::from(out_h);
        let sums = match order {
            Order::TopDown => u64::from(out_w) * 12,
            Order::Any => out * 12,
        };
        out * 3 + sums
    }

    fn out_row(&self, y: u32) -> u32 {
        (u64::from(y) * u64::from(self.out_h) / u64::from(self.src_h)) as u32
    }

    fn rows_in(&self, oy: u32) -> u32 {
        self.row_start[oy as usize + 1] - self.row_start[oy as usize]
    }

    fn cols_in(&self, ox: u32) -> u32 {
        self.col_start[ox as usize + 1] - self.col_start[ox as usize]
    }

    /// Adds the pixels of source row `y` at columns `x0`, `x0 + step`, `x0 + 2 step`…;
    /// pixels beyond the right edge are ignored.
    pub fn push_row(
        &mut self,
        y: u32,
        x0: u32,
        step: u32,
        pixels: impl Iterator<Item = [u8; 3]>,
    ) -> Result<(), ImageError> {
        if y >= self.src_h || x0 >= self.src_w || step == 0 {
            return Err(ImageError::Invalid(format!("row {y} is outside the image")));
        }
        let oy = self.out_row(y);
        let base = match self.order {
            Order::Any => oy as usize * self.out_w as usize * 3,
            Order::TopDown => {
                match self.band {
                    Some(band) if band == oy => {}
                    Some(band) if band > oy => {
                        return Err(ImageError::Invalid("rows out of order".into()));
                    }
                    Some(band) => {
                        self.flush_band(band);
                        self.band = Some(oy);
                    }
                    None => self.band = Some(oy),
                }
                0
            }
        };
        let sums = &mut self.sums[base..base + self.out_w as usize * 3];
        let mut ox = (u64::from(x0) * u64::from(self.out_w) / u64::from(self.src_w)) as usize;
        let mut next = self.col_start[ox + 1];
        let mut x = x0;
        for px in pixels {
            if x >= self.src_w {
                break;
            }
            while x >= next {
                ox += 1;
                next = self.col_start[ox + 1];
            }
            let s = &mut sums[ox * 3..ox * 3 + 3];
            s[0] += u32::from(px[0]);
            s[1] += u32::from(px[1]);
            s[2] += u32::from(px[2]);
            x = x.saturating_add(step);
        }
        Ok(())
    }

    /// `Any` order: adds `color` for every source pixel outside the rectangle
    /// `[x0, x1) × [y0, y1)`, e.g. the canvas a GIF frame does not cover.
    pub fn fill_outside(&mut self, (x0, y0, x1, y1): (u32, u32, u32, u32), color: [u8; 3]) {
        if self.order != Order::Any {
            return;
        }
        fn overlap(a0: u32, a1: u32, b0: u32, b1: u32) -> u64 {
            u64::from(a1.min(b1).saturating_sub(a0.max(b0)))
        }
        for oy in 0..self.out_h {
            let (r0, r1) = (self.row_start[oy as usize], self.row_start[oy as usize + 1]);
            let rows_covered = overlap(r0, r1, y0, y1);
            for ox in 0..self.out_w {
                let (c0, c1) = (self.col_start[ox as usize], self.col_start[ox as usize + 1]);
                let area = u64::from(r1 - r0) * u64::from(c1 - c0);
                let outside = (area - rows_covered * overlap(c0, c1, x0, x1)) as u32;
                let i = (oy as usize * self.out_w as usize + ox as usize) * 3;
                for (s, c) in self.sums[i..i + 3].iter_mut().zip(color) {
                    *s += outside * u32::from(c);
                }
            }
        }
    }

    /// `TopDown`: writes the means of output row `oy` and clears the sums.
    fn flush_band(&mut self, oy: u32) {
        let rows = self.rows_in(oy);
        let start = oy as usize * self.out_w as usize * 3;
        for ox in 0..self.out_w {
            let n = self.cols_in(ox) * rows;
            let i = ox as usize * 3;
            for c in 0..3 {
                self.out[start + i + c] = ((self.sums[i + c] + n / 2) / n) as u8;
                self.sums[i + c] = 0;
            }
        }
    }

    /// The downscaled image.
    pub fn finish(mut self) -> Rgb {
        match self.order {
            Order::TopDown => {
                if let Some(band) = self.band {
                    self.flush_band(band);
                }
            }
            Order::Any => {
                for oy in 0..self.out_h {
                    let rows = self.rows_in(oy);
                    for ox in 0..self.out_w {
                        let n = self.cols_in(ox) * rows;
                        let i = (oy as usize * self.out_w as usize + ox as usize) * 3;
                        for c in i..i + 3 {
                            self.out[c] = ((self.sums[c] + n / 2) / n) as u8;
                        }
                    }
                }
            }
        }
        Rgb {
            width: self.out_w,
            height: self.out_h,
            data: self.out,
        }
    }
}

/// A colour sample composited over white with its alpha.
#[inline]
pub(crate) fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

/// RGBA over white.
#[inline]
pub(crate) fn rgba(p: &[u8]) -> [u8; 3] {
    [
        over_white(p[0], p[3]),
        over_white(p[1], p[3]),
        over_white(p[2], p[3]),
    ]
}

/// Grey plus alpha over white.
#[inline]
pub(crate) fn grey_alpha(p: &[u8]) -> [u8; 3] {
    let v = over_white(p[0], p[1]);
    [v, v, v]
}

/// Grey.
#[inline]
pub(crate) fn grey(v: u8) -> [u8; 3] {
    [v, v, v]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(
        src_w: u32,
        src_h: u32,
        out_w: u32,
        out_h: u32,
        order: Order,
        f: impl Fn(u32, u32) -> [u8; 3],
    ) -> Rgb {
        let mut r = Resampler::new(src_w, src_h, out_w, out_h, order).unwrap();
        for y in 0..src_h {
            r.push_row(y, 0, 1, (0..src_w).map(|x| f(x, y))).unwrap();
        }
        r.finish()
    }

    #[test]
    fn averages_blocks() {
        // 4x2 -> 2x1: each output pixel is the mean of a 2x2 block.
        let img = run(4, 2, 2, 1, Order::TopDown, |x, y| {
            [(x * 10 + y) as u8, 200, if x < 2 { 0 } else { 255 }]
        });
        assert_eq!(img.data, vec![6, 200, 0, 26, 200, 255]);
    }

    #[test]
    fn adam7_order_matches_top_down() {
        let f = |x: u32, y: u32| [(x * 3 + y * 7) as u8, (x ^ y) as u8, (x * y) as u8];
        let (w, h) = (37, 23);
        let want = run(w, h, 9, 6, Order::TopDown, f);
        let mut r = Resampler::new(w, h, 9, 6, Order::Any).unwrap();
        // Adam7 passes: (x0, dx, y0, dy).
        for (x0, dx, y0, dy) in crate::decode_png::ADAM7 {
            for y in (y0..h).step_by(dy as usize) {
                if x0 < w {
                    let xs = (x0..w).step_by(dx as usize);
                    r.push_row(y, x0, dx, xs.map(|x| f(x, y))).unwrap();
                }
            }
        }
        assert_eq!(r.finish().data, want.data);
    }

    #[test]
    fn fill_outside_covers_the_rest() {
        // A 2x2 black frame at (1, 1) on a 4x4 white canvas, averaged to 1x1:
        // 12 white and 4 black pixels.
        let mut r = Resampler::new(4, 4, 1, 1, Order::Any).unwrap();
        for y in 1..3 {
            r.push_row(y, 1, 1, [[0; 3]; 2].into_iter()).unwrap();
        }
        r.fill_outside((1, 1, 3, 3), WHITE);
        assert_eq!(r.finish().data, vec![191, 191, 191]);
    }

    #[test]
    fn refuses_bad_sizes_and_rows() {
        assert!(Resampler::new(4, 4, 5, 4, Order::TopDown).is_err());
        assert!(Resampler::new(4, 4, 0, 4, Order::TopDown).is_err());
        assert!(matches!(
            Resampler::new(1 << 25, 1, 1, 1, Order::TopDown),
            Err(ImageError::TooLarge(_))
        ));
        let mut r = Resampler::new(4, 4, 2, 2, Order::TopDown).unwrap();
        assert!(r.push_row(4, 0, 1, std::iter::empty()).is_err());
        r.push_row(3, 0, 1, std::iter::empty()).unwrap();
        assert!(r.push_row(0, 0, 1, std::iter::empty()).is_err());
    }

    #[test]
    fn alpha_over_white() {
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(0, 255), 0);
        assert_eq!(over_white(100, 255), 100);
        assert_eq!(over_white(0, 128), 127);
        assert_eq!(rgba(&[10, 20, 30, 255]), [10, 20, 30]);
        assert_eq!(grey_alpha(&[0, 0]), WHITE);
    }

    proptest! {
        /// A uniform image stays uniform at any size.
        #[test]
        fn uniform_stays_uniform(
            src_w in 1u32..200, src_h in 1u32..200,
            out_w in 1u32..200, out_h in 1u32..200,
            c in any::<[u8; 3]>(),
        ) {
            let (out_w, out_h) = (out_w.min(src_w), out_h.min(src_h));
            let img = run(src_w, src_h, out_w, out_h, Order::TopDown, |_, _| c);
            prop_assert_eq!(img.data.len(), (out_w * out_h * 3) as usize);
            prop_assert!(img.data.chunks(3).all(|p| p == c));
        }
    }
}
