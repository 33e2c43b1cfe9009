//! The tagger's queue handler: picks the handler of a batch's queue, and gives the image
//! queue's batches (and its dead letter queue's) to [`shared::tagging::batch::consume`], the
//! one batch orchestration, through [`Bindings`], its I/O on this worker's bindings.

use std::cell::OnceCell;
use std::rc::Rc;

use shared::tagging::batch::{
    self, Claim, ClaimedImage, Delivered, ImageState, Io, Line, Note, Twin,
};
use shared::tagging::labels::Classified;
use shared::tagging::memory::ByteBudget;
use shared::tagging::pacer::{Ask, Grant};
use shared::tagging::retry::QueueKind;
use shared::wire::config::{binding, queue};
use shared::wire::record::TagRecord;
use shared::{ImageId, ImageMessage, Label, TagError};
use worker::js_sys::{Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{Env, MessageBuilder, QueueContentType};

use crate::classify::{self, ModelInput};
use edge::log::{self, Level};
use shared::wire::log_event;

use crate::log::MessageLine;
use crate::pacer::PacerClient;
use crate::queue_api::{QueueBatch, QueueMessage};
use crate::r2;
use crate::settings::Settings;
use crate::store::{self, OrStorage, Store};

/// Handles a batch from the image queue or its dead letter queue (and hands one from the
/// notification queue to [`crate::notify`]). Never fails: every message is acked or retried
/// on its own.
pub async fn consume(batch: QueueBatch, env: &Env) {
    let name = batch.queue();
    // A staging deployment's queues carry its suffix (`image-processing-queue-staging`).
    let kind = match queue::of_deployed(&name) {
        Some(queue::IMAGES) => QueueKind::Images,
        Some(queue::IMAGES_DEAD_LETTER) => QueueKind::DeadLetter,
        Some(queue::NOTIFICATIONS) => return crate::notify::consume(batch, env).await,
        _ => {
            let detail = format!("no handler for queue {name}; retrying its batch");
            log::problem(Level::Error, log_event::MISCONFIGURED, &detail);
            batch.messages().iter().for_each(|m| m.retry_after(60));
            return;
        }
    };
    let settings = Settings::get(env);
    let store = match Store::open(env) {
        Ok(store) => store,
        Err(e) => {
            log::problem(Level::Error, log_event::MISCONFIGURED, &e.to_string());
            batch.messages().iter().for_each(|m| m.retry_after(60));
            return;
        }
    };
    let io = Bindings {
        env,
        settings: &settings,
        store,
        queue: &name,
        pacer: PacerClient::open(env).map_err(|e| e.to_string()),
        budget: isolate_budget(settings.bytes_in_flight),
    };
    let config = batch::Settings {
        policy: settings.policy,
        concurrency: settings.concurrency,
        lease_ms: settings.lease_ms,
        min_score: settings.min_score,
        daily_budget: settings.pacer.daily_budget.is_some(),
    };
    batch::consume(&io, kind, batch.messages(), &config).await;
}

/// The batch's I/O on this worker's bindings: D1 and KV ([`Store`]), R2, Workers AI, the
/// pacer object, the image queue, the clock and the log.
struct Bindings<'a> {
    env: &'a Env,
    settings: &'a Settings,
    store: Store,
    queue: &'a str,
    /// The fleet's pacer, or why it cannot be asked.
    pacer: Result<PacerClient, String>,
    /// The isolate's byte budget, shared with every other batch running in it.
    budget: Rc<ByteBudget>,
}

impl Delivered for QueueMessage {
    fn id(&self) -> String {
        QueueMessage::id(self)
    }

    fn attempt(&self) -> u32 {
        QueueMessage::attempt(self)
    }

    fn body(&self) -> String {
        self.body_json()
    }

    fn ack(&self) {
        self.ack_quietly()
    }

    fn retry(&self, delay_seconds: u32) {
        self.retry_after(delay_seconds)
    }
}

