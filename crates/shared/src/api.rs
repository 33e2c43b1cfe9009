//! The HTTP contract of the upload worker, as pure functions: routing, errors and the checks
//! made on headers before any body is read.

use serde::Serialize;

use crate::sniff::TypeError;
use crate::ImageId;

/// An HTTP method, read from the raw request line. Methods are case-sensitive; anything
/// this API does not serve is [`Method::Other`], never mistaken for `GET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
    Options,
    Other,
}

impl Method {
    /// Parses a method name as sent.
    pub fn parse(raw: &str) -> Self {
        match raw {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

/// A request path, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the demo page (`GET`) and the original upload endpoint (`POST`).
    Root,
    /// `/images`: upload (`POST`), search and list (`GET`).
    Images,
    /// `/images/{id}`: status and record (`GET`), delete (`DELETE`).
    Image(ImageId),
    /// `/images/{id}/tags`: just the tags.
    ImageTags(ImageId),
    /// `/images/{id}/content`: the original bytes.
    ImageContent(ImageId),
    /// `/tags`: tags in use, with their counts.
    Tags,
    /// `/admin/usage`: today's Workers AI calls.
    AdminUsage,
    /// `/admin/keys`: create (`POST`) and list (`GET`) client keys.
    AdminKeys,
    /// `/admin/keys/{keyId}`: revoke a client key (`DELETE`).
    AdminKey(crate::auth::KeyId),
}

impl Route {
    /// Resolves a path. `Ok(None)` is an unknown path; an error is a malformed id.
    pub fn parse(path: &str) -> Result<Option<Self>, ApiError> {
        let rest = match path {
            "/" | "" => return Ok(Some(Self::Root)),
            "/images" | "/images/" => return Ok(Some(Self::Images)),
            "/admin/usage" => return Ok(Some(Self::AdminUsage)),
            "/admin/keys" | "/admin/keys/" => return Ok(Some(Self::AdminKeys)),
            "/tags" | "/tags/" => return Ok(Some(Self::Tags)),
            _ => match path.strip_prefix("/images/") {
                Some(rest) => rest,
                // A malformed key id names no key: `404 key_not_found`, as an unknown one.
                None => {
                    return match path.strip_prefix("/admin/keys/") {
                        Some(id) => crate::auth::KeyId::parse(id)
                            .map(|id| Some(Self::AdminKey(id)))
                            .ok_or(ApiError::KeyNotFound),
                        None => Ok(None),
                    }
                }
            },
        };
        let (id, tail) = match rest.split_once('/') {
            Some((id, tail)) => (id, Some(tail)),
            None => (rest, None),
        };
        let id = || ImageId::parse(id).map_err(|_| ApiError::InvalidId);
        match tail {
            None | Some("") => Ok(Some(Self::Image(id()?))),
            Some("tags") => Ok(Some(Self::ImageTags(id()?))),
            Some("content") => Ok(Some(Self::ImageContent(id()?))),
            // A malformed id is reported as such; a good id with an unknown tail is a 404.
            Some(_) => id().map(|_| None),
        }
    }

    /// The methods this route answers, for `Allow` and CORS preflights.
    pub fn allow(self) -> &'static str {
        match self {
            Self::Root => "GET, HEAD, POST, OPTIONS",
            Self::Images => "GET, HEAD, POST, OPTIONS",
            Self::Image(_) => "GET, HEAD, DELETE, OPTIONS",
            Self::ImageTags(_) | Self::ImageContent(_) | Self::Tags | Self::AdminUsage => {
                "GET, HEAD, OPTIONS"
            }
            Self::AdminKeys => "GET, HEAD, POST, OPTIONS",
            Self::AdminKey(_) => "DELETE, OPTIONS",
        }
    }
}

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
            Self::IdempotencyKeyInFlight => 409,
            Self::IdempotencyKeyReused => 422,
            Self::UnsupportedMediaType(_) => 415,
            Self::Unauthorized => 401,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
            Self::AuthNotConfigured => 401,
            Self::InsufficientScope(_) => 403,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => 429,
            Self::KeyNotFound => 404,
            Self::InvalidKeyRequest(_) => 400,
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
        }
    }

    /// Message safe to show a client.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound => "no such route".into(),
            Self::MethodNotAllowed { allow } => format!("method not allowed; use one of: {allow}"),
            Self::InvalidId => crate::id::InvalidId.to_string(),
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

impl From<crate::dimensions::TooLarge> for ApiError {
    fn from(e: crate::dimensions::TooLarge) -> Self {
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

/// Checks a `Content-Length` header against the limit before any body is read.
/// `Ok(None)` means no length was given (a chunked body, counted while it streams).
pub fn check_content_length(header: Option<&str>, limit: u64) -> Result<Option<u64>, ApiError> {
    let Some(value) = header else { return Ok(None) };
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::InvalidContentLength);
    }
    // All digits: only overflow can fail, and an overflowing length is too large anyway.
    let length = value.parse::<u64>().unwrap_or(u64::MAX);
    match length {
        0 => Err(ApiError::EmptyBody),
        n if n > limit => Err(ApiError::PayloadTooLarge { limit }),
        n => Ok(Some(n)),
    }
}

/// Compares secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The `Access-Control-Allow-Origin` value for a request's `Origin`, if CORS allows it.
/// `allowed` is the `ALLOWED_ORIGINS` var: `*` or a comma-separated list of origins.
pub fn cors_origin(allowed: &str, origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    allowed.split(',').map(str::trim).find_map(|a| match a {
        "*" => Some("*".to_string()),
        a if !a.is_empty() && a.eq_ignore_ascii_case(origin) => Some(origin.to_string()),
        _ => None,
    })
}

