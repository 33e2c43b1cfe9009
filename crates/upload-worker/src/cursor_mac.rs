//! HMAC-SHA-256 of search cursors, through WebCrypto. The key is chosen by
//! [`shared::api::search::CursorKey`] and imported once per isolate.

use std::cell::RefCell;

use shared::api::search::{CursorKey, KEY_LABEL, PUBLIC_KEY};
use shared::api::ApiError;
use worker::js_sys::{Array, ArrayBuffer, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;

use crate::settings::Settings;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = importKey, catch)]
    fn import_key(
        format: &str,
        key: &JsValue,
        algorithm: &JsValue,
        extractable: bool,
        usages: &JsValue,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(js_namespace = ["crypto", "subtle"], js_name = sign, catch)]
    fn sign(algorithm: &str, key: &JsValue, data: &JsValue) -> Result<Promise, JsValue>;
}

thread_local! {
    static KEY: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

fn failed(what: &'static str) -> impl Fn(JsValue) -> ApiError {
    move |e| ApiError::Internal(format!("crypto.subtle.{what}: {e:?}"))
}

async fn hmac_key(raw: &[u8]) -> Result<JsValue, ApiError> {
    let algorithm = Object::new();
    let set = |k: &str, v: &str| Reflect::set(&algorithm, &k.into(), &v.into());
    set("name", "HMAC").map_err(failed("importKey"))?;
    set("hash", "SHA-256").map_err(failed("importKey"))?;
    let usages = Array::of1(&"sign".into());
    let promise = import_key(
        "raw",
        &Uint8Array::from(raw).into(),
        &algorithm.into(),
        false,
        &usages.into(),
    )
    .map_err(failed("importKey"))?;
    JsFuture::from(promise).await.map_err(failed("importKey"))
}

async fn hmac(key: &JsValue, data: &[u8]) -> Result<Vec<u8>, ApiError> {
    let promise = sign("HMAC", key, &Uint8Array::from(data).into()).map_err(failed("sign"))?;
    let mac: ArrayBuffer = JsFuture::from(promise)
        .await
        .map_err(failed("sign"))?
        .into();
    Ok(Uint8Array::new(&mac).to_vec())
}

/// The cursor key of this isolate's settings.
async fn key(settings: &Settings) -> Result<JsValue, ApiError> {
    if let Some(key) = KEY.with(|k| k.borrow().clone()) {
        return Ok(key);
    }
    let chosen = CursorKey::choose(
        settings.cursor_secret.as_deref(),
        settings.api_token.as_deref(),
    );
    let raw = match chosen {
        CursorKey::Secret(secret) => secret.as_bytes().to_vec(),
        CursorKey::DerivedFrom(token) => {
            hmac(&hmac_key(token.as_bytes()).await?, KEY_LABEL).await?
        }
        CursorKey::Public => PUBLIC_KEY.to_vec(),
    };
    let key = hmac_key(&raw).await?;
    KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
    Ok(key)
}

/// HMAC-SHA-256 of `data` under the cursor key.
pub async fn mac(settings: &Settings, data: &[u8]) -> Result<Vec<u8>, ApiError> {
    hmac(&key(settings).await?, data).await
}
