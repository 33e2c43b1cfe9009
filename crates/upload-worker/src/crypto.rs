//! The Idempotency-Key scope of a caller: the SHA-256 of its token, through WebCrypto.

use edge::crypto::{hex, sha256};
use shared::api::ApiError;
use worker::js_sys::Uint8Array;

use crate::settings::Settings;

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
    let digest = sha256(&Uint8Array::from(token.as_bytes()).into())
        .await
        .map_err(ApiError::Internal)?;
    let scope = hex(&digest);
    SCOPE.with(|s| *s.borrow_mut() = Some(scope.clone()));
    Ok(scope)
}
