//! SHA-256 through WebCrypto, and the Idempotency-Key scope it gives a caller.

use shared::api::ApiError;
use worker::js_sys::{Promise, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;

use crate::settings::Settings;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = digest, catch)]
    fn subtle_digest(algorithm: &str, data: &JsValue) -> Result<Promise, JsValue>;
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a JS `ArrayBuffer` or typed array, as hex.
pub async fn sha256_hex(data: &JsValue) -> Result<String, ApiError> {
    let failed = |e: JsValue| ApiError::Internal(format!("crypto.subtle.digest: {e:?}"));
    let digest = JsFuture::from(subtle_digest("SHA-256", data).map_err(failed)?)
        .await
        .map_err(failed)?;
    Ok(hex(&Uint8Array::new(&digest).to_vec()))
}

thread_local! {
    static SCOPE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Whose Idempotency-Keys these are: the SHA-256 of the bearer token the request was
/// authorized with (there is one, `API_TOKEN`), or `anonymous` on an open API.
pub async fn token_scope(settings: &Settings) -> Result<String, ApiError> {
    let Some(token) = settings.api_token.as_deref() else {
        return Ok("anonymous".into());
    };
    if let Some(scope) = SCOPE.with(|s| s.borrow().clone()) {
        return Ok(scope);
    }
    let scope = sha256_hex(&Uint8Array::from(token.as_bytes()).into()).await?;
    SCOPE.with(|s| *s.borrow_mut() = Some(scope.clone()));
    Ok(scope)
}
