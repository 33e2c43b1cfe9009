//! The cron: makes "nothing is lost" true whatever broke in between. Queued images whose
//! next attempt is long overdue (a message dropped, a dead letter consumer that could not
//! write) are enqueued again, or failed if their bytes are gone; so are webhook deliveries
//! (an enqueue that failed after its transition, a message dropped). An image is due only
//! once its upload sent its message, so an upload still streaming is never taken for a lost
//! one; an upload whose message was never sent is picked up past the give-up horizon. It
//! purges expired Idempotency-Keys. With `RETENTION_DAYS` set it deletes expired images
//! ([`crate::retention`]); a value it refuses is logged on every run, and retention stays
//! off. Once an hour it logs the day's AI usage.

use serde::Serialize;
use shared::wire::config::binding;
use shared::{ImageMessage, TagError};
use worker::{Env, MessageBuilder, QueueContentType};

use crate::log;
use crate::pacer::PacerClient;
use crate::r2;
use crate::settings::Settings;
use crate::store::{OrStorage, Store};

/// How many overdue images one run handles at most.
const BATCH: u32 = 100;
/// How many expired Idempotency-Keys one run deletes at most.
const KEY_BATCH: u32 = 1000;

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Report {
    event: &'static str,
    requeued: u32,
    failed_missing: u32,
    notifications_requeued: u32,
    keys_purged: u32,
    errors: u32,
}

/// One run of the reconciler at `now_ms`; `cron_minute` is the scheduled minute of the hour.
pub async fn run(env: &Env, now_ms: u64, cron_minute: u32) {
    let mut report = Report {
        event: shared::wire::log_event::RECONCILE,
        ..Report::default()
    };
    if let Err(e) = requeue_overdue(env, now_ms, &mut report).await {
        worker::console_error!("reconciler: {e}");
        report.errors += 1;
    }
    let cutoff = now_ms.saturating_sub(Settings::get(env).stuck_after_ms);
    match crate::notify::requeue_overdue(env, now_ms, cutoff).await {
        Ok(n) => report.notifications_requeued = n,
        Err(e) => {
            worker::console_error!("reconciler (webhooks): {e}");
            report.errors += 1;
        }
    }
    match Store::open(env) {
        Ok(store) => match store.purge_keys(now_ms, KEY_BATCH).await {
            Ok(n) => report.keys_purged = n,
            Err(e) => {
                worker::console_error!("reconciler (keys): {e}");
                report.errors += 1;
            }
        },
        Err(e) => {
            worker::console_error!("reconciler (keys): {e}");
            report.errors += 1;
        }
    }
    log::emit(&report, report.errors > 0);
    match &Settings::get(env).retention_days {
        Ok(Some(days)) => crate::retention::run(env, now_ms, *days).await,
        Ok(None) => {}
        Err(e) => log::emit(
            &serde_json::json!({
                "event": shared::wire::log_event::CONFIG_INVALID,
                "var": shared::wire::config::RETENTION_DAYS.name,
                "error": e,
            }),
            true,
        ),
    }
    if cron_minute < 5 {
        log_usage(env).await;
    }
}

async fn requeue_overdue(env: &Env, now: u64, report: &mut Report) -> Result<(), TagError> {
    let settings = Settings::get(env);
    let store = Store::open(env)?;
    let cutoff = now.saturating_sub(settings.stuck_after_ms);
    let queue = env
        .queue(binding::IMAGE_QUEUE)
        .or_storage("IMAGE_QUEUE binding")?;
    let mut rows = store.overdue(now, cutoff, BATCH).await?;
    // Uploads that never sent their message (stopped between the insert and the send),
    // far past any upload still running.
    let abandoned = now.saturating_sub(
        settings
            .policy
            .give_up_after_ms
            .max(settings.stuck_after_ms),
    );
    rows.extend(store.unsent(abandoned, BATCH).await?);
    for row in rows {
        let Some(message) = message_of(&row) else {
            report.errors += 1;
            continue;
        };
        let outcome = if r2::exists(env, &row.r2_key).await? {
            queue
                .send(
                    MessageBuilder::new(&message)
                        .content_type(QueueContentType::Json)
                        .build(),
                )
                .await
                .or_storage("queue send")?;
            store.requeued(&row.id, now).await?;
            report.requeued += 1;
            "requeued"
        } else {
            if let Some(record) = store
                .mark_failed(&message.image_id, &TagError::ObjectMissing, now, None)
                .await?
            {
                store.publish(&record).await?;
                crate::notify::enqueue(env, &record).await;
            }
            report.failed_missing += 1;
            "failed"
        };
        log::emit(
            &serde_json::json!({ "event": shared::wire::log_event::RECONCILE_IMAGE, "imageId": row.id, "action": outcome }),
            false,
        );
    }
    Ok(())
}

/// The queue message of a recorded image.
fn message_of(row: &shared::storage::images::ImageRow) -> Option<ImageMessage> {
    Some(ImageMessage {
        schema_version: shared::wire::message::SCHEMA_VERSION,
        image_id: shared::ImageId::parse(&row.id).ok()?,
        r2_key: row.r2_key.clone(),
        content_type: row.content_type.clone(),
        size: row.size,
        uploaded_at: shared::wire::time::format_ms(row.uploaded_at),
    })
}

async fn log_usage(env: &Env) {
    match PacerClient::open(env) {
        Ok(pacer) => match pacer.usage().await {
            Ok(usage) => log::emit(
                &serde_json::json!({ "event": shared::wire::log_event::AI_USAGE, "usage": usage }),
                false,
            ),
            Err(e) => worker::console_warn!("reconciler: AI usage unavailable: {e}"),
        },
        Err(e) => worker::console_warn!("reconciler: AI pacer binding: {e}"),
    }
}
