//! Batch handling: decode each message on its own, fold duplicates, process concurrently
//! with a bound, and ack or retry each message according to its outcome.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use shared::config;
use shared::error::Disposition;
use shared::retry::jitter_seed;
use shared::{ImageId, ImageMessage, TagError};
use worker::js_sys::Date;
use worker::wasm_bindgen::JsValue;
use worker::{console_log, Env, KvStore};

use crate::queue_api::{QueueBatch, QueueMessage};
use crate::tagging::{self, Settings, Tagged};

/// One structured log line per message outcome, readable in `wrangler tail`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome<'a> {
    event: &'static str,
    queue: &'a str,
    message_id: String,
    image_id: Option<ImageId>,
    outcome: &'static str,
    attempt: u32,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_seconds: Option<u32>,
}

impl Outcome<'_> {
    fn log(&self) {
        if let Ok(line) = serde_json::to_string(self) {
            console_log!("{line}");
        }
    }
}

/// Messages about one image within a batch: the first is processed, the others follow it.
struct Work {
    message: QueueMessage,
    body: ImageMessage,
    duplicates: Vec<QueueMessage>,
}

/// Handles a batch from the main queue or the dead letter queue.
pub async fn consume(batch: QueueBatch, env: &Env) {
    let settings = Settings::from_env(env);
    let queue = batch.queue();
    let kv = match tagging::kv(env) {
        Ok(kv) => kv,
        Err(e) => {
            // Without KV nothing can be recorded: retry everything later.
            for message in batch.messages() {
                let _ = message.retry(&JsValue::UNDEFINED);
            }
            worker::console_error!("tagger misconfigured: {e}");
            return;
        }
    };
    let mut work: Vec<Work> = Vec::new();
    let mut index: HashMap<ImageId, usize> = HashMap::new();
    for message in batch.messages() {
        let json = message.body_json();
        match ImageMessage::decode(&json) {
            Ok(body) => match index.get(&body.image_id) {
                Some(&i) => work[i].duplicates.push(message),
                None => {
                    index.insert(body.image_id, work.len());
                    work.push(Work {
                        message,
                        body,
                        duplicates: Vec::new(),
                    });
                }
            },
            Err(e) => poison(&kv, &queue, &message, &json, e.into()).await,
        }
    }
    let ctx = Ctx {
        env,
        kv: &kv,
        settings: &settings,
        queue: &queue,
    };
    stream::iter(work)
        .map(|w| ctx.process(w))
        .buffer_unordered(settings.concurrency)
        .collect::<()>()
        .await;
}

/// Keeps an undecodable message in KV and acks it; retries if it cannot be kept.
async fn poison(kv: &KvStore, queue: &str, message: &QueueMessage, json: &str, error: TagError) {
    let started = Date::now();
    let (outcome, error) = match tagging::keep_poison(kv, &message.id(), queue, &error, json).await
    {
        Ok(()) => {
            let _ = message.ack();
            ("poison", error)
        }
        Err(storage) => {
            let _ = message.retry(&JsValue::UNDEFINED);
            ("retry", storage)
        }
    };
    Outcome {
        event: "tagger.message",
        queue,
        message_id: message.id(),
        image_id: ImageMessage::sniff_image_id(json),
        outcome,
        attempt: message.attempt(),
        duration_ms: Date::now() - started,
        error_code: Some(error.code()),
        error: Some(error.message()),
        delay_seconds: None,
    }
    .log();
}

struct Ctx<'a> {
    env: &'a Env,
    kv: &'a KvStore,
    settings: &'a Settings,
    queue: &'a str,
}

/// What to do with a message, and why.
enum Verdict {
    /// Finished: `outcome` is `done`, `skipped` or `failed` (with its error).
    Ack {
        outcome: &'static str,
        error: Option<TagError>,
    },
    /// Try again later.
    Retry(TagError),
}

impl Verdict {
    /// Finished without an error.
    fn ack(outcome: &'static str) -> Self {
        Self::Ack {
            outcome,
            error: None,
        }
    }
}

impl Ctx<'_> {
    async fn process(&self, work: Work) {
        let started = Date::now();
        let attempt = work.message.attempt();
        let dead_letters = self.queue == config::DEAD_LETTER_QUEUE_NAME;
        let verdict = if dead_letters {
            self.dead_letter(&work.body).await
        } else {
            self.tag(&work.body, attempt).await
        };
        let (outcome, error, delay_seconds) = match verdict {
            Verdict::Ack { outcome, error } => {
                let _ = work.message.ack();
                (outcome, error, None)
            }
            // The main queue's last try: retrying hands the message to the dead letter queue.
            Verdict::Retry(error) if !dead_letters && attempt > self.settings.max_retries => {
                let _ = work.message.retry(&JsValue::UNDEFINED);
                ("dead_letter", Some(error), None)
            }
            Verdict::Retry(error) => {
                let seed = jitter_seed(&work.message.id(), attempt);
                let delay = self.settings.retry.delay_seconds(attempt, seed);
                let options = worker::js_sys::Object::new();
                let _ =
                    worker::js_sys::Reflect::set(&options, &"delaySeconds".into(), &delay.into());
                let _ = work.message.retry(&options);
                ("retry", Some(error), Some(delay))
            }
        };
        let log = |message: &QueueMessage, outcome| Outcome {
            event: "tagger.message",
            queue: self.queue,
            message_id: message.id(),
            image_id: Some(work.body.image_id),
            outcome,
            attempt: message.attempt(),
            duration_ms: Date::now() - started,
            error_code: error.as_ref().map(TagError::code),
            error: error.as_ref().map(TagError::message),
            delay_seconds,
        };
        log(&work.message, outcome).log();
        // Duplicates in the same batch ride on the first delivery: one AI call per image.
        for duplicate in &work.duplicates {
            let _ = duplicate.ack();
            log(duplicate, "duplicate").log();
        }
    }

    /// Main queue: tag, or record a permanent failure.
    async fn tag(&self, msg: &ImageMessage, attempt: u32) -> Verdict {
        let error = match tagging::tag(self.env, self.kv, msg, self.settings, attempt).await {
            Ok(Tagged::Done) => return Verdict::ack("done"),
            Ok(Tagged::AlreadyDone) => return Verdict::ack("skipped"),
            Err(e) if e.disposition() == Disposition::Retry => return Verdict::Retry(e),
            Err(e) => e,
        };
        self.record_failure(msg, error, Some(attempt)).await
    }

    /// Dead letter queue: the main queue gave up. Record that, unless the image got tagged
    /// after all.
    async fn dead_letter(&self, msg: &ImageMessage) -> Verdict {
        match tagging::current_record(self.kv, msg).await {
            Ok(record) if tagging::is_done(&record) => Verdict::ack("skipped"),
            Ok(_) => {
                let attempts = Some(self.settings.max_retries + 1);
                self.record_failure(msg, TagError::RetriesExhausted, attempts)
                    .await
            }
            Err(e) => Verdict::Retry(e),
        }
    }

    async fn record_failure(
        &self,
        msg: &ImageMessage,
        error: TagError,
        attempts: Option<u32>,
    ) -> Verdict {
        match tagging::fail(self.kv, msg, self.settings, &error, attempts).await {
            Ok(()) => Verdict::Ack {
                outcome: "failed",
                error: Some(error),
            },
            Err(e) => Verdict::Retry(e),
        }
    }
}
