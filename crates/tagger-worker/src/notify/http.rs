//! One webhook attempt on the wire: the HMAC through WebCrypto, and a `POST` with a time
//! limit whose answer is its status alone: the body is never read (cancelled unread), so
//! nothing a receiver writes can be kept or shown.

use std::cell::RefCell;
use std::rc::Rc;

use shared::webhook::retry::{parse_retry_after, TIMEOUT_MS};
use worker::js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::Response;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = importKey, catch)]
    fn import_key(
        format: &str,
        key: &Uint8Array,
        algorithm: &Object,
        extractable: bool,
        usages: &Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = sign, catch)]
    fn subtle_sign(algorithm: &str, key: &JsValue, data: &Uint8Array) -> Result<Promise, JsValue>;

    #[wasm_bindgen(js_name = fetch, catch)]
    fn js_fetch(url: &str, init: &Object) -> Result<Promise, JsValue>;

    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout, catch)]
    fn abort_signal_timeout(ms: f64) -> Result<JsValue, JsValue>;
}

thread_local! {
    /// The imported HMAC keys of this isolate (secrets never change within one).
    static KEYS: RefCell<Option<Rc<Vec<JsValue>>>> = const { RefCell::new(None) };
}

fn js_text(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| {
            Reflect::get(e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &key.into(), value);
}

/// The WebCrypto HMAC-SHA256 keys of `secrets`, imported once per isolate.
async fn keys(secrets: &[Vec<u8>]) -> Result<Rc<Vec<JsValue>>, String> {
    if let Some(keys) = KEYS.with(|k| k.borrow().clone()) {
        return Ok(keys);
    }
    let algorithm = Object::new();
    set(&algorithm, "name", &"HMAC".into());
    set(&algorithm, "hash", &"SHA-256".into());
    let usages = Array::of1(&"sign".into());
    let mut keys = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let failed = |e: JsValue| format!("crypto.subtle.importKey: {}", js_text(&e));
        let promise = import_key(
            "raw",
            &Uint8Array::from(secret.as_slice()),
            &algorithm,
            false,
            &usages,
        )
        .map_err(failed)?;
        keys.push(JsFuture::from(promise).await.map_err(failed)?);
    }
    let keys = Rc::new(keys);
    KEYS.with(|k| *k.borrow_mut() = Some(keys.clone()));
    Ok(keys)
}

/// HMAC-SHA256 of `content` with each secret, in order.
pub async fn sign(secrets: &[Vec<u8>], content: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys = keys(secrets).await?;
    let data = Uint8Array::from(content.as_bytes());
    let mut macs = Vec::with_capacity(keys.len());
    for key in keys.iter() {
        let failed = |e: JsValue| format!("crypto.subtle.sign: {}", js_text(&e));
        let promise = subtle_sign("HMAC", key, &data).map_err(failed)?;
        let mac = JsFuture::from(promise).await.map_err(failed)?;
        macs.push(Uint8Array::new(&mac).to_vec());
    }
    Ok(macs)
}

/// What one `POST` came to.
pub enum Sent {
    /// An answer: its status and `Retry-After` (seconds).
    Answered {
        status: u16,
        retry_after_seconds: Option<u32>,
    },
    /// No answer within [`TIMEOUT_MS`].
    TimedOut,
    /// The connection failed; why.
    Unreachable(String),
}

/// Posts `body` with `headers` to `url`. Redirects are not followed (a `3xx` is the answer),
/// the exchange is cut off after [`TIMEOUT_MS`], and the answer's body is cancelled unread.
pub async fn post(url: &str, headers: &[(&str, String)], body: &str) -> Sent {
    let signal = match abort_signal_timeout(TIMEOUT_MS as f64) {
        Ok(signal) => signal,
        Err(e) => return Sent::Unreachable(format!("AbortSignal.timeout: {}", js_text(&e))),
    };
    let header_object = Object::new();
    for (name, value) in headers {
        set(&header_object, name, &value.as_str().into());
    }
    let init = Object::new();
    set(&init, "method", &"POST".into());
    set(&init, "headers", &header_object);
    set(&init, "body", &body.into());
    set(&init, "redirect", &"manual".into());
    set(&init, "signal", &signal);
    let answer = match js_fetch(url, &init) {
        Ok(promise) => JsFuture::from(promise).await,
        Err(e) => Err(e),
    };
    let response: Response = match answer.map(JsCast::dyn_into) {
        Ok(Ok(response)) => response,
        Ok(Err(other)) => return Sent::Unreachable(format!("fetch answered {other:?}")),
        Err(e) if is_timeout(&e) => return Sent::TimedOut,
        Err(e) => return Sent::Unreachable(js_text(&e)),
    };
    let retry_after = response.headers().get("retry-after").ok().flatten();
    if let Some(body) = response.body() {
        let _ = JsFuture::from(body.cancel()).await;
    }
    Sent::Answered {
        status: response.status(),
        retry_after_seconds: parse_retry_after(retry_after.as_deref()),
    }
}

fn is_timeout(e: &JsValue) -> bool {
    let name = Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string());
    matches!(name.as_deref(), Some("TimeoutError" | "AbortError"))
}
