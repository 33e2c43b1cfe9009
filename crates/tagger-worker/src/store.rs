//! The tagger's records: D1 (the system of record) and KV (the fast read path of finished
//! images, and kept poison messages). Every statement comes from [`shared::storage::images`]; every
//! failure is a retryable [`TagError::Storage`].

use serde::Serialize;
use shared::storage::images::{self, ImageRow, View};
use shared::storage::outbox;
use shared::tagging::labels::Classified;
use shared::webhook::{event_id, Event, EventType};
use shared::wire::config::binding;
use shared::wire::keys::{poison_key, record_key};
use shared::wire::record::{NotificationView, PoisonRecord, TagRecord};
use shared::{ImageId, Status, TagError};
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env, KvStore};

/// Maps platform errors to [`TagError::Storage`], saying what failed.
pub trait OrStorage<T> {
    fn or_storage(self, what: &str) -> Result<T, TagError>;
}

impl<T, E: std::fmt::Display> OrStorage<T> for Result<T, E> {
    fn or_storage(self, what: &str) -> Result<T, TagError> {
        self.map_err(|e| TagError::Storage(format!("{what}: {e}")))
    }
}

/// How long a poison message is kept in KV: 30 days.
const POISON_TTL_SECONDS: u64 = 30 * 24 * 60 * 60;

/// What a claim found.
pub enum Claim {
    /// This delivery holds the image until its lease ends.
    Claimed { row: ImageRow, lease_until: u64 },
    /// Already done: nothing to do.
    Done(ImageRow),
    /// Another delivery holds it until then.
    Leased(u64),
    /// No such image: deleted, or never recorded.
    Gone,
}

/// D1 and KV.
pub struct Store {
    db: D1Database,
    kv: KvStore,
}

fn n(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}

fn s(value: &str) -> JsValue {
    JsValue::from_str(value)
}

impl Store {
    /// Opens the bindings.
    pub fn open(env: &Env) -> Result<Self, TagError> {
        Ok(Self {
            db: env.d1(binding::DB).or_storage("DB binding")?,
            kv: env
                .kv(binding::RESULTS_KV)
                .or_storage("RESULTS_KV binding")?,
        })
    }

    fn statement(&self, sql: &str, params: &[JsValue]) -> Result<D1PreparedStatement, TagError> {
        self.db.prepare(sql).bind(params).or_storage("D1 bind")
    }

    /// An image's row.
    pub async fn image(&self, id: &ImageId) -> Result<Option<ImageRow>, TagError> {
        self.statement(images::SELECT_IMAGE, &[s(&id.to_string())])?
            .first::<ImageRow>(None)
            .await
            .or_storage("D1 select image")
    }

    /// Takes the image's lease for this delivery, or says why not.
    pub async fn claim(&self, id: &ImageId, now: u64, lease_ms: u64) -> Result<Claim, TagError> {
        let lease_until = now + lease_ms;
        let claimed = self
            .statement(images::CLAIM, &[s(&id.to_string()), n(now), n(lease_until)])?
            .first::<ImageRow>(None)
            .await
            .or_storage("D1 claim")?;
        if let Some(row) = claimed {
            return Ok(Claim::Claimed { row, lease_until });
        }
        Ok(match self.image(id).await? {
            None => Claim::Gone,
            Some(row) if row.status() == Status::Done => Claim::Done(row),
            Some(row) => Claim::Leased(row.lease_until.unwrap_or(now)),
        })
    }

    /// The outbox row of the webhook event a transition raises, for the same D1 batch
    /// (right after the transition's statement). It inserts nothing unless the image has a
    /// callback and is now in the event's status, and nothing twice.
    fn event_statement(
        &self,
        id: &ImageId,
        event: &Event,
        kind: EventType,
        now: u64,
    ) -> Result<D1PreparedStatement, TagError> {
        self.statement(
            outbox::INSERT_EVENT,
            &[
                s(&event_id(id, kind)),
                s(&id.to_string()),
                s(kind.as_str()),
                s(&event.to_json()),
                n(now),
                s(match kind.status() {
                    Status::Done => "done",
                    _ => "failed",
                }),
            ],
        )
    }

