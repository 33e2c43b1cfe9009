//! The tagger's records: D1 (the system of record) and KV (the fast read path of finished
//! images, and kept poison messages). Every statement comes from [`shared::storage::images`]; every
//! failure is a retryable [`TagError::Storage`].

use edge::d1::{n, s, Db};
pub use edge::OrStorage;
use serde::Serialize;
use shared::storage::dedupe::{self, TwinRow};
use shared::storage::images::{self, ImageRow, View};
use shared::storage::live;
use shared::storage::outbox;
use shared::tagging::batch::Twin;
use shared::tagging::labels::Classified;
use shared::webhook::{event_id, Event, EventType};
use shared::wire::config::binding;
use shared::wire::keys::{poison_key, record_key};
use shared::wire::record::{NotificationView, PoisonRecord, TagRecord};
use shared::{ImageId, Status, TagError};
use worker::wasm_bindgen::JsValue;
use worker::{D1PreparedStatement, Env, KvStore};

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
    db: Db<TagError>,
    kv: KvStore,
    /// For live updates (`edge::live`).
    env: Env,
}

impl Store {
    /// Opens the bindings.
    pub fn open(env: &Env) -> Result<Self, TagError> {
        Ok(Self {
            db: Db::open(env)?,
            kv: env
                .kv(binding::RESULTS_KV)
                .or_storage("RESULTS_KV binding")?,
            env: env.clone(),
        })
    }

    /// An image's row.
    pub async fn image(&self, id: &ImageId) -> Result<Option<ImageRow>, TagError> {
        let id = [s(&id.to_string())];
        self.db
            .first("D1 select image", images::SELECT_IMAGE, &id)
            .await
    }

    /// Takes the image's lease for this delivery, or says why not.
    pub async fn claim(&self, id: &ImageId, now: u64, lease_ms: u64) -> Result<Claim, TagError> {
        let lease_until = now + lease_ms;
        let params = [s(&id.to_string()), n(now), n(lease_until)];
        let claimed = self.db.first("D1 claim", images::CLAIM, &params).await?;
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
        self.db.statement(
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
    /// row back, in one round trip; then hands the live update to the owner's object.
    /// `Some(record)` when the transition happened (the caller then owns writing the record
    /// to KV); its `notification` names the event when this transition recorded one (the
    /// caller then enqueues its delivery).
    async fn transition(
        &self,
        id: &ImageId,
        statements: Vec<D1PreparedStatement>,
        kind: EventType,
    ) -> Result<Option<TagRecord>, TagError> {
        let changes = |r: &worker::D1Result| r.meta().ok().flatten().and_then(|m| m.changes);
        let mut batch = statements;
        batch.push(
            self.db
                .statement(images::SELECT_IMAGE, &[s(&id.to_string())])?,
        );
        let results = self.db.batch("D1 batch", batch).await?;
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
        // Committed: the owner's open sockets get the event now (best-effort, bounded).
        if let Some(row) = &row {
            if let Some(event) = live::terminal_event(row) {
                edge::live::publish(&self.env, &row.owner, &event).await;
            }
        }
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
        let done = self.db.statement(
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
        let index = self.db.statement(images::INDEX_TAGS, &[s(&key)])?;
        let mut statements = vec![done, notify, index];
        if let Some(from) = &classified.reused_from {
            statements.push(self.db.statement(
                dedupe::MARK_REUSED,
                &[s(&key), s(&from.to_string()), n(now)],
            )?);
        }
        self.transition(id, statements, EventType::Tagged).await
    }

    /// Records the image's content hash and looks for another image of its owner with the
    /// same bytes, in one D1 batch (one transaction: [`shared::storage::dedupe`]); a done
    /// one's labels are read with a second round trip.
    pub async fn twin(&self, id: &ImageId, hash: &str, now: u64) -> Result<Twin, TagError> {
        let key = id.to_string();
        let batch = vec![
            self.db
                .statement(dedupe::SET_CONTENT_HASH, &[s(&key), s(hash)])?,
            self.db.statement(dedupe::DONE_TWIN, &[s(&key), s(hash)])?,
            self.db
                .statement(dedupe::IN_FLIGHT_TWIN, &[s(&key), s(hash), n(now)])?,
        ];
        let results = self.db.batch("D1 twin", batch).await?;
        let first = |i: usize| -> Result<Option<TwinRow>, TagError> {
            Ok(match results.get(i) {
                Some(r) => r
                    .results::<TwinRow>()
                    .or_storage("D1 twin rows")?
                    .into_iter()
                    .next(),
                None => None,
            })
        };
        if let Some(done) = first(1)? {
            let from = ImageId::parse(&done.id)
                .map_err(|_| TagError::Storage(format!("malformed image id {:?}", done.id)))?;
            // A done row's labels; one deleted meanwhile lends nothing.
            return Ok(match self.image(&from).await? {
                Some(row) if row.status() == Status::Done => match row.view() {
                    Some(View::Finished(record)) => Twin::Done {
                        from,
                        labels: record.labels,
                        model: record.model,
                    },
                    _ => Twin::None,
                },
                _ => Twin::None,
            });
        }
        Ok(match first(2)? {
            Some(TwinRow {
                lease_until: Some(until),
                ..
            }) => Twin::InFlight(until),
            _ => Twin::None,
        })
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
        let failed = self.db.statement(
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
        let params = [s(&id.to_string()), n(due_at), n(now), lease];
        self.db.run("D1 defer", images::DEFER, &params).await
    }

    /// Queued images overdue since before `cutoff`, oldest first.
    pub async fn overdue(
        &self,
        now: u64,
        cutoff: u64,
        limit: u32,
    ) -> Result<Vec<ImageRow>, TagError> {
        let params = [n(now), n(cutoff), n(u64::from(limit))];
        self.db
            .all("D1 select overdue", images::SELECT_OVERDUE, &params)
            .await
    }

    /// Queued images whose message was never sent although their upload began before
    /// `cutoff` (an upload worker stopped between its insert and its send), oldest first.
    pub async fn unsent(&self, cutoff: u64, limit: u32) -> Result<Vec<ImageRow>, TagError> {
        let params = [n(cutoff), n(u64::from(limit))];
        self.db
            .all("D1 select unsent", images::SELECT_UNSENT, &params)
            .await
    }

    /// Deletes up to `limit` Idempotency-Key reservations that expired before `now`;
    /// returns how many.
    pub async fn purge_keys(&self, now: u64, limit: u32) -> Result<u32, TagError> {
        let result = self
            .db
            .statement(images::PURGE_KEYS, &[n(now), n(u64::from(limit))])?
            .run()
            .await
            .or_storage("D1 purge keys")?;
        let changes = result.meta().ok().flatten().and_then(|m| m.changes);
        Ok(changes.unwrap_or(0) as u32)
    }

    /// Notes that an overdue image was enqueued again.
    pub async fn requeued(&self, id: &str, now: u64) -> Result<(), TagError> {
        let params = [s(id), n(now)];
        self.db.run("D1 requeued", images::REQUEUED, &params).await
    }

    /// Writes a finished image's record to KV, the fast read path. If the image was deleted
    /// meanwhile, the record is removed again: a delete is never undone.
    pub async fn publish(&self, record: &TagRecord) -> Result<(), TagError> {
        let key = record_key(&record.image_id);
        put_json(&self.kv, &key, record, None).await?;
        let id = [s(&record.image_id.to_string())];
        let present: Option<serde_json::Value> =
            self.db.first("D1 exists", images::EXISTS, &id).await?;
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
        edge::kv::published(&self.kv, id).await
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
