//! The HTTP edge: JSON bodies, the one place errors become responses, CORS, and the
//! security headers every response carries.

use serde::Serialize;
use shared::api::{cors_origin, ApiError};
use worker::{Headers, Response};

use crate::problem;
use crate::settings::Settings;

/// The Content-Security-Policy of the demo page: nothing from elsewhere, no framing.
pub const PAGE_CSP: &str = "default-src 'none'; img-src 'self' blob:; style-src 'unsafe-inline'; \
     script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// A JSON response with the given status. API answers are never cached: a status changes.
pub fn json<T: Serialize>(status: u16, value: &T, headers: Headers) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let _ = headers.set("content-type", "application/json");
            let _ = headers.set("cache-control", "no-store");
            Response::builder()
                .with_status(status)
                .with_headers(headers)
                .fixed(body)
        }
        Err(e) => error(&ApiError::Internal(format!("serialize response: {e}"))),
    }
}

/// The response for an error. Internal detail is logged here, and never sent.
pub fn error(err: &ApiError) -> Response {
    match err {
        ApiError::Internal(detail) => problem::error("internal_error", detail),
        ApiError::Unavailable(detail) => problem::warn("unavailable", detail),
        _ => {}
    }
    let headers = Headers::new();
    match err {
        ApiError::MethodNotAllowed { allow } => {
            let _ = headers.set("allow", allow);
        }
        ApiError::Unauthorized | ApiError::AuthNotConfigured => {
            let _ = headers.set("www-authenticate", "Bearer realm=\"image-tagger\"");
        }
        ApiError::RangeNotSatisfiable { size } => {
            let _ = headers.set("content-range", &format!("bytes */{size}"));
        }
        _ => {}
    }
    if let Some(seconds) = err.retry_after() {
        let _ = headers.set("retry-after", &seconds.to_string());
    }
    let _ = headers.set("content-type", "application/json");
    let _ = headers.set("cache-control", "no-store");
    Response::builder()
        .with_status(err.status())
        .with_headers(headers)
        .fixed(err.body().into_bytes())
}

/// `Allow` and what a CORS preflight needs.
pub fn preflight(allow: &str) -> Response {
    let headers = Headers::new();
    let _ = headers.set("allow", allow);
    let _ = headers.set("access-control-allow-methods", allow);
    let _ = headers.set(
        "access-control-allow-headers",
        "Authorization, Content-Type, Idempotency-Key, Callback-Url, Range, If-None-Match, If-Range",
    );
    let _ = headers.set("access-control-max-age", "86400");
    Response::builder()
        .with_status(204)
        .with_headers(headers)
        .fixed(Vec::new())
}

/// The demo page: one self-contained HTML file that may not be framed.
pub fn page(html: &'static [u8]) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/html; charset=utf-8");
    let _ = headers.set("content-security-policy", PAGE_CSP);
    let _ = headers.set("x-frame-options", "DENY");
    let _ = headers.set("cache-control", "no-cache");
    Response::builder()
        .with_status(200)
        .with_headers(headers)
        .fixed(html.to_vec())
}

/// Headers every response carries, and CORS when the request's origin is allowed. With a
/// list of origins the answer depends on `Origin`, so every response says so in `Vary`.
pub fn finish(mut response: Response, settings: &Settings, origin: Option<&str>) -> Response {
    let headers = response.headers_mut();
    let _ = headers.set("x-content-type-options", "nosniff");
    let _ = headers.set("referrer-policy", "no-referrer");
    let allowed = settings.allowed_origins.trim();
    if !allowed.is_empty() && allowed != "*" {
        let _ = headers.append("vary", "Origin");
    }
    if let Some(allow) = cors_origin(allowed, origin) {
        let _ = headers.set("access-control-allow-origin", &allow);
        let _ = headers.set(
            "access-control-expose-headers",
            "Location, Content-Type, WWW-Authenticate, ETag, Content-Range, Content-Disposition, \
             Retry-After",
        );
    }
    response
}