    /// Runs a transition (its statement first, the event's outbox row second) and reads the
    /// row back, in one round trip. `Some(record)` when the transition happened (the caller
    /// then owns writing the record to KV); its `notification` names the event when this
    /// transition recorded one (the caller then enqueues its delivery).
    async fn transition(
        &self,
        id: &ImageId,
        statements: Vec<D1PreparedStatement>,
        kind: EventType,
    ) -> Result<Option<TagRecord>, TagError> {
        let changes = |r: &worker::D1Result| r.meta().ok().flatten().and_then(|m| m.changes);
        let mut batch = statements;
        batch.push(self.statement(images::SELECT_IMAGE, &[s(&id.to_string())])?);
        let results = self.db.batch(batch).await.or_storage("D1 batch")?;
        let changed = results.first().and_then(changes).unwrap_or(0);
        if changed == 0 {
            return Ok(None);
        }
        let event_recorded = results.get(1).and_then(changes).unwrap_or(0) > 0;
        let row = results
            .last()
            .map(|r| r.results::<ImageRow>())
            .transpose()
            .or_storage("D1 read back")?
            .and_then(|rows| rows.into_iter().next());
        Ok(match row.and_then(|r| r.view()) {
            Some(View::Finished(mut record)) => {
                if event_recorded {
                    record.notification = Some(Box::new(NotificationView {
                        event_id: Some(event_id(id, kind)),
                        event_type: Some(kind.as_str().into()),
                        ..NotificationView::marker()
                    }));
                }
                Some(record)
            }
            _ => None,
        })
    }

    /// Records a classification unless the image is done already (or gone), or another
    /// delivery's lease is live; `lease` is the end of this delivery's own lease.
    pub async fn mark_done(
        &self,
        id: &ImageId,
        classified: &Classified,
        now: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        let key = id.to_string();
        let done = self.statement(
            images::MARK_DONE,
            &[
                s(&key),
                s(&json(&classified.tags())),
                s(&json(&classified.labels)),
                s(&classified.model),
                JsValue::from_f64(classified.min_score),
                n(now),
                lease.map_or(JsValue::NULL, n),
                s(&json(&classified.categories())),
            ],
        )?;
        let event = Event::tagged(
            *id,
            classified.tags(),
            classified.categories(),
            classified.labels.clone(),
            now,
        );
        let notify = self.event_statement(id, &event, EventType::Tagged, now)?;
        let index = self.statement(images::INDEX_TAGS, &[s(&key)])?;
        self.transition(id, vec![done, notify, index], EventType::Tagged)
            .await
    }

    /// Records a permanent failure unless the image is done (or gone), or another
    /// delivery's lease is live; `lease` is the end of this delivery's own lease, if any.
    pub async fn mark_failed(
        &self,
        id: &ImageId,
        error: &TagError,
        now: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        let failed = self.statement(
            images::MARK_FAILED,
            &[
                s(&id.to_string()),
                s(error.code()),
                // What clients are shown; the detail is in the log.
                s(&error.public_message()),
                n(now),
                lease.map_or(JsValue::NULL, n),
            ],
        )?;
        let event = Event::failed(*id, error.info(), now);
        let notify = self.event_statement(id, &event, EventType::Failed, now)?;
        self.transition(id, vec![failed, notify], EventType::Failed)
            .await
    }

    /// Records when the image will be tried next, releasing this delivery's lease if it
    /// holds one.
    pub async fn defer(
        &self,
        id: &ImageId,
        due_at: u64,
        now: u64,
        lease_until: Option<u64>,
    ) -> Result<(), TagError> {
        let lease = lease_until.map_or(JsValue::NULL, n);
        self.statement(
            images::DEFER,
            &[s(&id.to_string()), n(due_at), n(now), lease],
        )?
        .run()
        .await
        .or_storage("D1 defer")
        .map(|_| ())
    }

