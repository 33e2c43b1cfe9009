//! The cron: makes "nothing is lost" true whatever broke in between. Queued images whose
//! next attempt is long overdue (a message dropped, a dead letter consumer that could not
//! write) are enqueued again, or failed if their bytes are gone; so are webhook deliveries
//! (an enqueue that failed after its transition, a message dropped). With `RETENTION_DAYS`
//! set it deletes expired images ([`crate::retention`]). Once an hour it logs the day's AI
//! usage.

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

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Report {
    event: &'static str,
    requeued: u32,
    failed_missing: u32,
    notifications_requeued: u32,
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
    log::emit(&report, report.errors > 0);
    if let Some(days) = Settings::get(env).retention_days {
        crate::retention::run(env, now_ms, days).await;
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
    for row in store.overdue(now, cutoff, BATCH).await? {
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
                .mark_failed(&message.image_id, &TagError::ObjectMissing, now)
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
