//! The upload worker's records: D1 (the system of record, and Idempotency-Key reservations)
//! and KV (the fast read path of finished images). Statements come from [`shared::storage::images`].

use edge::d1::{n, s, Db};
pub use edge::OrUnavailable;
use shared::api::ApiError;
use shared::storage::images::{self, ImageRow};
use shared::wire::config::binding;
use shared::wire::record::TagRecord;
use shared::ImageId;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, Env, KvStore};

/// What an `Idempotency-Key` reservation found.
pub enum Reservation {
    /// The key is ours, for the new image.
    New,
    /// A request with this key is still running.
    InFlight,
    /// A finished request with this key created `image_id` from a body with this digest.
    Done {
        image_id: ImageId,
        body_sha256: String,
    },
}

/// D1 and KV.
pub struct Store {
    db: Db<ApiError>,
    /// `None` when opened for an upload, which reads no KV ([`Store::open_db`]).
    kv: Option<KvStore>,
}

#[derive(serde::Deserialize)]
struct KeyRow {
    image_id: String,
    body_sha256: Option<String>,
}

impl Store {
    /// Opens the bindings.
    pub fn open(env: &Env) -> Result<Self, ApiError> {
        let internal = |e: worker::Error| ApiError::Internal(format!("binding: {e}"));
        Ok(Self {
            kv: Some(env.kv(binding::RESULTS_KV).map_err(internal)?),
            ..Self::open_db(env)?
        })
    }

    /// Opens D1 only: the upload path never reads KV, and opening the KV binding costs a
    /// few JS calls per request.
    pub fn open_db(env: &Env) -> Result<Self, ApiError> {
        let db = edge::binding::<D1Database>(env, binding::DB)
            .map_err(|e| ApiError::Internal(format!("binding: {e}")))?;
        Ok(Self {
            db: Db::new(db),
            kv: None,
        })
    }

    async fn run(&self, what: &str, sql: &str, params: &[JsValue]) -> Result<(), ApiError> {
        self.db.run(what, sql, params).await
    }

