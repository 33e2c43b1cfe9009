//! EfficientNet-Lite0, built from safetensors weights named as in `efficientnet-lite-pytorch`
//! 0.1.0: stem (3×3/2 conv, 32 ch) → 16 MBConv blocks → head (1×1 conv, 1280 ch) → global
//! average pool → 1000-way linear. Every conv is followed by BatchNorm (folded into the conv
//! here) and ReLU6, except the blocks' projection convs; no squeeze-excitation, no swish.

use std::collections::HashMap;

use serde::Deserialize;

use crate::ops::{gemm_abt, Conv, Map};

/// Side of the square input image.
pub const INPUT_SIZE: usize = 224;
/// Number of ImageNet classes.
pub const NUM_CLASSES: usize = 1000;
/// BatchNorm epsilon used by the reference (`batch_norm_epsilon=1e-3`).
const BN_EPS: f32 = 1e-3;
/// The stages, as in the package's `efficientnet_lite()`: `(repeats, kernel, stride, expand
/// ratio, input filters, output filters)`. Lite0's multipliers are 1.0: no rounding.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (usize, usize),
}

/// Float32 tensors by name, with their shapes.
type Weights = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a safetensors file: an 8-byte little-endian header length, a JSON header mapping each
/// name to its dtype, shape and byte range, then the raw little-endian data. F32 only.
fn read_safetensors(bytes: &[u8]) -> Result<Weights, String> {
    let (len, rest) = bytes
        .split_first_chunk::<8>()
        .ok_or("not a safetensors file")?;
    let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    let (header, data) = rest
        .split_at_checked(len)
        .ok_or("truncated safetensors header")?;
    let mut header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("bad safetensors header: {e}"))?;
    header.remove("__metadata__");
    let mut weights = Weights::new();
    for (name, entry) in header {
        let e: Entry = serde_json::from_value(entry).map_err(|e| format!("{name}: {e}"))?;
        let len = 4 * e.shape.iter().product::<usize>();
        let raw = data.get(e.data_offsets.0..e.data_offsets.1);
        let raw = raw.filter(|raw| e.dtype == "F32" && raw.len() == len);
        let raw = raw.ok_or_else(|| format!("{name}: no F32 data of shape {:?}", e.shape))?;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        weights.insert(name, (e.shape, values.collect()));
    }
    Ok(weights)
}

fn tensor<'a>(w: &'a Weights, name: &str, shape: &[usize]) -> Result<&'a [f32], String> {
    match w.get(name) {
        Some((s, data)) if s == shape => Ok(data),
        Some((s, _)) => Err(format!("{name} has shape {s:?}, expected {shape:?}")),
        None => Err(format!("missing tensor {name}")),
    }
}

/// Loads `{conv}.weight` (`dims`: in and out channels, kernel size, stride) and folds the
/// BatchNorm `{bn}` into it.
fn conv_bn(w: &Weights, conv: &str, bn: &str, dims: [usize; 4], dw: bool) -> Result<Conv, String> {
    let [cin, cout, k, _] = dims;
    let cin_g = if dw { 1 } else { cin };
    let mut weight = tensor(w, &format!("{conv}.weight"), &[cout, cin_g, k, k])?.to_vec();
    let [gamma, beta, mean, var] = ["weight", "bias", "running_mean", "running_var"]
        .map(|name| tensor(w, &format!("{bn}.{name}"), &[cout]));
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let mut bias = vec![0f32; cout];
    for (co, chunk) in weight.chunks_mut(cin_g * k * k).enumerate() {
        let scale = gamma[co] / (var[co] + BN_EPS).sqrt();
        for v in chunk {
            *v *= scale;
        }
        bias[co] = beta[co] - mean[co] * scale;
    }
    Ok(Conv::from_torch(&weight, bias, dims, dw))
}

/// One inverted-residual block.
#[derive(Debug, Clone)]
struct Block {
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
    residual: bool,
}

/// EfficientNet-Lite0 with BatchNorm folded into the convolutions.
#[derive(Debug, Clone)]
pub struct Net {
    stem: Conv,
    blocks: Vec<Block>,
    head: Conv,
    fc_weight: Vec<f32>,
    fc_bias: Vec<f32>,
    /// Threads one forward pass may use.
    pub threads: usize,
}

