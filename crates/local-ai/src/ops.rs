//! The few tensor operations EfficientNet-Lite needs, on pixel-major (`H×W×C`) `f32` maps: a
//! GEMM (`matrixmultiply`, rows split across threads), dense convolutions through im2col,
//! depthwise convolutions vectorised over channels, and TensorFlow "SAME" padding.

use std::thread;

/// Work below this many multiply-adds is not worth another thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// TensorFlow "SAME" padding for one axis: `(output size, padding before)`. The output is
/// `ceil(input / stride)`; the extra pixel of an odd total padding goes after, as in
/// `efficientnet-lite-pytorch`'s `Conv2dStaticSamePadding`.
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

/// `C += A·Wᵀ` for row-major `A` (`m×k`), `W` (`n×k`) and `C` (`m×n`), with the rows of `A`
/// and `C` split between up to `threads` threads. Panics if a slice is too short (a bug).
pub fn gemm_abt(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], c: &mut [f32], threads: usize) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let run = |rows: usize, a: &[f32], c: &mut [f32]| {
        let (ks, ns) = (k as isize, n as isize);
        let (ap, wp, cp) = (a.as_ptr(), w.as_ptr(), c.as_mut_ptr());
        // SAFETY: `a` holds rows×k values (row stride k), `w` holds n×k values read as the k×n
        // matrix Wᵀ (row stride 1, column stride k), `c` holds rows×n values (row stride n) and
        // is an exclusive borrow; sgemm reads and writes only inside those bounds.
        unsafe { matrixmultiply::sgemm(rows, k, n, 1.0, ap, ks, 1, wp, 1, ks, 1.0, cp, ns, 1) };
    };
    let t = threads.clamp(1, m.div_ceil(8));
    if t == 1 || m * k * n < PAR_MIN_MACS {
        return run(m, &a[..m * k], &mut c[..m * n]);
    }
    let per = m.div_ceil(t).div_ceil(8) * 8; // rows per thread, a multiple of 8
    par_parts(&mut c[..m * n], per * n, |at, part| {
        run(part.len() / n, &a[at / n * k..], part);
    });
}

/// Runs `f(offset, part)` on each part of `out` of `len` values, one thread each.
fn par_parts(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    thread::scope(|s| {
        let mut parts = out.chunks_mut(len.max(1)).enumerate();
        let first = parts.next();
        for (i, part) in parts {
            let f = &f;
            s.spawn(move || f(i * len, part));
        }
        if let Some((_, part)) = first {
            f(0, part); // on this thread
        }
    });
}

