//! Every way a request to the upload worker can fail: its status, stable code and JSON body.

use serde::Serialize;

use crate::image::format::TypeError;

/// Every way a request can fail, with its status and stable code. The HTTP edge logs the
/// detail of internal errors and sends clients only [`ApiError::body`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// 404: no such route.
    NotFound,
    /// 405, with `Allow`.
    MethodNotAllowed { allow: &'static str },
    /// 400: the id in the path is not a canonical lowercase v4 UUID.
    InvalidId,
    /// 404: a well-formed id that nobody uploaded.
    ImageNotFound,
    /// 413: more pixels than `MAX_PIXELS`, read from the image's header.
    ImageTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// 409: a request with the same `Idempotency-Key` is still running.
    IdempotencyKeyInFlight,
    /// 422: the `Idempotency-Key` was used before with a different body.
    IdempotencyKeyReused,
    /// 409: the image was deleted (`DELETE /images/{id}`) while its upload ran; nothing of
    /// it was kept.
    ImageDeleted,
    /// 400: no body.
    EmptyBody,
    /// 400: `Content-Length` is not a non-negative integer.
    InvalidContentLength,
    /// 413: larger than `MAX_UPLOAD_BYTES`.
    PayloadTooLarge { limit: u64 },
    /// 415: not JPEG, PNG, GIF or WebP, or contradicting its declared `image/*` type.
    UnsupportedMediaType(String),
    /// 400: a multipart body without exactly one file in `image` or `file`.
    InvalidMultipart(String),
    /// 400: the body ended early or did not match its `Content-Length`.
    IncompleteBody,
    /// 400: a malformed `Idempotency-Key`.
    InvalidIdempotencyKey,
    /// 400: a `Callback-Url` that [`crate::webhook::url`] refuses; says why.
    InvalidCallbackUrl(String),
    /// 400: a search or list parameter is unknown, repeated or malformed.
    InvalidQuery(String),
    /// 400: a `cursor` that is malformed, tampered with, or used with other filters.
    InvalidCursor,
    /// 416: a `Range` outside the image, with `Content-Range: bytes */{size}`.
    RangeNotSatisfiable { size: u64 },
    /// 401, with `WWW-Authenticate`.
    Unauthorized,
    /// 500: a bug or a platform failure; detail is logged, not sent.
    Internal(String),
    /// 503: a dependency (R2, KV, the queue) failed; the client may retry.
    Unavailable(String),
    /// 401: no `API_TOKEN` is set and `ALLOW_ANONYMOUS` is not: the API is closed.
    AuthNotConfigured,
    /// 403: the key lacks the scope (or is not the operator key) this needs; names it.
    InsufficientScope(&'static str),
    /// 429: the caller's uploads are over the rate limit, with `Retry-After`.
    RateLimited { retry_after: u64 },
    /// 429: the key's `dailyUploads` are used up, with `Retry-After` to the next UTC day.
    QuotaExceeded { limit: u64, retry_after: u64 },
    /// 404: no client key with this id.
    KeyNotFound,
    /// 400: a `POST /admin/keys` body that is not a valid key request; says why.
    InvalidKeyRequest(String),
    /// 422: the head of the image shows it cannot be decoded within the CPU bound (a JPEG with
    /// more scans than any encoder writes); says why.
    InvalidImage(String),
    /// 401: a live-updates ticket (`GET /events`) that is malformed, forged or expired.
    InvalidTicket,
    /// 426: `GET /events` without a WebSocket upgrade.
    UpgradeRequired,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound | Self::ImageNotFound => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::InvalidId
            | Self::EmptyBody
            | Self::InvalidContentLength
            | Self::InvalidMultipart(_)
            | Self::IncompleteBody
            | Self::InvalidIdempotencyKey
            | Self::InvalidCallbackUrl(_)
            | Self::InvalidQuery(_)
            | Self::InvalidCursor => 400,
            Self::RangeNotSatisfiable { .. } => 416,
            Self::PayloadTooLarge { .. } | Self::ImageTooLarge { .. } => 413,
            Self::IdempotencyKeyInFlight | Self::ImageDeleted => 409,
            Self::IdempotencyKeyReused | Self::InvalidImage(_) => 422,
            Self::UnsupportedMediaType(_) => 415,
            Self::Unauthorized => 401,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
            Self::AuthNotConfigured => 401,
            Self::InsufficientScope(_) => 403,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => 429,
            Self::KeyNotFound => 404,
            Self::InvalidKeyRequest(_) => 400,
            Self::InvalidTicket => 401,
            Self::UpgradeRequired => 426,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidId => "invalid_id",
            Self::ImageNotFound => "image_not_found",
            Self::ImageTooLarge { .. } => "image_too_large",
            Self::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::ImageDeleted => "image_deleted",
            Self::EmptyBody => "empty_body",
            Self::InvalidContentLength => "invalid_content_length",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::InvalidMultipart(_) => "invalid_multipart",
            Self::IncompleteBody => "incomplete_body",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidCallbackUrl(_) => "invalid_callback_url",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidCursor => "invalid_cursor",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::Unauthorized => "unauthorized",
            Self::Internal(_) => "internal_error",
            Self::Unavailable(_) => "unavailable",
            Self::AuthNotConfigured => "auth_not_configured",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::KeyNotFound => "key_not_found",
            Self::InvalidKeyRequest(_) => "invalid_key_request",
            Self::InvalidImage(_) => "invalid_image",
            Self::InvalidTicket => "invalid_ticket",
            Self::UpgradeRequired => "upgrade_required",
        }
    }

    /// Message safe to show a client.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "no such route".into(),
            Self::MethodNotAllowed { allow } => format!("method not allowed; use one of: {allow}"),
            Self::InvalidId => crate::wire::id::InvalidId.to_string(),
            Self::ImageNotFound => "no image with this id".into(),
            Self::ImageTooLarge {
                width,
                height,
                max_pixels,
            } => format!("the image is {width}x{height}, more than {max_pixels} pixels"),
            Self::IdempotencyKeyInFlight => {
                "a request with this Idempotency-Key is still running; retry later".into()
            }
            Self::IdempotencyKeyReused => {
                "this Idempotency-Key was used with a different body".into()
            }
            Self::ImageDeleted => {
                "the image was deleted while it was being uploaded; nothing was kept".into()
            }
            Self::EmptyBody => "the request has no body; send the image bytes".into(),
            Self::InvalidContentLength => "Content-Length must be a non-negative integer".into(),
            Self::PayloadTooLarge { limit } => format!("the image is larger than {limit} bytes"),
            Self::UnsupportedMediaType(why) => why.clone(),
            Self::InvalidMultipart(why) => why.clone(),
            Self::IncompleteBody => "the body could not be read in full".into(),
            Self::InvalidIdempotencyKey => {
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into()
            }
            Self::InvalidCallbackUrl(why) => why.clone(),
            Self::InvalidQuery(why) => why.clone(),
            Self::InvalidCursor => {
                "the cursor is malformed, altered, expired by a key change, or was issued \
                 for other filters; start again without it"
                    .into()
            }
            Self::RangeNotSatisfiable { size } => {
                format!("the range is outside the image's {size} bytes")
            }
            Self::Unauthorized => "a valid bearer token is required".into(),
            Self::Internal(_) => "internal error".into(),
            Self::Unavailable(_) => "a storage service is unavailable; try again".into(),
            Self::AuthNotConfigured => "the API is closed: no operator key is configured. Set \
                 one with `npx wrangler secret put API_TOKEN -c wrangler.upload.toml`, or, for \
                 a local run only, the var ALLOW_ANONYMOUS = \"true\""
                .into(),
            Self::InsufficientScope(needed) => format!("this needs {needed}"),
            Self::RateLimited { retry_after } => {
                format!("too many uploads from this key; retry in {retry_after} s")
            }
            Self::QuotaExceeded { limit, retry_after } => format!(
                "this key's {limit} uploads for today are used; retry in {retry_after} s \
                 (the next UTC day)"
            ),
            Self::KeyNotFound => "no key with this id".into(),
            Self::InvalidKeyRequest(why) => why.clone(),
            Self::InvalidImage(why) => why.clone(),
            Self::InvalidTicket => "the live-updates ticket is malformed, altered or expired; \
                 get a new one with POST /events/ticket"
                .into(),
            Self::UpgradeRequired => "GET /events is a WebSocket: send Upgrade: websocket".into(),
        }
    }

    /// The JSON body: `{"error": {"code": "...", "message": "..."}}`.
    pub fn body(&self) -> String {
        let message = self.message();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: &message,
            },
        };
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The `Retry-After` of a `429`, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } | Self::QuotaExceeded { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// One value of every variant, for the generated contract and exhaustive tests.
    pub fn samples() -> Vec<Self> {
        let s = String::new;
        vec![
            Self::NotFound,
            Self::MethodNotAllowed { allow: "" },
            Self::InvalidId,
            Self::ImageNotFound,
            Self::ImageTooLarge {
                width: 0,
                height: 0,
                max_pixels: 0,
            },
            Self::IdempotencyKeyInFlight,
            Self::IdempotencyKeyReused,
            Self::ImageDeleted,
            Self::EmptyBody,
            Self::InvalidContentLength,
            Self::PayloadTooLarge { limit: 0 },
            Self::UnsupportedMediaType(s()),
            Self::InvalidMultipart(s()),
            Self::IncompleteBody,
            Self::InvalidIdempotencyKey,
            Self::InvalidCallbackUrl(s()),
            Self::InvalidQuery(s()),
            Self::InvalidCursor,
            Self::RangeNotSatisfiable { size: 0 },
            Self::Unauthorized,
            Self::Internal(s()),
            Self::Unavailable(s()),
            Self::AuthNotConfigured,
            Self::InsufficientScope(""),
            Self::RateLimited { retry_after: 0 },
            Self::QuotaExceeded {
                limit: 0,
                retry_after: 0,
            },
            Self::KeyNotFound,
            Self::InvalidKeyRequest(s()),
            Self::InvalidImage(s()),
            Self::InvalidTicket,
            Self::UpgradeRequired,
        ]
    }
}