impl Io for Bindings<'_> {
    type Message = QueueMessage;
    type Input = Prepared;

    fn now_ms(&self) -> u64 {
        edge::now_ms()
    }

    async fn sleep_ms(&self, ms: u64) {
        worker::Delay::from(std::time::Duration::from_millis(ms)).await;
    }

    async fn claim(&self, id: &ImageId, now_ms: u64, lease_ms: u64) -> Result<Claim, TagError> {
        Ok(match self.store.claim(id, now_ms, lease_ms).await? {
            store::Claim::Claimed { row, lease_until } => Claim::Claimed {
                image: ClaimedImage {
                    r2_key: row.r2_key,
                    size: row.size,
                    uploaded_at_ms: row.uploaded_at,
                },
                lease_until,
            },
            store::Claim::Done(row) => Claim::Done(match row.view() {
                Some(shared::storage::images::View::Finished(record)) => Some(Box::new(record)),
                _ => None,
            }),
            store::Claim::Leased(until) => Claim::Leased(until),
            store::Claim::Gone => Claim::Gone,
        })
    }

    async fn image(&self, id: &ImageId) -> Result<Option<ImageState>, TagError> {
        Ok(self.store.image(id).await?.map(|row| ImageState {
            status: row.status(),
            lease_until: row.lease_until,
            uploaded_at_ms: row.uploaded_at,
        }))
    }

    async fn mark_done(
        &self,
        id: &ImageId,
        classified: &Classified,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        self.store.mark_done(id, classified, now_ms, lease).await
    }

    async fn mark_failed(
        &self,
        id: &ImageId,
        error: &TagError,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        self.store.mark_failed(id, error, now_ms, lease).await
    }

    async fn defer(
        &self,
        id: &ImageId,
        due_ms: u64,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<(), TagError> {
        self.store.defer(id, due_ms, now_ms, lease).await
    }

    async fn published(&self, id: &ImageId) -> Result<Option<TagRecord>, TagError> {
        self.store.published(id).await
    }

    async fn publish(&self, record: &TagRecord) -> Result<(), TagError> {
        self.store.publish(record).await
    }

    async fn unpublish(&self, id: &ImageId) -> Result<(), TagError> {
        self.store.unpublish(id).await
    }

    async fn keep_poison(
        &self,
        message_id: &str,
        error: &TagError,
        body: &str,
        now: String,
    ) -> Result<(), TagError> {
        self.store
            .keep_poison(message_id, self.queue, error, body, now)
            .await
    }

    async fn notify(&self, record: &TagRecord) {
        crate::notify::enqueue(self.env, record).await;
    }

    fn budget(&self) -> &ByteBudget {
        &self.budget
    }

    async fn prepare(&self, r2_key: &str) -> Result<Prepared, TagError> {
        let bytes = r2::read(self.env, r2_key).await?;
        // WebCrypto hashes the bytes where they are, in JS memory. A failed digest only
        // turns reuse off for this image.
        let hash = match edge::crypto::sha256(&bytes.as_js().into()).await {
            Ok(digest) => Some(edge::crypto::hex(&digest)),
            Err(e) => {
                log::problem(Level::Warn, log_event::CONTENT_HASH_FAILED, &e);
                None
            }
        };
        Ok(Prepared {
            model: classify::prepare(bytes, self.settings)?,
            hash,
        })
    }

    async fn classify(&self, input: &Prepared) -> Result<Vec<Label>, TagError> {
        classify::run(self.env, &input.model).await
    }

    async fn pacer(&self, ask: Ask) -> Result<Grant, String> {
        let pacer = self.pacer.as_ref().map_err(Clone::clone)?;
        let grant = match ask {
            Ask::Acquire { n } => pacer.acquire(n).await,
            Ask::Settle { unused, answered } => pacer.settle(unused, answered).await,
            Ask::Refused { n } => pacer.refused(n).await,
            Ask::Quota { n } => pacer.quota(n).await,
            Ask::Usage => return Err("usage is not a batch's question".into()),
        };
        grant.map_err(|e| e.to_string())
    }

    async fn resend(&self, body: &ImageMessage, delay_seconds: u32) -> Result<(), TagError> {
        self.env
            .queue(binding::IMAGE_QUEUE)
            .or_storage("IMAGE_QUEUE binding")?
            .send(
                MessageBuilder::new(body)
                    .content_type(QueueContentType::Json)
                    .delay_seconds(delay_seconds)
                    .build(),
            )
            .await
            .or_storage("queue resend")
    }

    fn log(&self, message: &QueueMessage, line: Line) {
        let mut out = MessageLine::new(
            self.queue,
            QueueMessage::id(message),
            QueueMessage::attempt(message),
            line.started_ms as f64,
        );
        out.image_id = line.image_id;
        let mut out = out.outcome(line.outcome, line.error.as_ref());
        out.delay_seconds = line.delay_seconds;
        out.emit();
    }

    fn content_hash(&self, input: &Prepared) -> Option<String> {
        input.hash.clone()
    }

    async fn twin(&self, id: &ImageId, hash: &str, now_ms: u64) -> Result<Twin, TagError> {
        self.store.twin(id, hash, now_ms).await
    }

    fn note(&self, note: Note<'_>) {
        match note {
            Note::PacerUnavailable(e) => log::problem(Level::Warn, log_event::PACER_UNAVAILABLE, e),
            Note::DeferNotRecorded(id, e) => log::emit(
                Level::Warn,
                log_event::DEFER_NOT_RECORDED,
                &serde_json::json!({ "imageId": id, "error": e.to_string() }),
            ),
            Note::ResendFailed(id, e) => log::emit(
                Level::Warn,
                log_event::RESEND_FAILED,
                &serde_json::json!({ "imageId": id, "error": e.to_string() }),
            ),
        }
    }
}

/// An image prepared for the model, with the content hash of its stored bytes.
pub struct Prepared {
    model: ModelInput,
    /// SHA-256 of the stored bytes, lower-case hex; None if the digest failed.
    hash: Option<String>,
}

impl QueueMessage {
    /// Acks; the runtime only fails this for a message already settled.
    pub fn ack_quietly(&self) {
        let _ = self.ack();
    }

    /// Retries after `delay_seconds`.
    pub fn retry_after(&self, delay_seconds: u32) {
        let options = Object::new();
        let _ = Reflect::set(
            &options,
            &"delaySeconds".into(),
            &JsValue::from(delay_seconds),
        );
        let _ = self.retry(&options);
    }
}

thread_local! {
    /// The byte budget of this isolate: memory is limited per isolate, and batches that run
    /// in one isolate at once share it (`BYTES_IN_FLIGHT` never changes within one).
    static BUDGET: OnceCell<Rc<ByteBudget>> = const { OnceCell::new() };
}

/// The isolate's one byte budget, made with `limit` bytes on first use.
fn isolate_budget(limit: u64) -> Rc<ByteBudget> {
    BUDGET.with(|cell| cell.get_or_init(|| Rc::new(ByteBudget::new(limit))).clone())
}
