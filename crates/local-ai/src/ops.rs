//! The few tensor operations EfficientNet-Lite needs, on pixel-major (`H×W×C`, "NHWC") `f32`
//! maps: a GEMM (via `matrixmultiply`, rows split across threads), a dense convolution through
//! im2col, a depthwise convolution vectorised over channels, and TensorFlow "SAME" padding.

use std::thread;

/// Work below this many multiply-adds is not worth another thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// TensorFlow "SAME" padding for one axis: `(output size, padding before)`.
///
/// The output is `ceil(input / stride)`; the total padding is split with the extra pixel
/// after, as in `efficientnet-lite-pytorch`'s `Conv2dStaticSamePadding`.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (out, total / 2)
}

/// Clamps every value to `[0, 6]`.
pub fn relu6(x: &mut [f32]) {
    for v in x {
        *v = v.clamp(0.0, 6.0);
    }
}

/// Splits `out` into `items` equal parts and runs `f(first_item, part)` on up to `threads`
/// threads, each taking a contiguous run of items. `work` (multiply-adds) decides whether
/// threads are worth starting.
pub fn par_items<F>(out: &mut [f32], items: usize, threads: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if items == 0 || out.is_empty() {
        return;
    }
    let per_item = out.len() / items;
    let t = threads.clamp(1, items);
    if t == 1 || work < PAR_MIN_MACS {
        f(0, out);
        return;
    }
    let chunk = items.div_ceil(t);
    thread::scope(|s| {
        let mut parts = out.chunks_mut(chunk * per_item).enumerate();
        let first = parts.next();
        for (i, part) in parts {
            let f = &f;
            s.spawn(move || f(i * chunk, part));
        }
        if let Some((_, part)) = first {
            f(0, part);
        }
    });
}

/// `C += A·Wᵀ` for row-major, contiguous `A` (`m×k`), `W` (`n×k`) and `C` (`m×n`), with the
/// rows of `A` and `C` split between up to `threads` threads.
///
/// # Panics
/// If a slice is shorter than its dimensions say (a programming error, not an input error).
pub fn gemm_abt(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], c: &mut [f32], threads: usize) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let run = |rows: usize, a: &[f32], c: &mut [f32]| {
        // SAFETY: `a` holds rows×k values (row stride k), `w` holds n×k values read as the
        // k×n matrix Wᵀ (row stride 1, column stride k), and `c` holds rows×n values (row
        // stride n); the sgemm call reads and writes only inside those bounds, and `c` is an
        // exclusive borrow.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                a.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                1.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let t = threads.clamp(1, m.div_ceil(8));
    if t == 1 || m * k * n < PAR_MIN_MACS {
        run(m, &a[..m * k], &mut c[..m * n]);
        return;
    }
    // Row blocks, multiples of 8 rows except the last.
    let per = m.div_ceil(t).div_ceil(8) * 8;
    thread::scope(|s| {
        let mut blocks = a[..m * k]
            .chunks(per * k)
            .zip(c[..m * n].chunks_mut(per * n));
        let first = blocks.next();
        for (ab, cb) in blocks {
            s.spawn(move || run(cb.len() / n, ab, cb));
        }
        if let Some((ab, cb)) = first {
            run(cb.len() / n, ab, cb);
        }
    });
}

/// A feature map: `h×w` pixels of `c` channels, pixel-major (`data[(y·w + x)·c + ch]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `h·w·c` values.
    pub data: Vec<f32>,
}

impl Map {
    /// Converts a channel-major (`C×H×W`) buffer to a pixel-major map.
    pub fn from_chw(c: usize, h: usize, w: usize, chw: &[f32]) -> Map {
        let plane = h * w;
        let mut data = vec![0f32; plane * c];
        for (ch, src) in chw.chunks(plane.max(1)).take(c).enumerate() {
            for (p, &v) in src.iter().enumerate() {
                data[p * c + ch] = v;
            }
        }
        Map { h, w, c, data }
    }
}

/// A convolution with folded batch norm, `out = conv(x, weight) + bias`, with its weights
/// rearranged for pixel-major maps.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Input channels (equal to `cout` for depthwise).
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Square kernel size.
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Whether each output channel sees only its own input channel (groups = channels).
    pub depthwise: bool,
    /// Dense: `cout × k × k × cin`; depthwise: `k × k × cout`.
    weight: Vec<f32>,
    /// One bias per output channel.
    bias: Vec<f32>,
}

