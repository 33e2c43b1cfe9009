//! WebCrypto (`crypto.subtle`): HMAC-SHA-256 keys and signatures, SHA-256 digests, and hex.
//! Errors are texts saying which call failed; each worker maps them to its own error type.

use worker::js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;

use crate::js_text;

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

    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = digest, catch)]
    fn subtle_digest(algorithm: &str, data: &JsValue) -> Result<Promise, JsValue>;
}

fn failed(what: &'static str) -> impl Fn(JsValue) -> String {
    move |e| format!("crypto.subtle.{what}: {}", js_text(&e))
}

/// Imports `raw` as a (non-extractable) HMAC-SHA-256 signing key.
pub async fn hmac_key(raw: &[u8]) -> Result<JsValue, String> {
    let algorithm = Object::new();
    let set = |k: &str, v: &str| Reflect::set(&algorithm, &k.into(), &v.into());
    set("name", "HMAC").map_err(failed("importKey"))?;
    set("hash", "SHA-256").map_err(failed("importKey"))?;
    let usages = Array::of1(&"sign".into());
    let promise = import_key("raw", &Uint8Array::from(raw), &algorithm, false, &usages)
        .map_err(failed("importKey"))?;
    JsFuture::from(promise).await.map_err(failed("importKey"))
}

/// HMAC-SHA-256 of `data` under a key from [`hmac_key`].
pub async fn hmac(key: &JsValue, data: &[u8]) -> Result<Vec<u8>, String> {
    let promise = subtle_sign("HMAC", key, &Uint8Array::from(data)).map_err(failed("sign"))?;
    let mac = JsFuture::from(promise).await.map_err(failed("sign"))?;
    Ok(Uint8Array::new(&mac).to_vec())
}

/// Starts the SHA-256 of a JS `ArrayBuffer` or typed array: the bytes are read now, the
/// promise resolves to the digest's `ArrayBuffer`.
pub fn start_sha256(data: &JsValue) -> Result<Promise, String> {
    subtle_digest("SHA-256", data).map_err(failed("digest"))
}

/// SHA-256 of a JS `ArrayBuffer` or typed array.
pub async fn sha256(data: &JsValue) -> Result<Vec<u8>, String> {
    let digest = JsFuture::from(start_sha256(data)?)
        .await
        .map_err(failed("digest"))?;
    Ok(Uint8Array::new(&digest).to_vec())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}