impl std::fmt::Display for ApiError {
    /// The code and the client-safe message; internal detail stays out (log it separately).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl From<crate::webhook::url::UrlError> for ApiError {
    fn from(e: crate::webhook::url::UrlError) -> Self {
        Self::InvalidCallbackUrl(e.to_string())
    }
}

impl From<crate::image::header::TooLarge> for ApiError {
    fn from(e: crate::image::header::TooLarge) -> Self {
        Self::ImageTooLarge {
            width: e.width,
            height: e.height,
            max_pixels: e.max_pixels,
        }
    }
}

impl From<TypeError> for ApiError {
    fn from(e: TypeError) -> Self {
        Self::UnsupportedMediaType(match e {
            TypeError::NotAnImage => "only JPEG, PNG, GIF and WebP images are accepted".into(),
            TypeError::Mismatch { declared, actual } => format!(
                "the body is {} but Content-Type says {declared}",
                actual.mime()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_json_bodies() {
        let body: serde_json::Value =
            serde_json::from_str(&ApiError::MethodNotAllowed { allow: "GET" }.body()).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
        let internal = ApiError::Internal("secret detail".into());
        assert_eq!(internal.status(), 500);
        assert!(!internal.body().contains("secret"));
    }

    #[test]
    fn codes_are_unique() {
        let codes: std::collections::HashSet<_> =
            ApiError::samples().iter().map(ApiError::code).collect();
        assert_eq!(codes.len(), ApiError::samples().len());
    }
}
