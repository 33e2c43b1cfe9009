//! The HTTP contract of the upload worker, as pure functions: routing, errors and the checks
//! made on headers before any body is read.

pub mod admission;
pub mod auth;
pub mod download;
pub mod error;
pub mod live;
pub mod multipart;
pub mod search;

pub use error::ApiError;

use serde::Serialize;

use crate::wire::id::ImageId;
use crate::wire::record::status_url;

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
    AdminKey(auth::KeyId),
    /// `/admin`: the operator dashboard's page (`GET`; it holds no data).
    Admin,
    /// `/admin/stats`: the operator dashboard's figures.
    AdminStats,
    /// `/events`: live updates, a WebSocket (`GET` with `Upgrade: websocket`).
    Events,
    /// `/events/ticket`: a short-lived ticket to open `/events` from a browser (`POST`).
    EventsTicket,
}

impl Route {
    /// Resolves a path. `Ok(None)` is an unknown path; an error is a malformed id.
    pub fn parse(path: &str) -> Result<Option<Self>, ApiError> {
        let rest = match path {
            "/" | "" => return Ok(Some(Self::Root)),
            "/images" | "/images/" => return Ok(Some(Self::Images)),
            "/admin/usage" => return Ok(Some(Self::AdminUsage)),
            "/admin" | "/admin/" => return Ok(Some(Self::Admin)),
            "/admin/stats" => return Ok(Some(Self::AdminStats)),
            "/admin/keys" | "/admin/keys/" => return Ok(Some(Self::AdminKeys)),
            "/tags" | "/tags/" => return Ok(Some(Self::Tags)),
            crate::wire::config::live_route::EVENTS => return Ok(Some(Self::Events)),
            crate::wire::config::live_route::TICKET => return Ok(Some(Self::EventsTicket)),
            _ => match path.strip_prefix("/images/") {
                Some(rest) => rest,
                // A malformed key id names no key: `404 key_not_found`, as an unknown one.
                None => {
                    return match path.strip_prefix("/admin/keys/") {
                        Some(id) => auth::KeyId::parse(id)
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
            Self::ImageTags(_)
            | Self::ImageContent(_)
            | Self::Tags
            | Self::AdminUsage
            | Self::Admin
            | Self::AdminStats => "GET, HEAD, OPTIONS",
            Self::AdminKeys => "GET, HEAD, POST, OPTIONS",
            Self::AdminKey(_) => "DELETE, OPTIONS",
            Self::Events => "GET, OPTIONS",
            Self::EventsTicket => "POST, OPTIONS",
        }
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
        assert_eq!(Route::parse("/admin"), Ok(Some(Route::Admin)));
        assert_eq!(Route::parse("/admin/"), Ok(Some(Route::Admin)));
        assert_eq!(Route::parse("/admin/stats"), Ok(Some(Route::AdminStats)));
        assert_eq!(Route::parse("/admin/stats/x"), Ok(None));
        let key = auth::KeyId::parse("key_0123456789abcdef0123").unwrap();
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
}
