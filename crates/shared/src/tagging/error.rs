//! What can stop a message from being tagged, and how each case is handled.
//!
//! Every error has a [`Class`], which is all the retry policy ([`crate::tagging::retry`]) looks at:
//! permanent errors fail the image at once; everything else is tried again later, and only
//! transient errors and an unavailable AI are bounded by the give-up horizon.

use crate::wire::record::ErrorInfo;

/// A failure to tag one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagError {
    /// Permanent: the R2 object is gone.
    ObjectMissing,
    /// Permanent: the bytes are not a usable image (they do not decode, or the model says so).
    InvalidImage(String),
    /// Permanent: more pixels than `MAX_PIXELS`, or more than the model accepts.
    ImageTooLarge(String),
    /// Permanent: the queue body is not a message this build can act on.
    MalformedMessage(String),
    /// Permanent: a schema version older than this build understands.
    UnsupportedSchema(u64),
    /// Permanent: the queue gave up after its retries (the dead letter consumer's verdict).
    RetriesExhausted,
    /// Permanent: transient errors lasted past `GIVE_UP_AFTER_SECONDS`; holds the last one.
    TimedOut(String),
    /// Busy: Workers AI is out of capacity, timed out or failed upstream.
    AiBusy(String),
    /// Busy: any other Workers AI failure, including ones without a documented code.
    AiUnavailable(String),
    /// Scheduled: the account's daily free allocation is used up (3036), until the next UTC day.
    AiQuota(String),
    /// Misconfigured: Workers AI refuses the account or the model; the operator must act.
    AiMisconfigured(String),
    /// Scheduled: the fleet-wide pacer has no call to spare now.
    Paced,
    /// Scheduled: `AI_DAILY_BUDGET` calls were made today.
    BudgetSpent,
    /// Scheduled: another delivery of the same image holds its lease.
    Leased,
    /// Transient: a schema version newer than this build; the new tagger may not be deployed yet.
    NewerSchema(u64),
    /// Transient: R2, KV, D1 or a queue failed.
    Storage(String),
}

/// How the retry policy treats an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Fail the image now.
    Permanent,
    /// Back off, stop calling the model for the rest of the batch, until the horizon.
    Busy,
    /// Wait until a known time (the pacer's slot, the next day, the lease's end).
    Scheduled,
    /// Back off long, without a horizon: every image would fail the same way.
    Misconfigured,
    /// Back off, until the horizon.
    Transient,
}

/// A documented Workers AI error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AiErrorCode {
    pub code: u32,
    pub meaning: &'static str,
    /// The HTTP status Workers AI answers with it.
    pub http_status: u16,
    pub kind: AiErrorKind,
}

const fn ai(code: u32, meaning: &'static str, http_status: u16, kind: AiErrorKind) -> AiErrorCode {
    AiErrorCode {
        code,
        meaning,
        http_status,
        kind,
    }
}

/// Workers AI error codes, from Cloudflare's documented table
/// (developers.cloudflare.com/workers-ai/platform/errors/), and what each means here. 3010 is
/// not on that page: it is kept as invalid input by our own choice (tests/ai-errors.test.mjs
/// names it); the AI stub never sends it.
pub const AI_ERROR_CODES: &[AiErrorCode] = &[
    ai(3003, "incomplete request", 400, AiErrorKind::Unknown),
    ai(3006, "request too large", 413, AiErrorKind::TooLarge),
    ai(3007, "timeout", 408, AiErrorKind::Busy),
    ai(3008, "aborted", 408, AiErrorKind::Busy),
    ai(
        3010,
        "invalid or incomplete input for the model",
        400,
        AiErrorKind::InvalidInput,
    ),
    ai(3023, "account blocked", 403, AiErrorKind::Misconfigured),
    ai(
        3036,
        "daily free allocation used up",
        429,
        AiErrorKind::Quota,
    ),
    // Finetunes and LoRA: a model set up wrongly, never this image's fault.
    ai(
        3039,
        "finetune missing required files",
        400,
        AiErrorKind::Misconfigured,
    ),
    ai(3040, "out of capacity", 429, AiErrorKind::Busy),
    ai(
        3041,
        "private model not allowed",
        403,
        AiErrorKind::Misconfigured,
    ),
    ai(3042, "invalid model id", 404, AiErrorKind::Misconfigured),
    ai(5004, "invalid data", 400, AiErrorKind::InvalidInput),
    ai(5005, "LoRA unsupported", 405, AiErrorKind::Misconfigured),
    ai(5007, "no such model", 400, AiErrorKind::Misconfigured),
    ai(
        5016,
        "model terms not agreed",
        403,
        AiErrorKind::Misconfigured,
    ),
    ai(
        5018,
        "model access not allowed",
        403,
        AiErrorKind::Misconfigured,
    ),
    ai(
        5019,
        "deprecated SDK version",
        405,
        AiErrorKind::Misconfigured,
    ),
];

