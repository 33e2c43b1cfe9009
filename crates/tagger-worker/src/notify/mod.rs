//! Webhook deliveries: the consumer of `notification-queue`, the enqueue after a
//! transition, and the reconciler's rescue of deliveries whose message was lost.
//!
//! The event itself was recorded in D1 with the image's transition (the outbox, see
//! [`shared::storage::outbox`]); a message only says "deliver this event now". Each delivery claims
//! the event (a lease, and only once it is due), signs and posts it, and records the answer
//! as [`shared::webhook::retry::decide`] says: delivered, retry after a delay (the message
//! is retried with that delay), or given up. The image itself is never changed here.

mod http;
mod outbox;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use shared::storage::outbox::{clip, NotificationRow};
use shared::tagging::retry::jitter_seed;
use shared::tagging::retry::MAX_DELAY_SECONDS;
use shared::webhook::retry::{decide, description, Attempt, Decision};
use shared::webhook::sign::{
    signature_header, signed_content, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use shared::webhook::url::CallbackUrl;
use shared::webhook::{DeliveryOutcome, NotifyMessage};
use shared::wire::config::{binding, queue};
use shared::wire::log_event;
use shared::wire::record::TagRecord;
use shared::wire::time::format_ms;
use shared::TagError;
use worker::js_sys::Date;
use worker::{Env, MessageBuilder, QueueContentType};

use crate::log;
use crate::queue_api::{QueueBatch, QueueMessage};
use crate::settings::Settings;
use crate::store::{OrStorage, Store};
use http::Sent;
use outbox::{Claim, Outbox};

fn now_ms() -> u64 {
    Date::now() as u64
}

/// Whole seconds from `now` until `at`: at least one, at most the queue's longest delay.
fn seconds_until(at: u64, now: u64) -> u32 {
    (at.saturating_sub(now).div_ceil(1000)).clamp(1, u64::from(MAX_DELAY_SECONDS)) as u32
}

/// Enqueues the delivery of the event a transition recorded, if it recorded one. A failed
/// send is only logged: the event is in the outbox, and the reconciler enqueues it later.
pub async fn enqueue(env: &Env, record: &TagRecord) {
    let Some(event_id) = record
        .notification
        .as_ref()
        .and_then(|n| n.event_id.clone())
    else {
        return;
    };
    if let Err(e) = send(env, event_id.clone()).await {
        worker::console_warn!(
            "tagger: could not enqueue webhook {event_id} ({e}); the reconciler will"
        );
    }
}

async fn send(env: &Env, event_id: String) -> Result<(), TagError> {
    env.queue(binding::NOTIFY_QUEUE)
        .or_storage("NOTIFY_QUEUE binding")?
        .send(
            MessageBuilder::new(&NotifyMessage::new(event_id))
                .content_type(QueueContentType::Json)
                .build(),
        )
        .await
        .or_storage("notification queue send")
}

/// The reconciler's part: enqueues pending deliveries overdue since before `cutoff` (a
/// message lost, or an enqueue that failed after its transition). Returns how many.
pub async fn requeue_overdue(env: &Env, now: u64, cutoff: u64) -> Result<u32, TagError> {
    let outbox = Outbox::open(env)?;
    let mut count = 0;
    for row in outbox.overdue(now, cutoff, 100).await? {
        send(env, row.event_id.clone()).await?;
        outbox.requeued(&row.event_id, now).await?;
        log::emit(
            &serde_json::json!({
                "event": shared::wire::log_event::RECONCILE_NOTIFICATION,
                "eventId": row.event_id,
                "imageId": row.image_id,
                "action": "requeued",
            }),
            false,
        );
        count += 1;
    }
    Ok(count)
}

/// Handles a batch of `notification-queue`. Never fails: every message is acked or
/// retried on its own.
pub async fn consume(batch: QueueBatch, env: &Env) {
    let settings = Settings::get(env);
    let (outbox, store) = match (Outbox::open(env), Store::open(env)) {
        (Ok(outbox), Ok(store)) => (outbox, store),
        (Err(e), _) | (_, Err(e)) => {
            worker::console_error!("tagger misconfigured: {e}");
            batch.messages().iter().for_each(|m| m.retry_after(60));
            return;
        }
    };
    let ctx = Ctx {
        settings: &settings,
        outbox,
        store,
    };
    stream::iter(batch.messages())
        .for_each_concurrent(settings.concurrency, |m| ctx.deliver(m))
        .await;
}

struct Ctx<'a> {
    settings: &'a Settings,
    outbox: Outbox,
    store: Store,
}