impl Conv {
    /// Builds a convolution from PyTorch-layout weights (`cout × cin/groups × k × k`).
    ///
    /// # Panics
    /// If `weight` or `bias` do not have the stated sizes (callers check shapes first).
    pub fn from_torch(
        weight: &[f32],
        bias: Vec<f32>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
    ) -> Conv {
        let cin_g = if depthwise { 1 } else { cin };
        assert_eq!(weight.len(), cout * cin_g * k * k);
        assert_eq!(bias.len(), cout);
        let mut w = vec![0f32; weight.len()];
        for co in 0..cout {
            for ci in 0..cin_g {
                for kk in 0..k * k {
                    let src = weight[(co * cin_g + ci) * k * k + kk];
                    if depthwise {
                        w[kk * cout + co] = src;
                    } else {
                        w[(co * k * k + kk) * cin + ci] = src;
                    }
                }
            }
        }
        Conv {
            cin,
            cout,
            k,
            stride,
            depthwise,
            weight: w,
            bias,
        }
    }

    /// Runs the convolution (TF "SAME" padding), optionally followed by ReLU6.
    pub fn forward(&self, x: &Map, relu: bool, threads: usize) -> Map {
        let mut out = if self.depthwise {
            self.depthwise_forward(x, relu, threads)
        } else if self.k == 1 && self.stride == 1 {
            self.gemm_forward(x.h, x.w, &x.data, threads)
        } else {
            let (cols, oh, ow) = im2col(x, self.k, self.stride);
            self.gemm_forward(oh, ow, &cols, threads)
        };
        if relu && !self.depthwise {
            relu6(&mut out.data);
        }
        out
    }

    /// `out = patches · Wᵀ + bias`, where `patches` is `(oh·ow) × (k·k·cin)`.
    fn gemm_forward(&self, oh: usize, ow: usize, patches: &[f32], threads: usize) -> Map {
        let m = oh * ow;
        let kk = self.k * self.k * self.cin;
        let mut data = vec![0f32; m * self.cout];
        for row in data.chunks_mut(self.cout.max(1)) {
            row.copy_from_slice(&self.bias);
        }
        gemm_abt(m, kk, self.cout, patches, &self.weight, &mut data, threads);
        Map {
            h: oh,
            w: ow,
            c: self.cout,
            data,
        }
    }

    fn depthwise_forward(&self, x: &Map, relu: bool, threads: usize) -> Map {
        let (oh, pt) = same_padding(x.h, self.k, self.stride);
        let (ow, pl) = same_padding(x.w, self.k, self.stride);
        let mut data = vec![0f32; oh * ow * x.c];
        let geo = DwGeometry {
            k: self.k,
            s: self.stride,
            pt,
            pl,
            ow,
            relu,
        };
        let work = oh * ow * x.c * self.k * self.k;
        par_items(&mut data, oh, threads, work, |oy0, rows| {
            depthwise_rows(x, &self.weight, &self.bias, &geo, oy0, rows);
        });
        Map {
            h: oh,
            w: ow,
            c: x.c,
            data,
        }
    }
}

/// Shape parameters of a depthwise convolution.
struct DwGeometry {
    k: usize,
    s: usize,
    pt: usize,
    pl: usize,
    ow: usize,
    relu: bool,
}

/// Output rows `oy0..` (as many as `out` holds) of a depthwise convolution.
fn depthwise_rows(x: &Map, w: &[f32], bias: &[f32], g: &DwGeometry, oy0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { depthwise_rows_avx2(x, w, bias, g, oy0, out) };
        return;
    }
    depthwise_rows_generic(x, w, bias, g, oy0, out);
}

/// [`depthwise_rows_generic`] compiled for AVX2 (8 channels per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_rows_avx2(
    x: &Map,
    w: &[f32],
    bias: &[f32],
    g: &DwGeometry,
    oy0: usize,
    out: &mut [f32],
) {
    depthwise_rows_generic(x, w, bias, g, oy0, out);
}

#[inline(always)]
fn depthwise_rows_generic(
    x: &Map,
    w: &[f32],
    bias: &[f32],
    g: &DwGeometry,
    oy0: usize,
    out: &mut [f32],
) {
    let c = x.c;
    if c == 0 || g.ow == 0 {
        return;
    }
    for (r, orow) in out.chunks_mut(g.ow * c).enumerate() {
        let oy = oy0 + r;
        for (ox, acc) in orow.chunks_mut(c).enumerate() {
            acc.copy_from_slice(bias);
            for ky in 0..g.k {
                let Some(iy) = (oy * g.s + ky).checked_sub(g.pt).filter(|&v| v < x.h) else {
                    continue;
                };
                for kx in 0..g.k {
                    let Some(ix) = (ox * g.s + kx).checked_sub(g.pl).filter(|&v| v < x.w) else {
                        continue;
                    };
                    let inp = &x.data[(iy * x.w + ix) * c..][..c];
                    let wk = &w[(ky * g.k + kx) * c..][..c];
                    for ((a, &i), &wv) in acc.iter_mut().zip(inp).zip(wk) {
                        *a += i * wv;
                    }
                }
            }
            if g.relu {
                for a in acc.iter_mut() {
                    *a = a.clamp(0.0, 6.0);
                }
            }
        }
    }
}

