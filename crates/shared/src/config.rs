//! Binding names, variable names and their defaults: the one place both workers and the
//! wrangler configs agree on.

/// R2 bucket holding the uploaded image bytes.
pub const IMAGE_BUCKET: &str = "IMAGE_BUCKET";
/// Queue producer binding of the upload worker.
pub const IMAGE_QUEUE: &str = "IMAGE_QUEUE";
/// KV namespace holding tag records and idempotency keys.
pub const RESULTS_KV: &str = "RESULTS_KV";
/// Workers AI binding of the tagger.
pub const AI: &str = "AI";

/// Queue the upload worker produces to and the tagger consumes.
pub const QUEUE_NAME: &str = "image-processing-queue";
/// Dead letter queue of [`QUEUE_NAME`]; the tagger consumes it too.
pub const DEAD_LETTER_QUEUE_NAME: &str = "image-processing-dlq";

/// The classifier the tagger runs.
pub const MODEL: &str = "@cf/microsoft/resnet-50";

/// Var: labels must score strictly above this to become tags.
pub const MIN_SCORE: &str = "MIN_SCORE";
/// Default of [`MIN_SCORE`].
pub const DEFAULT_MIN_SCORE: f64 = 0.8;

/// Var: the largest accepted upload, in bytes.
pub const MAX_UPLOAD_BYTES: &str = "MAX_UPLOAD_BYTES";
/// Default of [`MAX_UPLOAD_BYTES`]: 10 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024;

/// Var: the most pixels (width × height, read from the image's header) an upload may have.
pub const MAX_PIXELS: &str = "MAX_PIXELS";
/// Default of [`MAX_PIXELS`]: 50 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// Secret: when set, every API request needs `Authorization: Bearer <API_TOKEN>`.
pub const API_TOKEN: &str = "API_TOKEN";

/// Var: comma-separated origins allowed by CORS, or `*`. Empty or unset disables CORS.
pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";

/// Var: when `"true"`, upload responses carry `x-wasm-memory-bytes`, the size of the
/// worker's wasm linear memory. For benchmarks; off in the deployed configs.
pub const EXPOSE_WASM_MEMORY: &str = "EXPOSE_WASM_MEMORY";

/// Var: base of the exponential retry backoff, in seconds.
pub const RETRY_BASE_SECONDS: &str = "RETRY_BASE_SECONDS";
/// Default of [`RETRY_BASE_SECONDS`].
pub const DEFAULT_RETRY_BASE_SECONDS: u32 = 2;

/// Var: the queue's `max_retries`, so that the tagger knows a delivery is the last one.
pub const MAX_RETRIES: &str = "MAX_RETRIES";
/// Default of [`MAX_RETRIES`]; keep it equal to the consumer's `max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// Var: how many messages of a batch the tagger processes at once.
pub const CONCURRENCY: &str = "CONCURRENCY";
/// Default of [`CONCURRENCY`].
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Parses a numeric var, falling back to `default` when it is unset, empty or invalid.
pub fn parse_var<T: std::str::FromStr>(value: Option<&str>, default: T) -> T {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Parses `MIN_SCORE`: a finite number in `[0, 1]`, else the default.
pub fn parse_min_score(value: Option<&str>) -> f64 {
    let score = parse_var(value, DEFAULT_MIN_SCORE);
    if score.is_finite() && (0.0..=1.0).contains(&score) {
        score
    } else {
        DEFAULT_MIN_SCORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_fall_back_to_defaults() {
        assert_eq!(parse_var::<u64>(None, 7), 7);
        assert_eq!(parse_var::<u64>(Some(""), 7), 7);
        assert_eq!(parse_var::<u64>(Some(" 12 "), 7), 12);
        assert_eq!(parse_var::<u64>(Some("-1"), 7), 7);
        assert_eq!(parse_min_score(Some("0.5")), 0.5);
        assert_eq!(parse_min_score(Some("1.5")), DEFAULT_MIN_SCORE);
        assert_eq!(parse_min_score(Some("NaN")), DEFAULT_MIN_SCORE);
        assert_eq!(parse_min_score(None), DEFAULT_MIN_SCORE);
    }
}