    /// Queued images overdue since before `cutoff`, oldest first.
    pub async fn overdue(
        &self,
        now: u64,
        cutoff: u64,
        limit: u32,
    ) -> Result<Vec<ImageRow>, TagError> {
        self.statement(
            images::SELECT_OVERDUE,
            &[n(now), n(cutoff), n(u64::from(limit))],
        )?
        .all()
        .await
        .and_then(|r| r.results::<ImageRow>())
        .or_storage("D1 select overdue")
    }

    /// Queued images whose message was never sent although their upload began before
    /// `cutoff` (an upload worker stopped between its insert and its send), oldest first.
    pub async fn unsent(&self, cutoff: u64, limit: u32) -> Result<Vec<ImageRow>, TagError> {
        self.statement(images::SELECT_UNSENT, &[n(cutoff), n(u64::from(limit))])?
            .all()
            .await
            .and_then(|r| r.results::<ImageRow>())
            .or_storage("D1 select unsent")
    }

    /// Deletes up to `limit` Idempotency-Key reservations that expired before `now`;
    /// returns how many.
    pub async fn purge_keys(&self, now: u64, limit: u32) -> Result<u32, TagError> {
        let result = self
            .statement(images::PURGE_KEYS, &[n(now), n(u64::from(limit))])?
            .run()
            .await
            .or_storage("D1 purge keys")?;
        let changes = result.meta().ok().flatten().and_then(|m| m.changes);
        Ok(changes.unwrap_or(0) as u32)
    }

    /// Notes that an overdue image was enqueued again.
    pub async fn requeued(&self, id: &str, now: u64) -> Result<(), TagError> {
        self.statement(images::REQUEUED, &[s(id), n(now)])?
            .run()
            .await
            .or_storage("D1 requeued")
            .map(|_| ())
    }

    /// Writes a finished image's record to KV, the fast read path. If the image was deleted
    /// meanwhile, the record is removed again: a delete is never undone.
    pub async fn publish(&self, record: &TagRecord) -> Result<(), TagError> {
        let key = record_key(&record.image_id);
        put_json(&self.kv, &key, record, None).await?;
        let present = self
            .statement(images::EXISTS, &[s(&record.image_id.to_string())])?
            .first::<serde_json::Value>(None)
            .await
            .or_storage("D1 exists")?;
        if present.is_none() {
            self.kv.delete(&key).await.or_storage("KV delete")?;
        }
        Ok(())
    }

    /// Removes the record of an image that is gone: left by a delivery whose
    /// [`Store::publish`] raced the delete and could not remove it (KV takes one write a
    /// second per key, so a delete right after the put can be refused). Never reads first:
    /// a stale read (KV is eventually consistent) would skip the delete.
    pub async fn unpublish(&self, id: &ImageId) -> Result<(), TagError> {
        self.kv
            .delete(&record_key(id))
            .await
            .or_storage("KV delete")
    }

    /// The record KV holds for an image, if any.
    pub async fn published(&self, id: &ImageId) -> Result<Option<TagRecord>, TagError> {
        let text = self
            .kv
            .get(&record_key(id))
            .text()
            .await
            .or_storage("KV get")?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Keeps a message that cannot be acted on, so that it is never lost in silence.
    pub async fn keep_poison(
        &self,
        message_id: &str,
        queue: &str,
        error: &TagError,
        body: &str,
        now: String,
    ) -> Result<(), TagError> {
        let record = PoisonRecord::new(message_id, queue, error.info(), body, now);
        put_json(
            &self.kv,
            &poison_key(message_id),
            &record,
            Some(POISON_TTL_SECONDS),
        )
        .await
    }
}

async fn put_json<T: Serialize>(
    kv: &KvStore,
    key: &str,
    value: &T,
    ttl: Option<u64>,
) -> Result<(), TagError> {
    let what = format!("KV put {key}");
    let put = kv.put(key, value).or_storage(&what)?;
    let put = match ttl {
        Some(ttl) => put.expiration_ttl(ttl),
        None => put,
    };
    put.execute().await.or_storage(&what)
}

/// JSON text of plain data (which always serializes).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
