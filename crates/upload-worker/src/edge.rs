//! Turning results into HTTP responses: JSON bodies, errors, CORS, and configuration read
//! from the environment.

use serde::Serialize;
use shared::api::{cors_origin, ApiError};
use shared::config;
use worker::{console_error, console_warn, Env, Headers, Response};

/// Settings read from vars and secrets on each request.
pub struct Settings {
    pub max_upload_bytes: u64,
    pub api_token: Option<String>,
    pub allowed_origins: String,
    pub expose_wasm_memory: bool,
}

impl Settings {
    /// Reads the settings, falling back to defaults for unset or invalid vars.
    pub fn from_env(env: &Env) -> Self {
        let var = |name| env.var(name).ok().map(|v| v.to_string());
        Self {
            max_upload_bytes: config::parse_var(
                var(config::MAX_UPLOAD_BYTES).as_deref(),
                config::DEFAULT_MAX_UPLOAD_BYTES,
            ),
            api_token: env.secret(config::API_TOKEN).ok().map(|s| s.to_string()),
            allowed_origins: var(config::ALLOWED_ORIGINS).unwrap_or_default(),
            expose_wasm_memory: var(config::EXPOSE_WASM_MEMORY).as_deref() == Some("true"),
        }
    }
}

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: u16, value: &T, headers: Headers) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let _ = headers.set("content-type", "application/json");
            Response::builder()
                .with_status(status)
                .with_headers(headers)
                .fixed(body)
        }
        Err(e) => error(&ApiError::Internal(format!("serialize response: {e}"))),
    }
}

/// The response for an error. Internal detail is logged here and never sent.
pub fn error(err: &ApiError) -> Response {
    match err {
        ApiError::Internal(detail) => console_error!("internal error: {detail}"),
        ApiError::Unavailable(detail) => console_warn!("dependency unavailable: {detail}"),
        _ => {}
    }
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    match err {
        ApiError::MethodNotAllowed { allow } => {
            let _ = headers.set("allow", allow);
        }
        ApiError::Unauthorized => {
            let _ = headers.set("www-authenticate", "Bearer realm=\"image-tagger\"");
        }
        _ => {}
    }
    Response::builder()
        .with_status(err.status())
        .with_headers(headers)
        .fixed(err.body().into_bytes())
}

/// Adds CORS headers when the request's origin is allowed. With a list of origins the answer
/// depends on `Origin`, so every response says so in `Vary`, allowed or not.
pub fn with_cors(mut response: Response, settings: &Settings, origin: Option<&str>) -> Response {
    let allowed = settings.allowed_origins.trim();
    let headers = response.headers_mut();
    if !allowed.is_empty() && allowed != "*" {
        let _ = headers.append("vary", "Origin");
    }
    if let Some(allow) = cors_origin(allowed, origin) {
        let _ = headers.set("access-control-allow-origin", &allow);
        let _ = headers.set(
            "access-control-expose-headers",
            "Location, Content-Type, WWW-Authenticate",
        );
    }
    response
}

/// A mapper for failures of R2, KV or the queue: logged with `what`, reported as 503.
pub fn unavailable(what: &'static str) -> impl FnOnce(worker::Error) -> ApiError {
    move |e| ApiError::Unavailable(format!("{what}: {e}"))
}

/// A mapper for failures that are our own bug or a broken runtime: 500.
pub fn internal(what: &'static str) -> impl FnOnce(worker::Error) -> ApiError {
    move |e| ApiError::Internal(format!("{what}: {e}"))
}

/// Adds `x-wasm-memory-bytes` when the benchmark var asks for it.
pub fn with_memory_figure(mut response: Response, settings: &Settings) -> Response {
    if settings.expose_wasm_memory {
        let bytes = worker::js_sys::Reflect::get(&wasm_bindgen::memory(), &"buffer".into())
            .and_then(|buffer| worker::js_sys::Reflect::get(&buffer, &"byteLength".into()))
            .ok()
            .and_then(|n| n.as_f64())
            .unwrap_or_default();
        let _ = response
            .headers_mut()
            .set("x-wasm-memory-bytes", &bytes.to_string());
    }
    response
}
