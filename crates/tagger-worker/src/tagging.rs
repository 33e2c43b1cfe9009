//! The I/O of tagging one image: read the record and the bytes, run the model, write the
//! record. Every failure comes back as a [`TagError`], already classified.

use serde::Serialize;
use shared::config;
use shared::keys::{poison_key, record_key};
use shared::record::PoisonRecord;
use shared::retry::RetryPolicy;
use shared::{ImageMessage, Label, Status, TagError, TagRecord};
use worker::js_sys::{Array, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, KvStore, ResponseBody};

/// Settings read from vars on each batch.
pub struct Settings {
    pub min_score: f64,
    pub retry: RetryPolicy,
    pub max_retries: u32,
    pub concurrency: usize,
}

impl Settings {
    /// Reads the vars, falling back to defaults for unset or invalid ones.
    pub fn from_env(env: &Env) -> Self {
        let var = |name| env.var(name).ok().map(|v| v.to_string());
        Self {
            min_score: config::parse_min_score(var(config::MIN_SCORE).as_deref()),
            retry: RetryPolicy {
                base_seconds: config::parse_var(
                    var(config::RETRY_BASE_SECONDS).as_deref(),
                    config::DEFAULT_RETRY_BASE_SECONDS,
                ),
                ..RetryPolicy::default()
            },
            max_retries: config::parse_var(
                var(config::MAX_RETRIES).as_deref(),
                config::DEFAULT_MAX_RETRIES,
            ),
            concurrency: config::parse_var(
                var(config::CONCURRENCY).as_deref(),
                config::DEFAULT_CONCURRENCY,
            )
            .max(1),
        }
    }
}

fn storage(what: &'static str) -> impl FnOnce(worker::Error) -> TagError {
    move |e| TagError::Storage(format!("{what}: {e}"))
}

fn now() -> String {
    String::from(worker::js_sys::Date::new_0().to_iso_string())
}

/// The results store.
pub fn kv(env: &Env) -> Result<KvStore, TagError> {
    env.kv(config::RESULTS_KV)
        .map_err(storage("RESULTS_KV binding"))
}

/// The image's current record. A record that does not parse counts as none, so that it
/// gets rewritten rather than blocking the image forever.
pub async fn current_record(
    kv: &KvStore,
    msg: &ImageMessage,
) -> Result<Option<TagRecord>, TagError> {
    let text = kv
        .get(&record_key(&msg.image_id))
        .text()
        .await
        .map_err(|e| TagError::Storage(format!("KV get: {e}")))?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Whether the image is already tagged.
pub fn is_done(record: &Option<TagRecord>) -> bool {
    record.as_ref().is_some_and(|r| r.status == Status::Done)
}

async fn put_json<T: Serialize>(
    kv: &KvStore,
    key: &str,
    value: &T,
    ttl: Option<u64>,
) -> Result<(), TagError> {
    let failed = |e: worker::kv::KvError| TagError::Storage(format!("KV put {key}: {e}"));
    let put = kv.put(key, value).map_err(failed)?;
    let put = match ttl {
        Some(ttl) => put.expiration_ttl(ttl),
        None => put,
    };
    put.execute().await.map_err(failed)
}

/// Writes an image's record.
pub async fn write_record(kv: &KvStore, record: &TagRecord) -> Result<(), TagError> {
    put_json(kv, &record_key(&record.image_id), record, None).await
}

/// How long a poison message's record is kept: 30 days.
const POISON_TTL_SECONDS: u64 = 30 * 24 * 60 * 60;

/// Keeps a message that cannot be decoded, so that it is not lost in silence.
pub async fn keep_poison(
    kv: &KvStore,
    message_id: &str,
    queue: &str,
    error: &TagError,
    body: &str,
) -> Result<(), TagError> {
    let record = PoisonRecord::new(message_id, queue, error, body, now());
    put_json(
        kv,
        &poison_key(message_id),
        &record,
        Some(POISON_TTL_SECONDS),
    )
    .await
}

/// The Workers AI input: the image as an array of byte values, built on the JS side.
#[derive(Serialize)]
struct AiInput {
    #[serde(with = "serde_wasm_bindgen::preserve")]
    image: Array,
}

/// Reads an object from R2 as the model's input. The bytes stay in JS memory: they are
/// never copied into wasm.
async fn read_image(env: &Env, key: &str) -> Result<Array, TagError> {
    let bucket = env
        .bucket(config::IMAGE_BUCKET)
        .map_err(storage("IMAGE_BUCKET binding"))?;
    let object = bucket
        .get(key)
        .execute()
        .await
        .map_err(storage("R2 get"))?
        .ok_or(TagError::ObjectMissing)?;
    let stream = match object.body().map(|b| b.response_body()) {
        Some(Ok(ResponseBody::Stream(stream))) => stream,
        _ => return Err(TagError::Storage(format!("R2 object {key} has no body"))),
    };
    let js = |e: worker::wasm_bindgen::JsValue| TagError::Storage(format!("R2 read {key}: {e:?}"));
    let response =
        worker::web_sys::Response::new_with_opt_readable_stream(Some(&stream)).map_err(js)?;
    let buffer = JsFuture::from(response.array_buffer().map_err(js)?)
        .await
        .map_err(js)?;
    Ok(Array::from(&Uint8Array::new(&buffer)))
}

/// Runs the classifier on an image.
async fn classify(env: &Env, image: Array) -> Result<Vec<Label>, TagError> {
    let ai = env
        .ai(config::AI)
        .map_err(|e| TagError::AiUnavailable(format!("AI binding: {e}")))?;
    ai.run::<_, Vec<Label>>(config::MODEL, AiInput { image })
        .await
        .map_err(|e| TagError::from_ai_error(&e.to_string()))
}

/// What came of a message whose body decoded.
pub enum Tagged {
    /// Classified now; the record is written.
    Done,
    /// Already had a `done` record: nothing was called or written.
    AlreadyDone,
}

/// Tags one image, unless it is already tagged.
pub async fn tag(
    env: &Env,
    kv: &KvStore,
    msg: &ImageMessage,
    settings: &Settings,
    attempt: u32,
) -> Result<Tagged, TagError> {
    if is_done(&current_record(kv, msg).await?) {
        return Ok(Tagged::AlreadyDone);
    }
    let image = read_image(env, &msg.r2_key).await?;
    let labels = classify(env, image).await?;
    let record = TagRecord::done(
        msg,
        config::MODEL,
        labels,
        settings.min_score,
        attempt,
        now(),
    );
    write_record(kv, &record).await?;
    Ok(Tagged::Done)
}

/// Records a permanent failure.
pub async fn fail(
    kv: &KvStore,
    msg: &ImageMessage,
    settings: &Settings,
    error: &TagError,
    attempts: Option<u32>,
) -> Result<(), TagError> {
    let record = TagRecord::failed(
        msg,
        config::MODEL,
        settings.min_score,
        error,
        attempts,
        now(),
    );
    write_record(kv, &record).await
}
