//! Where the integration tests find the model.

use std::path::PathBuf;

/// The model directory, or `None` (skip) when `LOCAL_AI_SKIP_MODEL_TESTS=1`. A missing model
/// fails the test: a silent pass would hide a broken set-up.
pub fn model_dir() -> Option<PathBuf> {
    if std::env::var("LOCAL_AI_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1") {
        return None;
    }
    let dir = local_ai::default_model_dir();
    for file in [
        local_ai::WEIGHTS_FILE,
        local_ai::LABELS_FILE,
        "chelsea.png",
        "coffee.png",
    ] {
        let path = dir.join(file);
        let hint = "run scripts/fetch-model.sh (or set LOCAL_AI_MODEL_DIR to its output)";
        assert!(path.is_file(), "{} is missing: {hint}", path.display());
    }
    Some(dir)
}