/// A feature map: `h×w` pixels of `c` channels, pixel-major (`data[(y·w + x)·c + ch]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    pub h: usize,
    pub w: usize,
    pub c: usize,
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
/// rearranged for pixel-major maps: dense `cout × k × k × cin`, depthwise `k × k × cout`.
#[derive(Debug, Clone)]
pub struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    /// Builds a convolution from PyTorch-layout weights (`cout × cin/groups × k × k`), where
    /// `depthwise` means groups = channels. Panics if the sizes disagree (callers check shapes).
    /// `dims` are the input and output channels, the kernel size and the stride.
    pub fn from_torch(weight: &[f32], bias: Vec<f32>, dims: [usize; 4], depthwise: bool) -> Conv {
        let [cin, cout, k, stride] = dims;
        let cin_g = if depthwise { 1 } else { cin };
        assert!(weight.len() == cout * cin_g * k * k && bias.len() == cout);
        let mut w = vec![0f32; weight.len()];
        for co in 0..cout {
            for ci in 0..cin_g {
                for kk in 0..k * k {
                    let to = if depthwise {
                        kk * cout + co
                    } else {
                        (co * k * k + kk) * cin + ci
                    };
                    w[to] = weight[(co * cin_g + ci) * k * k + kk];
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
        if self.depthwise {
            return self.depthwise_forward(x, relu, threads);
        }
        let mut out = if self.k == 1 && self.stride == 1 {
            self.gemm_forward(x.h, x.w, &x.data, threads)
        } else {
            let (cols, oh, ow) = im2col(x, self.k, self.stride);
            self.gemm_forward(oh, ow, &cols, threads)
        };
        if relu {
            relu6(&mut out.data);
        }
        out
    }

    /// `out = patches · Wᵀ + bias`, where `patches` is `(oh·ow) × (k·k·cin)`.
    fn gemm_forward(&self, oh: usize, ow: usize, patches: &[f32], threads: usize) -> Map {
        let (m, kk) = (oh * ow, self.k * self.k * self.cin);
        let mut data = self.bias.repeat(m);
        gemm_abt(m, kk, self.cout, patches, &self.weight, &mut data, threads);
        Map {
            h: oh,
            w: ow,
            c: self.cout,
            data,
        }
    }

    fn depthwise_forward(&self, x: &Map, relu: bool, threads: usize) -> Map {
        let (oh, ow) = (x.h.div_ceil(self.stride), x.w.div_ceil(self.stride));
        let (row, mut data) = (ow * x.c, vec![0f32; oh * ow * x.c]);
        let t = threads.clamp(1, oh.max(1));
        if t == 1 || oh * row * self.k * self.k < PAR_MIN_MACS {
            self.depthwise_rows(x, relu, 0, &mut data);
        } else {
            let per = oh.div_ceil(t); // rows per thread
            let rows = |at, part: &mut [f32]| self.depthwise_rows(x, relu, at / row, part);
            par_parts(&mut data, per * row, rows);
        }
        Map {
            h: oh,
            w: ow,
            c: x.c,
            data,
        }
    }

    /// Output rows `oy0..` (as many as `out` holds) of a depthwise convolution.
    fn depthwise_rows(&self, x: &Map, relu: bool, oy0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.depthwise_rows_avx2(x, relu, oy0, out) };
        }
        self.depthwise_rows_generic(x, relu, oy0, out);
    }

    /// [`Self::depthwise_rows_generic`] compiled for AVX2 (8 channels per instruction).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn depthwise_rows_avx2(&self, x: &Map, relu: bool, oy0: usize, out: &mut [f32]) {
        self.depthwise_rows_generic(x, relu, oy0, out);
    }

    #[inline(always)]
    fn depthwise_rows_generic(&self, x: &Map, relu: bool, oy0: usize, out: &mut [f32]) {
        let (k, s, c) = (self.k, self.stride, x.c);
        let ((_, pt), (ow, pl)) = (same_padding(x.h, k, s), same_padding(x.w, k, s));
        if c == 0 || ow == 0 {
            return;
        }
        for (r, orow) in out.chunks_mut(ow * c).enumerate() {
            let oy = oy0 + r;
            for (ox, acc) in orow.chunks_mut(c).enumerate() {
                acc.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&v| v < x.h) else {
                        continue;
                    };
                    for kx in 0..k {
                        let Some(ix) = (ox * s + kx).checked_sub(pl).filter(|&v| v < x.w) else {
                            continue;
                        };
                        let inp = &x.data[(iy * x.w + ix) * c..][..c];
                        let wk = &self.weight[(ky * k + kx) * c..][..c];
                        for ((a, &i), &wv) in acc.iter_mut().zip(inp).zip(wk) {
                            *a += i * wv;
                        }
                    }
                }
                if relu {
                    relu6(acc);
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
    let (c, row_len) = (x.c, k * k * x.c);
    let mut cols = vec![0f32; oh * ow * row_len];
    for (p, row) in cols.chunks_mut(row_len.max(1)).enumerate() {
        let (oy, ox) = (p / ow, p % ow);
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
    (cols, oh, ow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct convolution from PyTorch-layout weights, with TF "SAME" padding.
    fn reference(
        x: &Map,
        weight: &[f32],
        bias: &[f32],
        cout: usize,
        k: usize,
        s: usize,
        dw: bool,
    ) -> Map {
        let ((oh, pt), (ow, pl)) = (same_padding(x.h, k, s), same_padding(x.w, k, s));
        let cin_g = if dw { 1 } else { x.c };
        let mut data = vec![0f32; oh * ow * cout];
        for (i, out) in data.iter_mut().enumerate() {
            let (oy, ox, co) = (i / cout / ow, i / cout % ow, i % cout);
            *out = bias[co];
            for (ci, ky, kx) in (0..cin_g * k * k).map(|j| (j / k / k, j / k % k, j % k)) {
                let (iy, ix) = (
                    (oy * s + ky).wrapping_sub(pt),
                    (ox * s + kx).wrapping_sub(pl),
                );
                if iy < x.h && ix < x.w {
                    let v = x.data[(iy * x.w + ix) * x.c + if dw { co } else { ci }];
                    *out += v * weight[((co * cin_g + ci) * k + ky) * k + kx];
                }
            }
        }
        Map {
            h: oh,
            w: ow,
            c: cout,
            data,
        }
    }

    fn pseudo(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        };
        (0..n).map(|_| next()).collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
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
        assert_eq!(same_padding(7, 1, 1), (7, 0));
    }

    #[test]
    fn convolutions_match_direct_reference() {
        for (c, h, w, k, s, dw) in [
            (3, 9, 11, 3, 2, false),
            (4, 8, 8, 1, 1, false),
            (5, 10, 7, 5, 2, true),
            (6, 7, 9, 3, 1, true),
            (2, 1, 1, 3, 2, true),
            (16, 40, 40, 5, 1, true),
            (16, 41, 39, 3, 2, true),
            (24, 40, 40, 1, 1, false),
            (3, 40, 40, 3, 2, false),
        ] {
            let (cout, cin_g) = if dw { (c, 1) } else { (13, c) };
            let x = Map::from_chw(c, h, w, &pseudo(c * h * w, 1));
            let (weight, bias) = (pseudo(cout * cin_g * k * k, 2), pseudo(cout, 3));
            let conv = Conv::from_torch(&weight, bias.clone(), [c, cout, k, s], dw);
            let want = reference(&x, &weight, &bias, cout, k, s, dw);
            for threads in [1, 2, 3] {
                let got = conv.forward(&x, false, threads);
                assert_eq!((got.h, got.w, got.c), (want.h, want.w, cout));
                assert_close(&got.data, &want.data);
                let mut relu = want.data.clone();
                relu6(&mut relu);
                assert_close(&conv.forward(&x, true, threads).data, &relu);
            }
        }
    }

    #[test]
    fn threaded_gemm_matches_single_thread() {
        let (m, k, n) = (1000, 29, 37);
        let (a, w, c0) = (pseudo(m * k, 4), pseudo(n * k, 5), pseudo(m * n, 6));
        let (mut c1, mut c2) = (c0.clone(), c0.clone());
        gemm_abt(m, k, n, &a, &w, &mut c1, 1);
        gemm_abt(m, k, n, &a, &w, &mut c2, 3);
        assert_eq!(c1, c2);
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
