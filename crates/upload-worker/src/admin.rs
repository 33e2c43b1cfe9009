//! The operator's routes of client keys (issue 20): `POST /admin/keys` makes one and shows
//! its secret once, `GET /admin/keys` lists them without secrets, `DELETE /admin/keys/{id}`
//! revokes one. Checks and shapes are [`shared::api::auth`]; statements [`shared::storage::keys`].

use shared::api::auth::{
    format_key, CreatedKey, KeyId, KeyList, KeyRow, NewKey, KEY_BYTES, KEY_ID_BYTES,
    MAX_KEYS_LISTED, MAX_REQUEST_BYTES,
};
use shared::api::{check_content_length, ApiError};
use shared::storage::keys as sql;
use shared::wire::config::binding;
use shared::wire::time::format_ms;
use worker::js_sys::{Reflect, Uint8Array};
use worker::wasm_bindgen::prelude::wasm_bindgen;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStreamDefaultReader;
use worker::{D1Database, Env, Headers, Request, Response};

use crate::http;
use crate::store::OrUnavailable;

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

fn d1(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(binding::DB)
        .map_err(|e| ApiError::Internal(format!("DB binding: {e}")))
}

fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
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
    let daily = new
        .daily_uploads
        .map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64));
    let params = [
        JsValue::from_str(&key_id),
        JsValue::from_str(&hash),
        JsValue::from_str(&new.name),
        JsValue::from_str(&new.scopes.stored()),
        daily,
        JsValue::from_f64(now as f64),
    ];
    d1(env)?
        .prepare(sql::INSERT_KEY)
        .bind(&params)
        .or_unavailable("D1 bind")?
        .run()
        .await
        .or_unavailable("D1 insert key")?;
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
    let rows = d1(env)?
        .prepare(sql::LIST_KEYS)
        .bind(&[JsValue::from(MAX_KEYS_LISTED)])
        .or_unavailable("D1 bind")?
        .all()
        .await
        .and_then(|r| r.results::<KeyRow>())
        .or_unavailable("D1 list keys")?;
    let keys = rows.iter().map(KeyRow::view).collect();
    Ok(http::json(200, &KeyList { keys }, Headers::new()))
}

/// `DELETE /admin/keys/{keyId}`: revokes the key, `204` (again too); `404` for no such key.
/// This isolate forgets the key at once, every other one within [`shared::api::auth::CACHE_TTL_MS`].
pub async fn revoke(env: &Env, id: KeyId) -> Result<Response, ApiError> {
    let params = [
        JsValue::from_str(id.as_str()),
        JsValue::from_f64(now_ms() as f64),
    ];
    let revoked = d1(env)?
        .prepare(sql::REVOKE_KEY)
        .bind(&params)
        .or_unavailable("D1 bind")?
        .first::<String>(Some("key_id"))
        .await
        .or_unavailable("D1 revoke key")?;
    crate::auth::forget(id.as_str());
    match revoked {
        Some(_) => Ok(Response::builder().with_status(204).empty()),
        None => Err(ApiError::KeyNotFound),
    }
}
