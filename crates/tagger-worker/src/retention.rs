//! Retention: with `RETENTION_DAYS` set (from 1), each reconciler run deletes up to [`BATCH`]
//! finished images (`done` or `failed`: never a queued one, which may be uploading, being
//! tagged, or waiting for a budget) uploaded before the cutoff, oldest first, everywhere:
//! their KV records (an image whose record cannot be deleted is kept whole for the next
//! run), their R2 objects (one bulk delete), their D1 rows with their tags and
//! Idempotency-Keys (one transaction), and then once more their KV records, in case a tagger
//! published one meanwhile (its re-check of D1 in `Store::publish` ran before the rows
//! went). KV deletes never read first: a stale read would skip them. Each owner's open
//! sockets then hear `image.deleted` for its images (one request per owner). A backlog
//! drains at [`BATCH`] images a run; each run logs one `tagger.retention` line.

use std::collections::BTreeMap;

use edge::d1::{n, Db};
use edge::log::{self, Level};
use edge::OrStorage;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use shared::api::live::LiveEvent;
use shared::storage::manage::{id_list, ObjectRow, DELETE_IMAGES, SELECT_EXPIRED};
use shared::wire::config::binding;
use shared::wire::keys::record_key;
use shared::wire::log_event;
use shared::{ImageId, TagError};
use worker::wasm_bindgen::JsValue;
use worker::{Env, KvStore};

/// Most images one run deletes: each costs two KV deletes (subrequests), on top of one D1
/// select, one R2 bulk delete and one D1 batch.
pub const BATCH: u32 = 100;
/// KV deletes in flight at once.
const CONCURRENCY: usize = 8;
const DAY_MS: u64 = 86_400_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    retention_days: u32,
    /// Images uploaded before this were due.
    cutoff: String,
    /// Images deleted from R2 and D1.
    deleted: u32,
    /// KV records deleted (finished images have one).
    records_deleted: u32,
    /// Whether more images are due than one run deletes.
    more: bool,
    errors: u32,
}

/// One run at `now` (ms): deletes what is older than `days`, and logs the counts.
pub async fn run(env: &Env, now: u64, days: u32) {
    let cutoff = now.saturating_sub(u64::from(days).saturating_mul(DAY_MS));
    let mut report = Report {
        retention_days: days,
        cutoff: shared::wire::time::format_ms(cutoff),
        deleted: 0,
        records_deleted: 0,
        more: false,
        errors: 0,
    };
    if let Err(e) = expire(env, cutoff, &mut report).await {
        log::problem(Level::Error, log_event::RETENTION_ERROR, &e.to_string());
        report.errors += 1;
    }
    let level = Level::error_if(report.errors > 0);
    log::emit(level, log_event::RETENTION, &report);
}

async fn expire(env: &Env, cutoff: u64, report: &mut Report) -> Result<(), TagError> {
    let db = Db::<TagError>::open(env)?;
    let params = [n(cutoff), JsValue::from(BATCH)];
    let rows: Vec<ObjectRow> = db.all("D1 select expired", SELECT_EXPIRED, &params).await?;
    if rows.is_empty() {
        return Ok(());
    }
    report.more = rows.len() as u32 >= BATCH;
    let kv = env
        .kv(binding::RESULTS_KV)
        .or_storage("RESULTS_KV binding")?;
    // Records first: an image whose record cannot be deleted now stays whole, and the next
    // run tries again (a record must never outlive its row).
    let with_record: Vec<&ObjectRow> = rows.iter().collect();
    let mut failed = std::collections::HashSet::new();
    for (row, result) in with_record
        .iter()
        .zip(delete_records(&kv, &with_record).await)
    {
        match result {
            Ok(()) => report.records_deleted += 1,
            Err(e) => {
                log::problem(Level::Error, log_event::RETENTION_ERROR, &e.to_string());
                report.errors += 1;
                failed.insert(row.id.as_str());
            }
        }
    }
    let expiring: Vec<&ObjectRow> = rows
        .iter()
        .filter(|r| !failed.contains(r.id.as_str()))
        .collect();
    if expiring.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = expiring.iter().map(|r| r.r2_key.as_str()).collect();
    env.bucket(binding::IMAGE_BUCKET)
        .or_storage("IMAGE_BUCKET binding")?
        .delete_multiple(keys)
        .await
        .or_storage("R2 delete")?;
    let ids: Vec<&str> = expiring.iter().map(|r| r.id.as_str()).collect();
    let list = JsValue::from_str(&id_list(&ids));
    let batch = DELETE_IMAGES
        .iter()
        .map(|sql| db.statement(sql, std::slice::from_ref(&list)))
        .collect::<Result<Vec<_>, _>>()?;
    db.batch("D1 delete expired", batch).await?;
    report.deleted = expiring.len() as u32;
    announce(env, &expiring).await;
    // Records again, in case one appeared since: a delivery that published while the rows
    // were still there (its re-check of D1 came first).
    for result in delete_records(&kv, &expiring).await {
        match result {
            Ok(()) => {}
            Err(e) => {
                log::problem(Level::Error, log_event::RETENTION_ERROR, &e.to_string());
                report.errors += 1;
            }
        }
    }
    Ok(())
}

/// Sends `image.deleted` for each of `rows` (deleted) to its owner's sockets: one request
/// per owner, a few owners at a time (best-effort, as every live update).
async fn announce(env: &Env, rows: &[&ObjectRow]) {
    let now = edge::now_ms();
    let mut by_owner: BTreeMap<&str, Vec<LiveEvent>> = BTreeMap::new();
    for row in rows {
        if let Ok(id) = ImageId::parse(&row.id) {
            let events = by_owner.entry(row.owner.as_str()).or_default();
            events.push(LiveEvent::deleted(id, now));
        }
    }
    stream::iter(&by_owner)
        .for_each_concurrent(CONCURRENCY, |(owner, events)| {
            edge::live::publish_all(env, owner, events)
        })
        .await;
}

/// Deletes the KV records of `rows`, a few at a time, without reading them first.
async fn delete_records(kv: &KvStore, rows: &[&ObjectRow]) -> Vec<Result<(), TagError>> {
    stream::iter(rows)
        .map(|row| async move {
            let id = ImageId::parse(&row.id)
                .map_err(|_| TagError::Storage(format!("malformed id {:?}", row.id)))?;
            kv.delete(&record_key(&id)).await.or_storage("KV delete")
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}
