//! What can go wrong while tagging, split into retryable and permanent.
//!
//! The split maps straight onto the queue: a retryable error retries the one message with a
//! backoff; a permanent one writes a `failed` record and acks.

use crate::record::ErrorInfo;

/// A failure to tag one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagError {
    /// Permanent: the R2 object is gone.
    ObjectMissing,
    /// Permanent: the bytes are not a usable image (the model, or decoding, says so).
    InvalidImage(String),
    /// Permanent: the image has more pixels, or needs more memory to decode, than allowed.
    ImageTooLarge(String),
    /// Permanent: the queue body is not JSON of a known shape.
    MalformedMessage(String),
    /// Permanent: the queue body has a schema version this build does not know.
    UnsupportedSchema(u64),
    /// Permanent: the queue gave up after its retries (the dead letter consumer's verdict).
    RetriesExhausted,
    /// Retryable: Workers AI is out of capacity (3040).
    AiCapacity(String),
    /// Retryable: Workers AI rate-limited us (3021).
    AiRateLimited(String),
    /// Retryable: any other Workers AI failure (5xx, time-outs, unknown errors).
    AiUnavailable(String),
    /// Retryable: a transient R2 or KV error.
    Storage(String),
}

/// What the queue should do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Acknowledge: the message is finished, successfully or not.
    Ack,
    /// Retry this message alone, after a backoff.
    Retry,
}

/// Workers AI error codes that mean the input itself is unusable.
const AI_INVALID_INPUT_CODES: [u32; 2] = [3010, 5006];

impl TagError {
    /// Stable, machine-readable code, stored in `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ObjectMissing => "object_missing",
            Self::InvalidImage(_) => "invalid_image",
            Self::ImageTooLarge(_) => "image_too_large",
            Self::MalformedMessage(_) => "malformed_message",
            Self::UnsupportedSchema(_) => "unsupported_schema_version",
            Self::RetriesExhausted => "retries_exhausted",
            Self::AiCapacity(_) => "ai_capacity",
            Self::AiRateLimited(_) => "ai_rate_limited",
            Self::AiUnavailable(_) => "ai_unavailable",
            Self::Storage(_) => "storage_unavailable",
        }
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::AiCapacity(_)
                | Self::AiRateLimited(_)
                | Self::AiUnavailable(_)
                | Self::Storage(_)
        )
    }

    /// Retry or ack.
    pub fn disposition(&self) -> Disposition {
        if self.is_retryable() {
            Disposition::Retry
        } else {
            Disposition::Ack
        }
    }

    /// Human-readable detail.
    pub fn message(&self) -> String {
        match self {
            Self::ObjectMissing => "the uploaded object is no longer in R2".into(),
            Self::InvalidImage(m) => format!("the image is not usable: {m}"),
            Self::ImageTooLarge(m) => format!("the image is too large: {m}"),
            Self::MalformedMessage(m) => format!("malformed queue message: {m}"),
            Self::UnsupportedSchema(v) => format!("unsupported message schema version {v}"),
            Self::RetriesExhausted => "gave up after the queue's retries".into(),
            Self::AiCapacity(m) | Self::AiRateLimited(m) | Self::AiUnavailable(m) => {
                format!("Workers AI failed: {m}")
            }
            Self::Storage(m) => format!("storage failed: {m}"),
        }
    }

    /// Code and message, as stored in a record.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code().into(),
            message: self.message(),
        }
    }

    /// Classifies the error message of a Workers AI call. Messages carry a numeric code,
    /// e.g. `3040: Capacity temporarily exceeded`; unknown failures are assumed transient.
    pub fn from_ai_error(message: &str) -> Self {
        let message = message.to_string();
        match first_code(&message) {
            Some(3040) => Self::AiCapacity(message),
            Some(3021) => Self::AiRateLimited(message),
            Some(code) if AI_INVALID_INPUT_CODES.contains(&code) => Self::InvalidImage(message),
            _ => Self::AiUnavailable(message),
        }
    }
}

impl From<crate::message::DecodeError> for TagError {
    fn from(e: crate::message::DecodeError) -> Self {
        match e {
            crate::message::DecodeError::UnsupportedVersion(v) => Self::UnsupportedSchema(v),
            malformed => Self::MalformedMessage(malformed.to_string()),
        }
    }
}

/// Decoding failures: `image_too_large` and `invalid_image` are permanent; a failing reader is
/// a storage problem, retried.
#[cfg(feature = "imaging")]
impl From<crate::imaging::ImageError> for TagError {
    fn from(e: crate::imaging::ImageError) -> Self {
        use crate::imaging::ImageError;
        match e {
            ImageError::TooLarge(m) => Self::ImageTooLarge(m),
            ImageError::Invalid(m) => Self::InvalidImage(m),
            ImageError::Read(m) => Self::Storage(format!("reading the image: {m}")),
        }
    }
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for TagError {}

/// The first standalone 4-digit number in a message: Workers AI's error code.
fn first_code(message: &str) -> Option<u32> {
    message
        .split(|c: char| !c.is_ascii_digit())
        .find(|part| part.len() == 4)
        .and_then(|part| part.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai_errors_are_classified_by_code() {
        let cases = [
            (
                "AiError: 3040: Capacity temporarily exceeded, please try again.",
                "ai_capacity",
                true,
            ),
            ("3021: Rate limited", "ai_rate_limited", true),
            (
                "InferenceUpstreamError: ERROR 3010: Invalid or incomplete input",
                "invalid_image",
                false,
            ),
            ("5006: Invalid image: not decodable", "invalid_image", false),
            ("Internal server error (500)", "ai_unavailable", true),
            ("network connection lost", "ai_unavailable", true),
            ("", "ai_unavailable", true),
        ];
        for (msg, code, retry) in cases {
            let e = TagError::from_ai_error(msg);
            assert_eq!(e.code(), code, "{msg}");
            assert_eq!(e.is_retryable(), retry, "{msg}");
            assert_eq!(
                e.disposition(),
                if retry {
                    Disposition::Retry
                } else {
                    Disposition::Ack
                }
            );
        }
    }

    #[test]
    fn permanent_and_retryable_split() {
        assert_eq!(TagError::ObjectMissing.disposition(), Disposition::Ack);
        assert_eq!(TagError::RetriesExhausted.disposition(), Disposition::Ack);
        assert_eq!(
            TagError::UnsupportedSchema(9).disposition(),
            Disposition::Ack
        );
        assert_eq!(
            TagError::Storage("kv".into()).disposition(),
            Disposition::Retry
        );
        assert_eq!(TagError::ObjectMissing.info().code, "object_missing");
        let too_large = TagError::ImageTooLarge("9000x9000".into());
        assert_eq!(too_large.code(), "image_too_large");
        assert_eq!(too_large.disposition(), Disposition::Ack);
    }

    #[cfg(feature = "imaging")]
    #[test]
    fn image_errors_map_to_tag_errors() {
        use crate::imaging::ImageError;
        for (e, code, retry) in [
            (ImageError::TooLarge("x".into()), "image_too_large", false),
            (ImageError::Invalid("x".into()), "invalid_image", false),
            (ImageError::Read("x".into()), "storage_unavailable", true),
        ] {
            let tag = TagError::from(e.clone());
            assert_eq!(tag.code(), code);
            assert_eq!(tag.is_retryable(), retry);
            if e.is_permanent() {
                assert_eq!(tag.code(), e.code());
            }
        }
    }
}