/// Unfolds `x` into `(oh·ow) × (k·k·c)` patches (column order `ky, kx, channel`) for a `k×k`
/// convolution with stride `s` and TF "SAME" padding. Returns the matrix and `(oh, ow)`.
pub fn im2col(x: &Map, k: usize, s: usize) -> (Vec<f32>, usize, usize) {
    let (oh, pt) = same_padding(x.h, k, s);
    let (ow, pl) = same_padding(x.w, k, s);
    let c = x.c;
    let row_len = k * k * c;
    let mut cols = vec![0f32; oh * ow * row_len];
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut cols[(oy * ow + ox) * row_len..][..row_len];
            for ky in 0..k {
                let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&v| v < x.h) else {
                    continue;
                };
                for kx in 0..k {
                    if let Some(ix) = (ox * s + kx).checked_sub(pl).filter(|&v| v < x.w) {
                        row[(ky * k + kx) * c..][..c]
                            .copy_from_slice(&x.data[(iy * x.w + ix) * c..][..c]);
                    }
                }
            }
        }
    }
    (cols, oh, ow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct (slow) reference convolution on channel-major data with PyTorch-layout weights
    /// and TF SAME padding; returns channel-major output.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        c: usize,
        h: usize,
        w: usize,
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        cout: usize,
        k: usize,
        s: usize,
        dw: bool,
    ) -> (usize, usize, Vec<f32>) {
        let (oh, pt) = same_padding(h, k, s);
        let (ow, pl) = same_padding(w, k, s);
        let cin_g = if dw { 1 } else { c };
        let mut out = vec![0f32; cout * oh * ow];
        for co in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[co];
                    for ci in 0..cin_g {
                        let cx = if dw { co } else { ci };
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - pt as isize;
                                let ix = (ox * s + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = x[(cx * h + iy as usize) * w + ix as usize];
                                acc += v * weight[((co * cin_g + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                    out[(co * oh + oy) * ow + ox] = acc;
                }
            }
        }
        (oh, ow, out)
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-3, "index {i}: {x} vs {y}");
        }
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (112, 0)); // pad 1, all after
        assert_eq!(same_padding(56, 5, 2), (28, 1)); // pad 3: 1 before, 2 after
        assert_eq!(same_padding(14, 5, 1), (14, 2));
        assert_eq!(same_padding(7, 3, 1), (7, 1));
        assert_eq!(same_padding(7, 1, 1), (7, 0));
    }

    #[test]
    fn convolutions_match_direct_reference() {
        for &(c, h, w, k, s, dw) in &[
            (3, 9, 11, 3, 2, false),
            (4, 8, 8, 1, 1, false),
            (5, 10, 7, 5, 2, true),
            (6, 7, 9, 3, 1, true),
            (3, 6, 6, 5, 1, true),
            (2, 1, 1, 3, 2, true),
            (16, 40, 40, 5, 1, true),
            (16, 41, 39, 3, 2, true),
            (24, 40, 40, 1, 1, false),
            (3, 40, 40, 3, 2, false),
        ] {
            let cout = if dw { c } else { 13 };
            let cin_g = if dw { 1 } else { c };
            let x = pseudo(c * h * w, 1);
            let weight = pseudo(cout * cin_g * k * k, 2);
            let bias = pseudo(cout, 3);
            let conv = Conv::from_torch(&weight, bias.clone(), c, cout, k, s, dw);
            let (oh, ow, want) = reference(c, h, w, &x, &weight, &bias, cout, k, s, dw);
            let want = Map::from_chw(cout, oh, ow, &want);
            let input = Map::from_chw(c, h, w, &x);
            for threads in [1, 2, 3] {
                let got = conv.forward(&input, false, threads);
                assert_eq!((got.h, got.w, got.c), (oh, ow, cout));
                close(&got.data, &want.data);
                let mut relu = want.data.clone();
                relu6(&mut relu);
                close(&conv.forward(&input, true, threads).data, &relu);
            }
        }
    }

    #[test]
    fn threaded_gemm_matches_single_thread() {
        let (m, k, n) = (1000, 29, 37);
        let a = pseudo(m * k, 4);
        let w = pseudo(n * k, 5);
        let c0 = pseudo(m * n, 6);
        let mut c1 = c0.clone();
        let mut c2 = c0.clone();
        gemm_abt(m, k, n, &a, &w, &mut c1, 1);
        gemm_abt(m, k, n, &a, &w, &mut c2, 3);
        close(&c1, &c2);
        let want: f32 =
            (0..k).map(|i| a[123 * k + i] * w[5 * k + i]).sum::<f32>() + c0[123 * n + 5];
        assert!((c1[123 * n + 5] - want).abs() < 1e-3);
    }

    #[test]
    fn chw_to_hwc() {
        let m = Map::from_chw(2, 1, 3, &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
        assert_eq!(m.data, vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]);
    }
}
