//! The operator's routes of client keys (issue 20): `POST /admin/keys` makes one and shows
//! its secret once, `GET /admin/keys` lists them without secrets, `DELETE /admin/keys/{id}`
//! revokes one. Checks and shapes are [`shared::api::auth`]; statements [`shared::storage::keys`].

use edge::d1::{n, s, Db};
use edge::now_ms;
use serde::de::IgnoredAny;
use shared::api::auth::{
    format_key, CreatedKey, KeyId, KeyList, KeyRow, NewKey, KEY_BYTES, KEY_ID_BYTES,
    MAX_KEYS_LISTED, MAX_REQUEST_BYTES,
};
use shared::api::{check_content_length, ApiError};
use shared::storage::keys as sql;
use shared::wire::time::format_ms;
use worker::js_sys::{Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStreamDefaultReader;
use worker::{Env, Headers, Request, Response};

use crate::http;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues, catch)]
    fn get_random_values(buffer: &Uint8Array) -> Result<JsValue, JsValue>;
}

fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let buffer = Uint8Array::new_with_length(N as u32);
    get_random_values(&buffer)
        .map_err(|e| ApiError::Internal(format!("crypto.getRandomValues: {e:?}")))?;
    let mut out = [0u8; N];
    buffer.copy_to(&mut out);
    Ok(out)
}

fn d1(env: &Env) -> Result<Db<ApiError>, ApiError> {
    Db::open(env)
}

/// The request body, at most [`MAX_REQUEST_BYTES`] of it: a longer one is refused as it
/// streams, whatever its `Content-Length` says.
async fn small_body(req: &Request) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::InvalidKeyRequest("the body is larger than 4096 bytes".into());
    let length = req.headers().get("content-length").ok().flatten();
    match check_content_length(length.as_deref(), MAX_REQUEST_BYTES as u64) {
        Err(ApiError::PayloadTooLarge { .. }) => return Err(too_large()),
        Err(ApiError::EmptyBody) => return Ok(Vec::new()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let Some(stream) = req.inner().body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut body = Vec::new();
    loop {
        let result = JsFuture::from(reader.read())
            .await
            .map_err(|_| ApiError::IncompleteBody)?;
        let value = Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() {
            return Ok(body);
        }
        let chunk: Uint8Array = value.unchecked_into();
        if body.len() + chunk.length() as usize > MAX_REQUEST_BYTES {
            let _ = reader.cancel();
            return Err(too_large());
        }
        body.extend_from_slice(&chunk.to_vec());
    }
}

/// `POST /admin/keys`: a new client key, `201` with its secret (shown only now).
pub async fn create(req: &Request, env: &Env) -> Result<Response, ApiError> {
    let new = NewKey::parse(&small_body(req).await?)?;
    let key = format_key(&random::<KEY_BYTES>()?);
    let key_id = KeyId::from_random(&random::<KEY_ID_BYTES>()?).to_string();
    let hash = crate::auth::key_hash(&key).await?;
    let now = now_ms();
    let daily = new.daily_uploads.map_or(JsValue::NULL, n);
    let params = [
        s(&key_id),
        s(&hash),
        s(&new.name),
        s(&new.scopes.stored()),
        daily,
        n(now),
    ];
    d1(env)?
        .run("D1 insert key", sql::INSERT_KEY, &params)
        .await?;
    let created = CreatedKey {
        key_id,
        key,
        name: new.name,
        scopes: new.scopes.names(),
        daily_uploads: new.daily_uploads,
        created_at: format_ms(now),
    };
    Ok(http::json(201, &created, Headers::new()))
}

/// `GET /admin/keys`: every key (revoked ones too), oldest first, without secrets.
pub async fn list(env: &Env) -> Result<Response, ApiError> {
    let rows: Vec<KeyRow> = d1(env)?
        .all(
            "D1 list keys",
            sql::LIST_KEYS,
            &[JsValue::from(MAX_KEYS_LISTED)],
        )
        .await?;
    let keys = rows.iter().map(KeyRow::view).collect();
    Ok(http::json(200, &KeyList { keys }, Headers::new()))
}

/// `DELETE /admin/keys/{keyId}`: revokes the key, `204` (again too); `404` for no such key.
/// This isolate forgets the key at once, every other one within [`shared::api::auth::CACHE_TTL_MS`].
pub async fn revoke(env: &Env, id: KeyId) -> Result<Response, ApiError> {
    let params = [s(id.as_str()), n(now_ms())];
    // `REVOKE_KEY` returns the key's row if it exists; its content does not matter.
    let revoked: Option<IgnoredAny> = d1(env)?
        .first("D1 revoke key", sql::REVOKE_KEY, &params)
        .await?;
    crate::auth::forget(id.as_str());
    match revoked {
        Some(_) => Ok(Response::builder().with_status(204).empty()),
        None => Err(ApiError::KeyNotFound),
    }
}