/// What a Workers AI error code says about the failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AiErrorKind {
    /// Try again later.
    Busy,
    /// Not before the next UTC day.
    Quota,
    /// The image's fault.
    InvalidInput,
    /// The image is too large for the model.
    TooLarge,
    /// The account's or the model's configuration.
    Misconfigured,
    /// Not documented, or documented without a clear meaning: assumed transient.
    Unknown,
}

impl TagError {
    /// Stable, machine-readable code: stored in `error.code`, logged as `errorCode`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ObjectMissing => "object_missing",
            Self::InvalidImage(_) => "invalid_image",
            Self::ImageTooLarge(_) => "image_too_large",
            Self::MalformedMessage(_) => "malformed_message",
            Self::UnsupportedSchema(_) => "unsupported_schema_version",
            Self::RetriesExhausted => "retries_exhausted",
            Self::TimedOut(_) => "timed_out",
            Self::AiBusy(_) => "ai_busy",
            Self::AiUnavailable(_) => "ai_unavailable",
            Self::AiQuota(_) => "ai_quota",
            Self::AiMisconfigured(_) => "ai_misconfigured",
            Self::Paced => "paced",
            Self::BudgetSpent => "budget_spent",
            Self::Leased => "leased",
            Self::NewerSchema(_) => "newer_schema_version",
            Self::Storage(_) => "storage_unavailable",
        }
    }

    /// How the retry policy treats it.
    pub fn class(&self) -> Class {
        match self {
            Self::ObjectMissing
            | Self::InvalidImage(_)
            | Self::ImageTooLarge(_)
            | Self::MalformedMessage(_)
            | Self::UnsupportedSchema(_)
            | Self::RetriesExhausted
            | Self::TimedOut(_) => Class::Permanent,
            Self::AiBusy(_) | Self::AiUnavailable(_) => Class::Busy,
            Self::AiQuota(_) | Self::Paced | Self::BudgetSpent | Self::Leased => Class::Scheduled,
            Self::AiMisconfigured(_) => Class::Misconfigured,
            Self::NewerSchema(_) | Self::Storage(_) => Class::Transient,
        }
    }

    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() != Class::Permanent
    }

    /// Human-readable detail.
    pub fn message(&self) -> String {
        match self {
            Self::ObjectMissing => "the uploaded object is no longer in R2".into(),
            Self::InvalidImage(m) => format!("not a usable image: {m}"),
            Self::ImageTooLarge(m) => format!("the image is too large: {m}"),
            Self::MalformedMessage(m) => format!("malformed queue message: {m}"),
            Self::UnsupportedSchema(v) => format!("unsupported message schema version {v}"),
            Self::RetriesExhausted => "gave up after the queue's retries".into(),
            Self::TimedOut(last) => format!("gave up after the retry horizon; last error: {last}"),
            Self::AiBusy(m) | Self::AiUnavailable(m) | Self::AiQuota(m) => {
                format!("Workers AI failed: {m}")
            }
            Self::AiMisconfigured(m) => format!("Workers AI refuses this account or model: {m}"),
            Self::Paced => "waiting for the fleet-wide AI rate".into(),
            Self::BudgetSpent => "AI_DAILY_BUDGET is spent for today".into(),
            Self::Leased => "another delivery is tagging this image".into(),
            Self::NewerSchema(v) => format!("message schema version {v} is newer than this build"),
            Self::Storage(m) => format!("storage failed: {m}"),
        }
    }

    /// Code and the fixed text of [`TagError::public_message`], as stored in a record and
    /// sent in webhooks: what a client sees. The detail ([`TagError::message`]) is logged.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code().into(),
            message: self.public_message(),
        }
    }

    /// Classifies the error of a Workers AI call from its message. Only the shape the binding
    /// produces is read: an optional `Name: ` prefix, then the code as `NNNN: ` at the start.
    /// Anything else is an unknown, retryable error, never a permanent one.
    pub fn from_ai_error(message: &str) -> Self {
        let text = message.to_string();
        let kind = ai_error_code(message).map_or(AiErrorKind::Unknown, |code| {
            AI_ERROR_CODES
                .iter()
                .find(|c| c.code == code)
                .map_or(AiErrorKind::Unknown, |c| c.kind)
        });
        match kind {
            AiErrorKind::Busy => Self::AiBusy(text),
            AiErrorKind::Quota => Self::AiQuota(text),
            AiErrorKind::InvalidInput => Self::InvalidImage(text),
            AiErrorKind::TooLarge => Self::ImageTooLarge(text),
            AiErrorKind::Misconfigured => Self::AiMisconfigured(text),
            AiErrorKind::Unknown => Self::AiUnavailable(text),
        }
    }

    /// One value of every variant, for the generated contract and exhaustive tests.
    pub fn samples() -> Vec<Self> {
        let s = String::new;
        vec![
            Self::ObjectMissing,
            Self::InvalidImage(s()),
            Self::ImageTooLarge(s()),
            Self::MalformedMessage(s()),
            Self::UnsupportedSchema(0),
            Self::RetriesExhausted,
            Self::TimedOut(s()),
            Self::AiBusy(s()),
            Self::AiUnavailable(s()),
            Self::AiQuota(s()),
            Self::AiMisconfigured(s()),
            Self::Paced,
            Self::BudgetSpent,
            Self::Leased,
            Self::NewerSchema(0),
            Self::Storage(s()),
        ]
    }
}

