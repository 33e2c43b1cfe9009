//! The workers-rs glue both workers share: everything here touches the Workers runtime, and
//! nothing here is domain logic (that lives in `shared`, which never depends on `worker`).
//!
//! - [`log`]: the one JSON logger (the only place `console_*` macros are allowed);
//! - [`d1`]: D1 statements, bound and run, failures mapped by [`fail`];
//! - [`kv`]: the KV reads both workers make;
//! - [`crypto`]: WebCrypto (HMAC-SHA-256, SHA-256) and hex;
//! - [`vars`]: settings from `Env` (vars and secrets), read once per isolate;
//! - [`fail`]: platform errors into each worker's error type;
//! - [`live`]: handing a live update to the client's Durable Object (best-effort);
//! - [`now_ms`]: the clock;
//! - [`binding`]: a binding without workers-rs's constructor-name check (the hot paths).

pub mod crypto;
pub mod d1;
pub mod fail;
pub mod kv;
pub mod live;
pub mod log;
pub mod vars;

pub use fail::{OrStorage, OrUnavailable};

use worker::js_sys::Reflect;
use worker::wasm_bindgen::{JsCast, JsValue};

/// Milliseconds since the Unix epoch, by the runtime's clock (frozen during I/O-free code
/// in Workers, as a side-channel defence).
pub fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

/// The text of a JS error: itself if a string, else its `message`, else its debug form.
pub fn js_text(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| {
            Reflect::get(e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The binding `name` of `env`, taken as a `T` without workers-rs's check of its JS
/// constructor's name: `Env::d1`, `Env::bucket` and `Env::queue` read that name into a Rust
/// string on every call, which the upload's CPU profile put at about 6 % of the upload
/// isolate's own CPU (BENCHMARKS.md, issue 25). A missing binding is an error here; one of the
/// wrong kind fails at its first call, as a JS error that the caller maps like any other.
pub fn binding<T: JsCast>(env: &worker::Env, name: &str) -> Result<T, String> {
    let value = Reflect::get(env, &JsValue::from_str(name)).map_err(|e| js_text(&e))?;
    if value.is_undefined() {
        return Err(format!("no binding {name}"));
    }
    Ok(value.unchecked_into())
}
