//! One webhook attempt on the wire: the HMAC through WebCrypto, and a `POST` with a time
//! limit that reads at most [`MAX_RESPONSE_BYTES`] of the answer.

use std::cell::RefCell;
use std::rc::Rc;

use edge::crypto::{hmac, hmac_key};
use edge::js_text;
use shared::webhook::retry::{parse_retry_after, MAX_RESPONSE_BYTES, TIMEOUT_MS};
use worker::js_sys::{Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{ReadableStreamDefaultReader, Response};

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    #[wasm_bindgen(js_name = fetch, catch)]
    fn js_fetch(url: &str, init: &Object) -> Result<Promise, JsValue>;

    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout, catch)]
    fn abort_signal_timeout(ms: f64) -> Result<JsValue, JsValue>;
}

thread_local! {
    /// The imported HMAC keys of this isolate (secrets never change within one).
    static KEYS: RefCell<Option<Rc<Vec<JsValue>>>> = const { RefCell::new(None) };
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &key.into(), value);
}

/// The WebCrypto HMAC-SHA256 keys of `secrets`, imported once per isolate.
async fn keys(secrets: &[Vec<u8>]) -> Result<Rc<Vec<JsValue>>, String> {
    if let Some(keys) = KEYS.with(|k| k.borrow().clone()) {
        return Ok(keys);
    }
    let mut keys = Vec::with_capacity(secrets.len());
    for secret in secrets {
        keys.push(hmac_key(secret).await?);
    }
    let keys = Rc::new(keys);
    KEYS.with(|k| *k.borrow_mut() = Some(keys.clone()));
    Ok(keys)
}

/// HMAC-SHA256 of `content` with each secret, in order.
pub async fn sign(secrets: &[Vec<u8>], content: &str) -> Result<Vec<Vec<u8>>, String> {
    let keys = keys(secrets).await?;
    let mut macs = Vec::with_capacity(keys.len());
    for key in keys.iter() {
        macs.push(hmac(key, content.as_bytes()).await?);
    }
    Ok(macs)
}

/// What one `POST` came to.
pub enum Sent {
    /// An answer: its status, `Retry-After` (seconds), and the start of its body.
    Answered {
        status: u16,
        retry_after_seconds: Option<u32>,
        body: String,
    },
    /// No answer within [`TIMEOUT_MS`].
    TimedOut,
    /// The connection failed; why.
    Unreachable(String),
}

/// Posts `body` with `headers` to `url`. Redirects are not followed (a `3xx` is the answer),
/// and the whole exchange, answer body included, is cut off after [`TIMEOUT_MS`].
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
    Sent::Answered {
        status: response.status(),
        retry_after_seconds: parse_retry_after(retry_after.as_deref()),
        body: read_start(&response).await,
    }
}

fn is_timeout(e: &JsValue) -> bool {
    let name = Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string());
    matches!(name.as_deref(), Some("TimeoutError" | "AbortError"))
}

/// At most [`MAX_RESPONSE_BYTES`] of a response body, as text; the rest is never read.
async fn read_start(response: &Response) -> String {
    let Some(stream) = response.body() else {
        return String::new();
    };
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BYTES {
        let Ok(result) = JsFuture::from(reader.read()).await else {
            break;
        };
        let done = Reflect::get(&result, &"done".into()).is_ok_and(|d| d.is_truthy());
        if done {
            break;
        }
        match Reflect::get(&result, &"value".into()).map(JsCast::dyn_into::<Uint8Array>) {
            Ok(Ok(chunk)) => {
                let room = MAX_RESPONSE_BYTES - bytes.len();
                let take = chunk.length().min(room as u32);
                bytes.extend(chunk.subarray(0, take).to_vec());
            }
            _ => break,
        }
    }
    let _ = JsFuture::from(reader.cancel()).await;
    String::from_utf8_lossy(&bytes).into_owned()
}
