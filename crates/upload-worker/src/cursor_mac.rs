//! HMAC-SHA-256 of search cursors, through WebCrypto. The key is chosen by
//! [`shared::api::search::CursorKey`] and imported once per isolate.

use std::cell::RefCell;

use shared::api::search::{CursorKey, KEY_LABEL, PUBLIC_KEY};
use shared::api::ApiError;
use worker::wasm_bindgen::JsValue;

use crate::settings::Settings;

thread_local! {
    static KEY: RefCell<Option<JsValue>> = const { RefCell::new(None) };
}

pub async fn hmac_key(raw: &[u8]) -> Result<JsValue, ApiError> {
    edge::crypto::hmac_key(raw)
        .await
        .map_err(ApiError::Internal)
}

pub async fn hmac(key: &JsValue, data: &[u8]) -> Result<Vec<u8>, ApiError> {
    edge::crypto::hmac(key, data)
        .await
        .map_err(ApiError::Internal)
}

/// The raw cursor key of these settings, and whether it is the open API's public one.
/// (Live-updates tickets derive their own key from it: `crate::live`.)
pub async fn raw_key(settings: &Settings) -> Result<(Vec<u8>, bool), ApiError> {
    let chosen = CursorKey::choose(
        settings.cursor_secret.as_deref(),
        settings.api_token.as_deref(),
    );
    Ok(match chosen {
        CursorKey::Secret(secret) => (secret.as_bytes().to_vec(), false),
        CursorKey::DerivedFrom(token) => (
            hmac(&hmac_key(token.as_bytes()).await?, KEY_LABEL).await?,
            false,
        ),
        CursorKey::Public => (PUBLIC_KEY.to_vec(), true),
    })
}

/// The cursor key of this isolate's settings.
async fn key(settings: &Settings) -> Result<JsValue, ApiError> {
    if let Some(key) = KEY.with(|k| k.borrow().clone()) {
        return Ok(key);
    }
    let (raw, _) = raw_key(settings).await?;
    let key = hmac_key(&raw).await?;
    KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
    Ok(key)
}

/// HMAC-SHA-256 of `data` under the cursor key.
pub async fn mac(settings: &Settings, data: &[u8]) -> Result<Vec<u8>, ApiError> {
    hmac(&key(settings).await?, data).await
}
