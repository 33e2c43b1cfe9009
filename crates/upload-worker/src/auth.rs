//! Who a request comes from (issue 20), and the per-client upload limits. The rules are
//! [`shared::api::auth`]; this module does their I/O: the SHA-256 of a presented client key
//! (WebCrypto), its lookup in D1 (cached per isolate), the Rate Limiting binding, and the
//! daily quota's count in D1.

use std::cell::RefCell;

use edge::crypto::{hex, sha256};
use edge::d1::{n, s, Db};
use edge::now_ms;
use edge::OrUnavailable;
use shared::api::auth::{self, Caller, KeyCache, KeyRow, Presented};
use shared::api::ApiError;
use shared::storage::keys as sql;
use shared::wire::config::binding;
use worker::js_sys::Uint8Array;
use worker::{Env, Request};

use crate::problem;
use crate::settings::Settings;

thread_local! {
    static KEYS: RefCell<KeyCache> = RefCell::new(KeyCache::default());
}

/// The SHA-256 of a secret key, as D1 stores it (lower-case hex).
pub async fn key_hash(key: &str) -> Result<String, ApiError> {
    let digest = sha256(&Uint8Array::from(key.as_bytes()).into())
        .await
        .map_err(ApiError::Internal)?;
    Ok(hex(&digest))
}

/// Authenticates a request: `401` for a missing, wrong or revoked credential, and on a
/// closed API (no `API_TOKEN`, no `ALLOW_ANONYMOUS`).
pub async fn authenticate(
    req: &Request,
    env: &Env,
    settings: &Settings,
) -> Result<Caller, ApiError> {
    let header = req.headers().get("authorization").ok().flatten();
    let presented = auth::present(
        header.as_deref(),
        settings.api_token.as_deref(),
        settings.allow_anonymous,
    )?;
    match presented {
        Presented::Operator => Ok(Caller::Operator),
        Presented::Anonymous => Ok(Caller::Anonymous),
        Presented::Key(key) => client(env, key).await,
    }
}

/// A client key's caller: from this isolate's cache while fresh, else from D1.
async fn client(env: &Env, key: &str) -> Result<Caller, ApiError> {
    let hash = key_hash(key).await?;
    let now = now_ms();
    let found = match KEYS.with(|k| k.borrow().get(&hash, now)) {
        Some(found) => found,
        None => {
            let row: Option<KeyRow> = Db::<ApiError>::open(env)?
                .first("D1 key lookup", sql::SELECT_KEY_BY_HASH, &[s(&hash)])
                .await?;
            let found = row.map(|r| r.client());
            KEYS.with(|k| k.borrow_mut().put(&hash, found.clone(), now));
            found
        }
    };
    found.map(Caller::Client).ok_or(ApiError::Unauthorized)
}

/// Forgets a revoked key in this isolate at once (others forget it within the cache's TTL).
pub fn forget(key_id: &str) {
    KEYS.with(|k| k.borrow_mut().revoke(key_id));
}

/// Whose `Idempotency-Key`s these are: the operator's keep the scope they had before client
/// keys (the SHA-256 of `API_TOKEN`); a client's are its key id's, an anonymous caller's
/// `anonymous`.
pub async fn idempotency_scope(caller: &Caller, settings: &Settings) -> Result<String, ApiError> {
    match caller {
        Caller::Operator => crate::crypto::token_scope(settings).await,
        other => Ok(other.owner().to_string()),
    }
}

/// Admits an upload before its body is read: the caller's rate limit (the Rate Limiting
/// binding, per owner; not for the operator), then its daily quota (counted in D1).
pub async fn admit_upload(env: &Env, caller: &Caller, settings: &Settings) -> Result<(), ApiError> {
    if caller.rate_limited() {
        // Without the binding there is no rate limit; a failing limiter lets uploads through.
        if let Ok(limiter) = env.rate_limiter(binding::UPLOAD_LIMITER) {
            match limiter.limit(caller.owner().to_string()).await {
                Ok(outcome) if !outcome.success => {
                    return Err(ApiError::RateLimited {
                        retry_after: settings.upload_rate_period,
                    })
                }
                Ok(_) => {}
                Err(e) => problem::warn("rate_limiter_failed", &e.to_string()),
            }
        }
    }
    if let Some(limit) = caller.daily_uploads() {
        let now = now_ms();
        let owner = s(caller.owner());
        let day = n(auth::day(now));
        let db = Db::<ApiError>::open(env)?;
        // One round trip: yesterday's count goes, today's is counted.
        let forget = db.statement(sql::FORGET_OLD_DAYS, &[owner.clone(), day.clone()])?;
        let count = db.statement(sql::COUNT_UPLOAD, &[owner, day, n(limit)])?;
        let results = db.batch("D1 count upload", vec![forget, count]).await?;
        let counted = match results.get(1) {
            Some(result) => result
                .results::<sql::UploadCount>()
                .or_unavailable("D1 count upload")?,
            None => Vec::new(),
        };
        if counted.is_empty() {
            return Err(ApiError::QuotaExceeded {
                limit,
                retry_after: auth::until_next_day(now),
            });
        }
    }
    Ok(())
}