impl From<crate::wire::message::DecodeError> for TagError {
    fn from(e: crate::wire::message::DecodeError) -> Self {
        use crate::wire::message::DecodeError;
        match e {
            DecodeError::UnsupportedVersion(v)
                if v > u64::from(crate::wire::message::SCHEMA_VERSION) =>
            {
                Self::NewerSchema(v)
            }
            DecodeError::UnsupportedVersion(v) => Self::UnsupportedSchema(v),
            malformed => Self::MalformedMessage(malformed.to_string()),
        }
    }
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for TagError {}

/// The Workers AI code of an error message of the shape `[Name: ]NNNN: description`.
pub fn ai_error_code(message: &str) -> Option<u32> {
    let rest = match message.split_once(": ") {
        Some((name, rest)) if is_error_name(name) => rest,
        _ => message,
    };
    let (code, _) = rest.split_once(": ")?;
    (code.len() == 4 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| code.parse().ok())
        .flatten()
}

/// A JS error name such as `Error` or `InferenceUpstreamError`.
fn is_error_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
}

impl TagError {
    /// The text a client is shown for this error: fixed per code, never the platform's or a
    /// dependency's error text (Workers AI, R2, D1, a decoder), which goes to the logs only
    /// ([`TagError::message`]). `timed_out` names the code of the error that kept failing.
    pub fn public_message(&self) -> String {
        match self {
            Self::ObjectMissing => "the uploaded object is no longer in R2".into(),
            Self::InvalidImage(_) => {
                "not a usable image: it does not decode within the limits, or the model \
                 refused it"
                    .into()
            }
            Self::ImageTooLarge(_) => {
                "the image is too large: more pixels than MAX_PIXELS, more memory than \
                 decoding allows, or more than the model accepts"
                    .into()
            }
            Self::MalformedMessage(_) => "malformed queue message".into(),
            Self::UnsupportedSchema(v) => format!("unsupported message schema version {v}"),
            Self::RetriesExhausted => "gave up after the queue's retries".into(),
            Self::TimedOut(last) => {
                // `policy::decide` writes `code: message`; only a known code is shown.
                let code = last.split(':').next().unwrap_or_default();
                let known = Self::samples().iter().any(|e| e.code() == code);
                match known {
                    true => format!("gave up after the retry horizon; last error: {code}"),
                    false => "gave up after the retry horizon".into(),
                }
            }
            Self::AiBusy(_) | Self::AiUnavailable(_) | Self::AiQuota(_) => {
                "Workers AI failed; the image is retried".into()
            }
            Self::AiMisconfigured(_) => "Workers AI refuses this account or model".into(),
            Self::Storage(_) => "a storage service failed; the image is retried".into(),
            // These carry no outside text.
            Self::Paced | Self::BudgetSpent | Self::Leased | Self::NewerSchema(_) => self.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ai_errors_are_classified_from_the_documented_table() {
        let cases = [
            (
                "InferenceUpstreamError: 3040: Capacity temporarily exceeded",
                "ai_busy",
            ),
            ("3040: Capacity temporarily exceeded", "ai_busy"),
            ("Error: 3007: Request timeout", "ai_busy"),
            ("3008: Request aborted", "ai_busy"),
            (
                "3036: You have used up your daily free allocation",
                "ai_quota",
            ),
            (
                "InferenceUpstreamError: 3010: Invalid or incomplete input",
                "invalid_image",
            ),
            ("5004: Invalid data", "invalid_image"),
            ("3006: Request is too large", "image_too_large"),
            ("5007: No such model", "ai_misconfigured"),
            ("3023: Account blocked", "ai_misconfigured"),
            ("3042: Invalid model ID", "ai_misconfigured"),
            ("5019: Deprecated SDK", "ai_misconfigured"),
            ("3003: Incomplete request", "ai_unavailable"),
            // Not in the table: unknown, so transient.
            ("5006: Invalid image", "ai_unavailable"),
            ("3021: Rate limited", "ai_unavailable"),
            // Codes anywhere but at the start are not codes.
            ("upstream timed out after 5006 ms", "ai_unavailable"),
            ("Error: upstream timed out after 3010 ms", "ai_unavailable"),
            ("ERROR 3010: Invalid input", "ai_unavailable"),
            ("Internal server error (500)", "ai_unavailable"),
            ("network connection lost", "ai_unavailable"),
            ("", "ai_unavailable"),
        ];
        for (message, code) in cases {
            assert_eq!(TagError::from_ai_error(message).code(), code, "{message:?}");
        }
    }

    #[test]
    fn clients_never_see_outside_text() {
        const SECRET: &str = "internal-host-10.0.0.7 /etc/passwd";
        let with = |e: TagError| match e {
            TagError::InvalidImage(_) => TagError::InvalidImage(SECRET.into()),
            TagError::ImageTooLarge(_) => TagError::ImageTooLarge(SECRET.into()),
            TagError::MalformedMessage(_) => TagError::MalformedMessage(SECRET.into()),
            TagError::TimedOut(_) => TagError::TimedOut(format!("ai_busy: {SECRET}")),
            TagError::AiBusy(_) => TagError::AiBusy(SECRET.into()),
            TagError::AiUnavailable(_) => TagError::AiUnavailable(SECRET.into()),
            TagError::AiQuota(_) => TagError::AiQuota(SECRET.into()),
            TagError::AiMisconfigured(_) => TagError::AiMisconfigured(SECRET.into()),
            TagError::Storage(_) => TagError::Storage(SECRET.into()),
            other => other,
        };
        for error in TagError::samples().into_iter().map(with) {
            let info = error.info();
            assert_eq!(info.code, error.code());
            assert!(
                !info.message.contains("10.0.0.7"),
                "{error:?}: {}",
                info.message
            );
            assert!(!info.message.is_empty());
            // The detail is still there for the logs.
            if !matches!(
                error,
                TagError::ObjectMissing
                    | TagError::UnsupportedSchema(_)
                    | TagError::RetriesExhausted
                    | TagError::Paced
                    | TagError::BudgetSpent
                    | TagError::Leased
                    | TagError::NewerSchema(_)
            ) {
                assert!(error.message().contains("10.0.0.7"), "{error:?}");
            }
        }
        let timed_out = TagError::TimedOut(format!("ai_busy: {SECRET}"))
            .info()
            .message;
        assert!(timed_out.ends_with("last error: ai_busy"), "{timed_out}");
        let odd = TagError::TimedOut(SECRET.into()).info().message;
        assert_eq!(odd, "gave up after the retry horizon");
        let ai = TagError::from_ai_error(&format!("InferenceUpstreamError: 3010: {SECRET}"));
        assert_eq!(ai.code(), "invalid_image");
        assert!(!ai.info().message.contains(SECRET));
    }

    #[test]
    fn classes() {
        assert_eq!(TagError::ObjectMissing.class(), Class::Permanent);
        assert_eq!(TagError::TimedOut("x".into()).class(), Class::Permanent);
        assert_eq!(TagError::AiBusy("x".into()).class(), Class::Busy);
        assert_eq!(TagError::BudgetSpent.class(), Class::Scheduled);
        assert_eq!(
            TagError::AiMisconfigured("x".into()).class(),
            Class::Misconfigured
        );
        assert_eq!(TagError::Storage("kv".into()).class(), Class::Transient);
        assert!(!TagError::RetriesExhausted.is_retryable());
        assert!(TagError::Leased.is_retryable());
        let codes: std::collections::HashSet<_> =
            TagError::samples().iter().map(TagError::code).collect();
        assert_eq!(codes.len(), TagError::samples().len(), "codes are unique");
    }

    proptest! {
        #[test]
        fn no_message_without_the_documented_shape_is_ever_permanent(message in "\\PC{0,80}") {
            let error = TagError::from_ai_error(&message);
            let shaped = ai_error_code(&message).is_some();
            prop_assert!(shaped || error.class() != Class::Permanent, "{message:?} -> {error:?}");
        }

        #[test]
        fn a_code_inside_a_message_is_never_read(
            prefix in "[a-z ]{1,20}", code in 1000u32..10000, suffix in "\\PC{0,20}"
        ) {
            let message = format!("{prefix} {code}: {suffix}");
            prop_assert_eq!(ai_error_code(&message), None);
            prop_assert_ne!(TagError::from_ai_error(&message).class(), Class::Permanent);
        }

        #[test]
        fn the_documented_shape_is_read(name in "[A-Z][A-Za-z]{0,20}", i in 0usize..AI_ERROR_CODES.len(), rest in "\\PC{0,30}") {
            let code = AI_ERROR_CODES[i].code;
            prop_assert_eq!(ai_error_code(&format!("{name}: {code}: {rest}")), Some(code));
            prop_assert_eq!(ai_error_code(&format!("{code}: {rest}")), Some(code));
        }
    }
}