/// A validated `Idempotency-Key` header value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// How long a key is remembered: 24 hours.
    pub const TTL_SECONDS: u64 = 24 * 60 * 60;

    /// Parses 1 to 255 visible ASCII characters.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let ok = (1..=255).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_string()))
        } else {
            Err(ApiError::InvalidIdempotencyKey)
        }
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Body of `202 Accepted` (or `200` for a repeated idempotency key).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub image_id: ImageId,
    pub status: crate::Status,
    pub status_url: String,
}

impl Accepted {
    /// The answer for a stored and enqueued image.
    pub fn new(image_id: ImageId) -> Self {
        Self {
            image_id,
            status: crate::Status::Queued,
            status_url: status_url(&image_id),
        }
    }
}

/// Path of an image's status resource, also sent as `Location`.
pub fn status_url(id: &ImageId) -> String {
    format!("/images/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";

    #[test]
    fn routes() {
        let id = ImageId::parse(ID).unwrap();
        assert_eq!(Route::parse("/"), Ok(Some(Route::Root)));
        assert_eq!(Route::parse("/images"), Ok(Some(Route::Images)));
        assert_eq!(Route::parse("/admin/usage"), Ok(Some(Route::AdminUsage)));
        assert_eq!(Route::parse("/tags"), Ok(Some(Route::Tags)));
        assert_eq!(
            Route::parse(&format!("/images/{ID}/content")),
            Ok(Some(Route::ImageContent(id)))
        );
        assert_eq!(
            Route::parse("/images/nope/content"),
            Err(ApiError::InvalidId)
        );
        assert_eq!(Route::parse("/tags/x"), Ok(None));
        assert_eq!(Route::parse("/admin/keys"), Ok(Some(Route::AdminKeys)));
        let key = crate::auth::KeyId::parse("key_0123456789abcdef0123").unwrap();
        assert_eq!(
            Route::parse("/admin/keys/key_0123456789abcdef0123"),
            Ok(Some(Route::AdminKey(key)))
        );
        for bad in ["/admin/keys/nope", "/admin/keys/key_0123456789ABCDEF0123/x"] {
            assert_eq!(Route::parse(bad), Err(ApiError::KeyNotFound), "{bad}");
        }
        assert_eq!(
            Route::parse(&format!("/images/{ID}")),
            Ok(Some(Route::Image(id)))
        );
        assert_eq!(
            Route::parse(&format!("/images/{ID}/")),
            Ok(Some(Route::Image(id)))
        );
        assert_eq!(
            Route::parse(&format!("/images/{ID}/tags")),
            Ok(Some(Route::ImageTags(id)))
        );
        assert_eq!(Route::parse(&format!("/images/{ID}/nope")), Ok(None));
        assert_eq!(Route::parse("/nope"), Ok(None));
        assert_eq!(Route::parse("/imagesX"), Ok(None));
        for bad in [
            "/images/nope",
            "/images/NOPE/tags",
            "/images/3F2B8C1E-9D4A-4B7E-8C2D-1A2B3C4D5E6F",
            "/images/..%2F..%2Fetc",
            "/images/a/b/c",
            "/images/%E2%9C%93",
        ] {
            assert_eq!(Route::parse(bad), Err(ApiError::InvalidId), "{bad}");
        }
    }

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
    fn content_length_checks() {
        assert_eq!(check_content_length(None, 10), Ok(None));
        assert_eq!(check_content_length(Some("10"), 10), Ok(Some(10)));
        assert_eq!(
            check_content_length(Some("11"), 10),
            Err(ApiError::PayloadTooLarge { limit: 10 })
        );
        assert_eq!(
            check_content_length(Some("0"), 10),
            Err(ApiError::EmptyBody)
        );
        assert_eq!(
            check_content_length(Some("99999999999999999999999"), 10),
            Err(ApiError::PayloadTooLarge { limit: 10 })
        );
        for bad in ["-1", "abc", "", "1e3", "+5", "0x10"] {
            assert_eq!(
                check_content_length(Some(bad), 10),
                Err(ApiError::InvalidContentLength),
                "{bad}"
            );
        }
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"s3cret", b"s3cret2"));
    }

    #[test]
    fn cors() {
        assert_eq!(
            cors_origin("*", Some("https://a.example")),
            Some("*".into())
        );
        assert_eq!(
            cors_origin(
                "https://a.example, https://b.example",
                Some("https://b.example")
            ),
            Some("https://b.example".into())
        );
        assert_eq!(
            cors_origin("https://a.example", Some("https://evil.example")),
            None
        );
        assert_eq!(cors_origin("", Some("https://a.example")), None);
        assert_eq!(cors_origin("*", None), None);
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("order-123").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "has space", "tab\t", "ключ"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(ApiError::InvalidIdempotencyKey)
            );
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn methods_are_read_as_sent() {
        assert_eq!(Method::parse("GET"), Method::Get);
        assert_eq!(Method::parse("DELETE"), Method::Delete);
        for other in ["PROPFIND", "PATCH", "PUT", "get", "BREW", ""] {
            assert_eq!(Method::parse(other), Method::Other, "{other}");
        }
    }

    #[test]
    fn codes_are_unique() {
        let codes: std::collections::HashSet<_> =
            ApiError::samples().iter().map(ApiError::code).collect();
        assert_eq!(codes.len(), ApiError::samples().len());
    }
}
