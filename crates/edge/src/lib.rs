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
//! - [`now_ms`]: the clock.

pub mod crypto;
pub mod d1;
pub mod fail;
pub mod kv;
pub mod live;
pub mod log;
pub mod vars;

pub use fail::{OrStorage, OrUnavailable};

use worker::js_sys::Reflect;
use worker::wasm_bindgen::JsValue;

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