/// One log line per message: what became of it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    event: &'static str,
    message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    /// The receiver's host (never the whole URL: it may carry a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    outcome: DeliveryOutcome,
    /// The delivery's attempt count (once claimed), else the message's.
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_seconds: Option<u32>,
    duration_ms: f64,
    #[serde(skip)]
    started: f64,
}

impl Line {
    fn new(message: &QueueMessage) -> Self {
        Self {
            event: log_event::NOTIFY,
            message_id: message.id(),
            event_id: None,
            image_id: None,
            event_type: None,
            host: None,
            outcome: DeliveryOutcome::Deferred,
            attempt: message.attempt(),
            status: None,
            error: None,
            delay_seconds: None,
            duration_ms: 0.0,
            started: Date::now(),
        }
    }

    fn emit(mut self, outcome: DeliveryOutcome) {
        self.outcome = outcome;
        self.duration_ms = Date::now() - self.started;
        log::emit(&self, outcome == DeliveryOutcome::Failed);
    }
}

/// The host of a stored callback URL, for logs.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', ':'])
        .next()
        .unwrap_or_default()
        .into()
}

/// Turns what happened on the wire into the policy's terms, the status, and the platform's
/// detail (for the log only: what is kept is [`description`]'s fixed text).
fn describe(sent: &Sent) -> (Attempt, Option<u16>, Option<String>) {
    match sent {
        Sent::Answered {
            status,
            retry_after_seconds,
        } => {
            let attempt = Attempt::Answered {
                status: *status,
                retry_after_seconds: *retry_after_seconds,
            };
            (attempt, Some(*status), None)
        }
        Sent::TimedOut => (Attempt::TimedOut, None, None),
        Sent::Unreachable(why) => (Attempt::Unreachable, None, Some(clip(why, 512).to_string())),
    }
}

