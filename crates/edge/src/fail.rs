//! Platform errors (bindings, D1, KV, R2, queues) into each worker's error type: the
//! tagger's retryable [`TagError::Storage`], the upload worker's `503`
//! [`ApiError::Unavailable`]. Each message says what failed.

use std::fmt::Display;

use shared::api::ApiError;
use shared::TagError;

/// An error type a failed platform call becomes.
pub trait PlatformError: Sized {
    /// The error for `what` failing with `detail`.
    fn platform(what: &str, detail: impl Display) -> Self;
}

impl PlatformError for TagError {
    fn platform(what: &str, detail: impl Display) -> Self {
        TagError::Storage(format!("{what}: {detail}"))
    }
}

impl PlatformError for ApiError {
    fn platform(what: &str, detail: impl Display) -> Self {
        ApiError::Unavailable(format!("{what}: {detail}"))
    }
}

/// Maps platform errors to [`TagError::Storage`], saying what failed.
pub trait OrStorage<T> {
    fn or_storage(self, what: &str) -> Result<T, TagError>;
}

impl<T, E: Display> OrStorage<T> for Result<T, E> {
    fn or_storage(self, what: &str) -> Result<T, TagError> {
        self.map_err(|e| TagError::platform(what, e))
    }
}

/// Maps platform errors to a `503` (a dependency failed; the client may retry).
pub trait OrUnavailable<T> {
    fn or_unavailable(self, what: &str) -> Result<T, ApiError>;
}

impl<T, E: Display> OrUnavailable<T> for Result<T, E> {
    fn or_unavailable(self, what: &str) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::platform(what, e))
    }
}