    /// Records a new image as queued, before its bytes are stored, with its callback URL and
    /// its owner.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_queued(
        &self,
        id: &ImageId,
        r2_key: &str,
        content_type: &str,
        size: u64,
        now: u64,
        callback: Option<&str>,
        owner: &str,
    ) -> Result<(), ApiError> {
        let key = id.to_string();
        let params = [
            s(&key),
            s(r2_key),
            s(content_type),
            n(size),
            n(now),
            s(owner),
        ];
        let Some(url) = callback else {
            return self.run("D1 insert", images::INSERT_QUEUED, &params).await;
        };
        // One batch, one transaction: the image never exists without its callback.
        let insert = self.db.statement(images::INSERT_QUEUED, &params)?;
        let set = (self.db).statement(shared::storage::outbox::SET_CALLBACK, &[s(&key), s(url)])?;
        self.db
            .batch("D1 insert", vec![insert, set])
            .await
            .map(drop)
    }

    /// Once its message is sent: records the image's stored size and makes it due
    /// ([`images::SENT`]); `false` when its row is gone (a `DELETE` ran during the upload).
    pub async fn sent(&self, id: &ImageId, size: u64, now: u64) -> Result<bool, ApiError> {
        let result = (self.db)
            .statement(images::SENT, &[s(&id.to_string()), n(size), n(now)])?
            .run()
            .await
            .or_unavailable("D1 sent")?;
        let changes = result.meta().ok().flatten().and_then(|m| m.changes);
        Ok(changes.unwrap_or(0) > 0)
    }

    /// The image id an `Idempotency-Key` names now, if any.
    pub async fn key_holder(&self, scope: &str, key: &str) -> Result<Option<String>, ApiError> {
        let params = [s(scope), s(key)];
        let row: Option<KeyRow> = self
            .db
            .first("D1 select key", images::SELECT_KEY, &params)
            .await?;
        Ok(row.map(|row| row.image_id))
    }

    /// Removes an image whose upload did not complete.
    pub async fn delete_unfinished(&self, id: &ImageId) -> Result<(), ApiError> {
        self.run(
            "D1 delete",
            images::DELETE_UNFINISHED,
            &[s(&id.to_string())],
        )
        .await
    }

    /// The AI calls saved by reuse: images done with another image's labels.
    pub async fn ai_calls_saved(&self) -> Result<u64, ApiError> {
        let row: Option<shared::storage::dedupe::SavedRow> = self
            .db
            .first(
                "D1 count reused",
                shared::storage::dedupe::COUNT_REUSED,
                &[],
            )
            .await?;
        Ok(row.map_or(0, |r| r.saved))
    }

    /// An image's row.
    pub async fn image(&self, id: &ImageId) -> Result<Option<ImageRow>, ApiError> {
        let id = [s(&id.to_string())];
        self.db.first("D1 select", images::SELECT_IMAGE, &id).await
    }

    /// An image's row, if `owner` owns it.
    pub async fn owned_image(
        &self,
        id: &ImageId,
        owner: &str,
    ) -> Result<Option<ImageRow>, ApiError> {
        let params = [s(&id.to_string()), s(owner)];
        self.db
            .first("D1 select", images::SELECT_OWNED_IMAGE, &params)
            .await
    }

    /// The delivery record of an image's latest webhook event, if any.
    pub async fn notification(
        &self,
        id: &ImageId,
    ) -> Result<Option<shared::storage::outbox::NotificationRow>, ApiError> {
        let id = [s(&id.to_string())];
        let sql = shared::storage::outbox::SELECT_LATEST;
        self.db.first("D1 select notification", sql, &id).await
    }

    /// The finished record KV holds for an image, if any.
    pub async fn published(&self, id: &ImageId) -> Result<Option<TagRecord>, ApiError> {
        match &self.kv {
            Some(kv) => edge::kv::published(kv, id).await,
            None => Err(ApiError::Internal(
                "KV read on a store opened without it".into(),
            )),
        }
    }

    /// Reserves `key` in `scope` for `image_id`, race-safely, or says who holds it.
    pub async fn reserve_key(
        &self,
        scope: &str,
        key: &str,
        image_id: &ImageId,
        now: u64,
    ) -> Result<Reservation, ApiError> {
        let expires = now + shared::api::IdempotencyKey::TTL_SECONDS * 1000;
        let stale = now.saturating_sub(STALE_PENDING_MS);
        let id = image_id.to_string();
        let params = [s(scope), s(key), s(&id), n(now), n(expires), n(stale)];
        let reserved = (self.db)
            .statement(images::RESERVE_KEY, &params)?
            .first::<String>(Some("image_id"))
            .await
            .or_unavailable("D1 reserve key")?;
        if reserved.as_deref() == Some(id.as_str()) {
            return Ok(Reservation::New);
        }
        let params = [s(scope), s(key)];
        let row: Option<KeyRow> = self
            .db
            .first("D1 select key", images::SELECT_KEY, &params)
            .await?;
        Ok(match row {
            Some(KeyRow {
                image_id,
                body_sha256: Some(digest),
            }) => match ImageId::parse(&image_id) {
                Ok(image_id) => Reservation::Done {
                    image_id,
                    body_sha256: digest,
                },
                Err(_) => Reservation::InFlight,
            },
            _ => Reservation::InFlight,
        })
    }

    /// Completes a reservation with the body's digest.
    pub async fn complete_key(
        &self,
        scope: &str,
        key: &str,
        id: &ImageId,
        sha256: &str,
    ) -> Result<(), ApiError> {
        let params = [s(scope), s(key), s(&id.to_string()), s(sha256)];
        self.run("D1 complete key", images::COMPLETE_KEY, &params)
            .await
    }

    /// Drops a reservation whose request failed, so that the client can retry.
    pub async fn release_key(&self, scope: &str, key: &str, id: &ImageId) -> Result<(), ApiError> {
        self.run(
            "D1 release key",
            images::RELEASE_KEY,
            &[s(scope), s(key), s(&id.to_string())],
        )
        .await
    }
}

/// A reservation whose request never finished (the worker was stopped) is taken over
/// after this long.
const STALE_PENDING_MS: u64 = 5 * 60 * 1000;