impl Ctx<'_> {
    async fn deliver(&self, message: QueueMessage) {
        let mut line = Line::new(&message);
        let body = message.body_json();
        let event_id = match NotifyMessage::decode(&body) {
            Ok(m) => m.event_id,
            Err(why) => return self.poison(&message, &body, why, line).await,
        };
        line.event_id = Some(event_id.clone());
        let now = now_ms();
        let row = match self.outbox.claim(&event_id, now).await {
            Ok(Claim::Claimed(row)) => row,
            Ok(Claim::Gone) => {
                message.ack_quietly();
                return line.emit(DeliveryOutcome::Gone);
            }
            Ok(Claim::Finished) => {
                message.ack_quietly();
                return line.emit(DeliveryOutcome::Skipped);
            }
            // Come back when it is due, or when the other delivery's lease ends (if that
            // delivery finishes first, this message is then skipped).
            Ok(Claim::NotDue(at) | Claim::Leased(at)) => {
                let delay = seconds_until(at, now);
                message.retry_after(delay);
                line.delay_seconds = Some(delay);
                return line.emit(DeliveryOutcome::Deferred);
            }
            Err(e) => {
                let delay = self.storage_delay(&message);
                message.retry_after(delay);
                line.delay_seconds = Some(delay);
                line.error = Some(e.to_string());
                return line.emit(DeliveryOutcome::Retry);
            }
        };
        self.attempt(&message, row, line).await
    }

    /// Waits after a storage failure: the webhook backoff for this message's attempt.
    fn storage_delay(&self, message: &QueueMessage) -> u32 {
        let now = now_ms();
        match decide(
            Attempt::NotSent,
            message.attempt(),
            now,
            now,
            jitter_seed(&message.id(), message.attempt()),
            &self.settings.webhook_retry,
        ) {
            Decision::Retry { delay_seconds } => delay_seconds,
            _ => self.settings.webhook_retry.base_seconds.max(1),
        }
    }

    /// One attempt of a claimed event, and its record.
    async fn attempt(&self, message: &QueueMessage, row: Box<NotificationRow>, mut line: Line) {
        line.image_id = Some(row.image_id.clone());
        line.event_type = Some(row.event_type.clone());
        line.host = Some(host_of(&row.url));
        line.attempt = row.attempts;
        // The stored URL passed the policy of its upload; the policy of now decides.
        let checked = CallbackUrl::parse(&row.url, &self.settings.callback_policy);
        let (attempt, status, detail) = match (&self.settings.webhook_keys.0, checked) {
            (_, Err(why)) => (Attempt::Refused, None, Some(why.to_string())),
            (Err(why), _) => (Attempt::NotSent, None, Some(why.clone())),
            (Ok(keys), Ok(_)) => {
                let timestamp = now_ms() / 1000;
                let content = signed_content(&row.event_id, timestamp, &row.payload);
                match http::sign(keys, &content).await {
                    Err(why) => (Attempt::NotSent, None, Some(why)),
                    Ok(macs) => {
                        let headers = [
                            ("content-type", "application/json".to_string()),
                            ("user-agent", "image-tagger-webhooks/1".to_string()),
                            (HEADER_ID, row.event_id.clone()),
                            (HEADER_TIMESTAMP, timestamp.to_string()),
                            (HEADER_SIGNATURE, signature_header(&macs)),
                        ];
                        describe(&http::post(&row.url, &headers, &row.payload).await)
                    }
                }
            }
        };
        let error = description(attempt);
        line.status = status;
        line.error = match (&error, detail) {
            (Some(error), Some(detail)) => Some(format!("{error}: {detail}")),
            (error, _) => error.clone(),
        };
        let now = now_ms();
        let decision = decide(
            attempt,
            row.attempts,
            row.created_at,
            now,
            jitter_seed(&row.event_id, row.attempts),
            &self.settings.webhook_retry,
        );
        let error = error.unwrap_or_default();
        let recorded = match decision {
            Decision::Delivered => {
                self.outbox
                    .delivered(&row.event_id, now, status.unwrap_or_default())
                    .await
            }
            Decision::Retry { delay_seconds } => {
                let due = now + u64::from(delay_seconds) * 1000;
                self.outbox
                    .retry_later(&row.event_id, now, status, &error, due, row.lease_until)
                    .await
            }
            Decision::GiveUp { .. } => {
                self.outbox
                    .gave_up(&row.event_id, now, status, &error)
                    .await
            }
        };
        if let Err(e) = recorded {
            // The row still says pending, under this delivery's lease: come back after it
            // (a delivered event may then be sent again; receivers deduplicate).
            let delay = seconds_until(row.lease_until.unwrap_or(now), now);
            message.retry_after(delay);
            line.delay_seconds = Some(delay);
            line.error = Some(format!("{error}; not recorded: {e}"));
            return line.emit(DeliveryOutcome::Retry);
        }
        match decision {
            Decision::Delivered => {
                message.ack_quietly();
                line.emit(DeliveryOutcome::Delivered)
            }
            Decision::Retry { delay_seconds } => {
                message.retry_after(delay_seconds);
                line.delay_seconds = Some(delay_seconds);
                line.emit(DeliveryOutcome::Retry)
            }
            Decision::GiveUp { .. } => {
                message.ack_quietly();
                line.emit(DeliveryOutcome::Failed)
            }
        }
    }

    /// A body this build cannot decode: kept in KV, and acked.
    async fn poison(&self, message: &QueueMessage, body: &str, why: String, mut line: Line) {
        let error = TagError::MalformedMessage(why);
        line.error = Some(error.message());
        let kept = self
            .store
            .keep_poison(
                &message.id(),
                queue::NOTIFICATIONS,
                &error,
                body,
                format_ms(now_ms()),
            )
            .await;
        match kept {
            Ok(()) => {
                message.ack_quietly();
                line.emit(DeliveryOutcome::Poison)
            }
            Err(e) => {
                let delay = self.storage_delay(message);
                message.retry_after(delay);
                line.delay_seconds = Some(delay);
                line.error = Some(e.to_string());
                line.emit(DeliveryOutcome::Retry)
            }
        }
    }
}