impl Net {
    /// Builds the network from safetensors bytes, checking every tensor's shape.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let w = read_safetensors(bytes)?;
        let stem = conv_bn(&w, "_conv_stem", "_bn0", [3, STEM_CHANNELS, 3, 2], false)?;
        let mut blocks = Vec::new();
        for &(repeats, k, stride, expand, cin, cout) in &STAGES {
            for r in 0..repeats {
                let (cin, s) = if r == 0 { (cin, stride) } else { (cout, 1) };
                let (i, mid) = (blocks.len(), cin * expand);
                let p = |name: &str| format!("_blocks.{i}.{name}");
                let layer = |conv, bn, dims, dw| conv_bn(&w, &p(conv), &p(bn), dims, dw);
                let expand =
                    (expand != 1).then(|| layer("_expand_conv", "_bn0", [cin, mid, 1, 1], false));
                blocks.push(Block {
                    expand: expand.transpose()?,
                    depthwise: layer("_depthwise_conv", "_bn1", [mid, mid, k, s], true)?,
                    project: layer("_project_conv", "_bn2", [mid, cout, 1, 1], false)?,
                    residual: s == 1 && cin == cout,
                });
            }
        }
        let head = conv_bn(&w, "_conv_head", "_bn1", [320, HEAD_CHANNELS, 1, 1], false)?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc_weight: tensor(&w, "_fc.weight", &[NUM_CLASSES, HEAD_CHANNELS])?.to_vec(),
            fc_bias: tensor(&w, "_fc.bias", &[NUM_CLASSES])?.to_vec(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        })
    }

    /// The logits for a normalised `3×224×224` channel-major image.
    pub fn logits(&self, input: &[f32]) -> Vec<f32> {
        let t = self.threads;
        let input = Map::from_chw(3, INPUT_SIZE, INPUT_SIZE, input);
        let mut x = self.stem.forward(&input, true, t);
        for b in &self.blocks {
            let expanded = b.expand.as_ref().map(|e| e.forward(&x, true, t));
            let h = b
                .depthwise
                .forward(expanded.as_ref().unwrap_or(&x), true, t);
            let mut h = b.project.forward(&h, false, t);
            if b.residual {
                for (o, i) in h.data.iter_mut().zip(&x.data) {
                    *o += i;
                }
            }
            x = h;
        }
        let x = self.head.forward(&x, true, t);
        // Global average pooling (pixel-major: add up the pixels' channel vectors).
        let mut pooled = vec![0f32; HEAD_CHANNELS];
        for px in x.data.chunks(HEAD_CHANNELS) {
            for (p, v) in pooled.iter_mut().zip(px) {
                *p += v;
            }
        }
        let hw = (x.h * x.w).max(1) as f32;
        for p in &mut pooled {
            *p /= hw;
        }
        let mut logits = self.fc_bias.clone();
        gemm_abt(
            1,
            HEAD_CHANNELS,
            NUM_CLASSES,
            &pooled,
            &self.fc_weight,
            &mut logits,
            1,
        );
        logits
    }
}

/// Softmax over `logits` (numerically stable).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0, 1000.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let q = softmax(&[1.0, 3.0, 2.0]);
        assert!(p[3] > 0.999 && q[1] > q[2] && q[2] > q[0]);
    }

    #[test]
    fn safetensors_are_checked() {
        let file = |header: &str, data: &[u8]| {
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(data);
            b
        };
        let good = file(
            r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0, 0, 128, 63, 0, 0, 0, 64],
        );
        assert_eq!(
            read_safetensors(&good).unwrap()["a"],
            (vec![2], vec![1.0, 2.0])
        );
        for bad in [
            file(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            file(
                r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 8],
            ),
            file("{", &[]),
            vec![255; 7],
            u64::MAX.to_le_bytes().to_vec(),
        ] {
            assert!(read_safetensors(&bad).is_err());
        }
        let e = Net::from_safetensors(&good).unwrap_err();
        assert!(e.contains("_conv_stem.weight"), "{e}");
    }
}
