//! The system of record in D1: every statement both workers run, and the rows they read.
//! The schema is `migrations/`; the native tests run these statements against it in SQLite.
//!
//! State changes are conditional updates, so only the allowed transitions can happen:
//! `queued → done`, `queued → failed`, `failed → done` and `failed → failed` (a redrive),
//! never `done → anything`. A statement that changes no row tells its caller that another
//! delivery got there first.

use serde::Deserialize;

use crate::tagging::labels::Label;
use crate::wire::record::{ErrorInfo, QueuedView, Status, TagRecord};
use crate::wire::time::format_ms;
use crate::ImageId;

/// Inserts a queued image, not due yet: `due_at` stays NULL while its upload runs, and is
/// set by [`MARK_SENT`] once its message is sent, so the reconciler never takes an upload in
/// progress for a lost message. `?1` id, `?2` R2 key, `?3` content type, `?4` size, `?5` now,
/// `?6` owner ([`crate::api::auth::Caller::owner`]).
/// (Its webhook URL, if any, is set in the same batch: [`crate::storage::outbox::SET_CALLBACK`].)
pub const INSERT_QUEUED: &str = "INSERT INTO images \
     (id, status, r2_key, content_type, size, uploaded_at, due_at, updated_at, owner) \
     VALUES (?1, 'queued', ?2, ?3, ?4, ?5, NULL, ?5, ?6)";

/// Sets the size of an image once its bytes are stored (a streamed multipart or chunked
/// body's length is only known then). `?1` id, `?2` size. It changes no row when the image
/// was deleted during its upload: the upload then removes the object it stored.
pub const SET_SIZE: &str = "UPDATE images SET size = ?2 WHERE id = ?1";

/// Makes an image due once its message is sent: the reconciler counts from here. A tagger
/// that claimed it first (its claim sets `due_at`) is left alone. `?1` id, `?2` now.
pub const MARK_SENT: &str = "UPDATE images SET due_at = ?2 \
     WHERE id = ?1 AND status = 'queued' AND due_at IS NULL";

/// What the upload does once an image's message is sent, in one statement instead of
/// [`SET_SIZE`] and [`MARK_SENT`] (one D1 round trip less per upload): records the stored
/// size, and makes the image due unless a tagger claimed it first (its claim set `due_at`).
/// It changes no row exactly when the image was deleted during its upload: the upload then
/// removes the object it stored (the message finds no row, and the tagger drops it).
/// `?1` id, `?2` size, `?3` now.
pub const SENT: &str = "UPDATE images SET size = ?2, \
     due_at = CASE WHEN status = 'queued' AND due_at IS NULL THEN ?3 ELSE due_at END \
     WHERE id = ?1";

/// Removes an image whose upload did not complete. `?1` id.
pub const DELETE_UNFINISHED: &str = "DELETE FROM images WHERE id = ?1 AND status = 'queued'";

/// Claims an image for one delivery: takes the lease unless another delivery holds it or it
/// is done. `?1` id, `?2` now, `?3` lease end. Returns the claimed row.
pub const CLAIM: &str = "UPDATE images \
     SET lease_until = ?3, due_at = ?3, attempts = attempts + 1, updated_at = ?2 \
     WHERE id = ?1 AND status != 'done' AND (lease_until IS NULL OR lease_until <= ?2) \
     RETURNING *";

/// The full row of an image. `?1` id.
pub const SELECT_IMAGE: &str = "SELECT * FROM images WHERE id = ?1";

/// The full row of an image, if `?2` owns it. `?1` id, `?2` owner.
pub const SELECT_OWNED_IMAGE: &str = "SELECT * FROM images WHERE id = ?1 AND owner = ?2";

/// Records a classification, unless the image is done or another delivery's lease is live
/// (the caller's own lease is fine). `?1` id, `?2` tags JSON, `?3` labels JSON, `?4` model,
/// `?5` min score, `?6` now, `?7` the caller's lease end, or NULL if it holds none, `?8`
/// categories JSON (`[{name, score}]`).
pub const MARK_DONE: &str = "UPDATE images \
     SET status = 'done', tags = ?2, labels = ?3, model = ?4, min_score = ?5, \
         categories = ?8, processed_at = ?6, updated_at = ?6, lease_until = NULL, due_at = NULL, \
         error_code = NULL, error_message = NULL \
     WHERE id = ?1 AND status != 'done' \
       AND (lease_until IS NULL OR lease_until <= ?6 OR lease_until = ?7)";

/// Adds a done image's tags and category names to the search index (lower case; a name that
/// is both counts once), with the image's owner. `?1` id.
pub const INDEX_TAGS: &str =
    "INSERT OR IGNORE INTO image_tags (tag, uploaded_at, image_id, owner) \
     SELECT lower(j.value), i.uploaded_at, i.id, i.owner FROM images i, json_each(i.tags) j \
     WHERE i.id = ?1 AND i.status = 'done' \
     UNION ALL SELECT lower(json_extract(c.value, '$.name')), i.uploaded_at, i.id, i.owner \
     FROM images i, json_each(i.categories) c \
     WHERE i.id = ?1 AND i.status = 'done' AND json_extract(c.value, '$.name') IS NOT NULL";

/// Records a permanent failure, unless the image is done or another delivery's lease is
/// live (the caller's own lease is fine): a dead letter, or a delivery whose lease ran out,
/// never fails an image that another delivery is tagging. `?1` id, `?2` error code,
/// `?3` error message, `?4` now, `?5` the caller's lease end, or NULL if it holds none.
pub const MARK_FAILED: &str = "UPDATE images \
     SET status = 'failed', error_code = ?2, error_message = ?3, processed_at = ?4, \
         updated_at = ?4, lease_until = NULL, due_at = NULL \
     WHERE id = ?1 AND status != 'done' \
       AND (lease_until IS NULL OR lease_until <= ?4 OR lease_until = ?5)";

/// Records when an image will be tried next, and releases the caller's lease (but
/// never another delivery's). `?1` id, `?2` next attempt, `?3` now, `?4` the caller's lease
/// end, or NULL if it holds none.
pub const DEFER: &str = "UPDATE images \
     SET due_at = ?2, updated_at = ?3, \
         lease_until = CASE WHEN lease_until = ?4 THEN NULL ELSE lease_until END \
     WHERE id = ?1 AND status != 'done' \
       AND (lease_until IS NULL OR lease_until <= ?3 OR lease_until = ?4)";

/// Queued images overdue by the stuck threshold and not leased. `?1` now, `?2` overdue
/// before this time, `?3` limit.
pub const SELECT_OVERDUE: &str = "SELECT * FROM images \
     WHERE status = 'queued' AND due_at < ?2 AND (lease_until IS NULL OR lease_until <= ?1) \
     ORDER BY due_at LIMIT ?3";

/// Queued images whose message was never sent (`due_at` NULL) although their upload began
/// before `?1`: an upload worker stopped between its insert and its send. `?2` limit.
/// `?1` is the give-up horizon ago, far beyond any upload still running.
pub const SELECT_UNSENT: &str = "SELECT * FROM images \
     WHERE status = 'queued' AND due_at IS NULL AND uploaded_at < ?1 \
     ORDER BY uploaded_at LIMIT ?2";

/// Marks an overdue image as re-enqueued. `?1` id, `?2` now.
pub const REQUEUED: &str =
    "UPDATE images SET due_at = ?2, updated_at = ?2 WHERE id = ?1 AND status = 'queued'";

/// Whether an image still exists. `?1` id.
pub const EXISTS: &str = "SELECT 1 AS present FROM images WHERE id = ?1";

/// Reserves an `Idempotency-Key` for a new image, unless a live reservation holds it. An
/// expired key, or one whose first request never finished (pending past `?6`, and its image
/// never recorded or removed again), is taken over: a pending key whose image row exists is
/// never taken over, so a slow first request and a retry never make two images. `?1` scope,
/// `?2` key, `?3` image id, `?4` now, `?5` expiry, `?6` stale-pending cutoff. Returns the
/// image id the key now names.
pub const RESERVE_KEY: &str = "INSERT INTO idempotency_keys \
     (scope, key, image_id, body_sha256, created_at, expires_at) VALUES (?1, ?2, ?3, NULL, ?4, ?5) \
     ON CONFLICT (scope, key) DO UPDATE SET image_id = excluded.image_id, body_sha256 = NULL, \
         created_at = excluded.created_at, expires_at = excluded.expires_at \
     WHERE idempotency_keys.expires_at <= ?4 \
        OR (idempotency_keys.body_sha256 IS NULL AND idempotency_keys.created_at <= ?6 \
            AND NOT EXISTS (SELECT 1 FROM images WHERE images.id = idempotency_keys.image_id)) \
     RETURNING image_id";

/// The reservation behind a key. `?1` scope, `?2` key.
pub const SELECT_KEY: &str =
    "SELECT image_id, body_sha256 FROM idempotency_keys WHERE scope = ?1 AND key = ?2";

/// Completes a reservation with the body's digest. `?1` scope, `?2` key, `?3` image id,
/// `?4` SHA-256 hex.
pub const COMPLETE_KEY: &str = "UPDATE idempotency_keys SET body_sha256 = ?4 \
     WHERE scope = ?1 AND key = ?2 AND image_id = ?3";

/// Drops a reservation whose request failed. `?1` scope, `?2` key, `?3` image id.
pub const RELEASE_KEY: &str =
    "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND image_id = ?3";

/// Deletes up to `?2` expired `Idempotency-Key` reservations (expired before `?1`), oldest
/// first: the reconciler's purge.
pub const PURGE_KEYS: &str = "DELETE FROM idempotency_keys WHERE rowid IN \
     (SELECT rowid FROM idempotency_keys WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)";

/// A row of `images`, as D1 returns it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ImageRow {
    pub id: String,
    pub status: String,
    pub r2_key: String,
    pub content_type: String,
    pub size: u64,
    pub uploaded_at: u64,
    pub attempts: u32,
    pub due_at: Option<u64>,
    pub lease_until: Option<u64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub tags: Option<String>,
    pub labels: Option<String>,
    pub model: Option<String>,
    pub min_score: Option<f64>,
    pub processed_at: Option<u64>,
    pub updated_at: u64,
    /// Where to send the image's webhooks (`migrations/0003_notifications.sql`).
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Done: JSON array of `{name, score}` (`migrations/0004_categories.sql`).
    #[serde(default)]
    pub categories: Option<String>,
    /// Done with this image's labels (`migrations/0006_content_hash.sql`).
    #[serde(default)]
    pub reused_from: Option<String>,
    /// Who uploaded it (`migrations/0005_api_keys.sql`): whose live updates it goes to.
    #[serde(default)]
    pub owner: String,
}

/// What `GET /images/{id}` shows of an image.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// Waiting to be tagged.
    Queued(QueuedView),
    /// Tagged, or failed for good.
    Finished(TagRecord),
}

impl ImageRow {
    /// The row's status; a value the schema does not allow reads as queued.
    pub fn status(&self) -> Status {
        match self.status.as_str() {
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => Status::Queued,
        }
    }

    /// The image's view for the API, or `None` if the row's id is malformed.
    pub fn view(&self) -> Option<View> {
        let image_id = ImageId::parse(&self.id).ok()?;
        let status = self.status();
        if status == Status::Queued {
            return Some(View::Queued(QueuedView {
                image_id,
                status,
                uploaded_at: Some(format_ms(self.uploaded_at)),
                attempts: Some(self.attempts),
                next_attempt_at: self.due_at.map(format_ms),
            }));
        }
        let tags: Vec<String> = parse_json(&self.tags);
        let labels: Vec<Label> = parse_json(&self.labels);
        let error = self.error_code.as_ref().map(|code| ErrorInfo {
            code: code.clone(),
            message: self.error_message.clone().unwrap_or_default(),
        });
        Some(View::Finished(TagRecord {
            image_id,
            status,
            tags,
            categories: parse_json(&self.categories),
            labels,
            model: self.model.clone().unwrap_or_default(),
            min_score: self.min_score.unwrap_or_default(),
            processed_at: format_ms(self.processed_at.unwrap_or(self.updated_at)),
            uploaded_at: format_ms(self.uploaded_at),
            content_type: self.content_type.clone(),
            size: self.size,
            error: if status == Status::Failed {
                error
            } else {
                None
            },
            attempts: Some(self.attempts),
            reused_from: self
                .reused_from
                .as_deref()
                .and_then(|id| ImageId::parse(id).ok())
                .map(Box::new),
            // A marker: the live delivery record is read from `notifications`.
            notification: self
                .callback_url
                .as_ref()
                .map(|_| Box::new(crate::wire::record::NotificationView::marker())),
        }))
    }
}

/// A JSON column's value; missing or malformed reads as empty.
fn parse_json<T: serde::de::DeserializeOwned + Default>(column: &Option<String>) -> T {
    column
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    //! The statements against the real schema, in SQLite.

    use super::*;
    use crate::storage::testing::db;
    use proptest::prelude::*;
    use rusqlite::{params, Connection, OptionalExtension};

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";

    fn insert(conn: &Connection, id: &str, now: u64) {
        conn.execute(
            INSERT_QUEUED,
            params![id, "images/x.png", "image/png", 10, now, "operator"],
        )
        .unwrap();
    }

    fn status(conn: &Connection, id: &str) -> Option<String> {
        conn.query_row("SELECT status FROM images WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
        .unwrap()
    }

    fn claim(conn: &Connection, id: &str, now: u64, lease_end: u64) -> bool {
        conn.query_row(CLAIM, params![id, now, lease_end], |_| Ok(()))
            .optional()
            .unwrap()
            .is_some()
    }

    fn done(conn: &Connection, id: &str, now: u64) -> usize {
        done_leased(conn, id, now, None)
    }

    /// `MARK_DONE` by a delivery holding the lease that ends at `lease` (or none).
    fn done_leased(conn: &Connection, id: &str, now: u64, lease: Option<u64>) -> usize {
        let changed = conn
            .execute(
                MARK_DONE,
                params![
                    id,
                    r#"["TABBY","Tiger Cat"]"#,
                    "[]",
                    "m",
                    0.8,
                    now,
                    lease,
                    r#"[{"name":"cat","score":0.9},{"name":"Tabby","score":0.85}]"#
                ],
            )
            .unwrap();
        conn.execute(INDEX_TAGS, [id]).unwrap();
        changed
    }

    fn failed(conn: &Connection, id: &str, now: u64) -> usize {
        failed_leased(conn, id, now, None)
    }

    fn failed_leased(conn: &Connection, id: &str, now: u64, lease: Option<u64>) -> usize {
        conn.execute(MARK_FAILED, params![id, "invalid_image", "x", now, lease])
            .unwrap()
    }

    #[test]
    fn a_lease_admits_one_delivery_at_a_time() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert!(claim(&conn, ID, 2000, 9000));
        assert!(!claim(&conn, ID, 3000, 10_000), "the lease is live");
        assert!(claim(&conn, ID, 9000, 16_000), "the lease ran out");
        assert_eq!(done_leased(&conn, ID, 10_000, Some(16_000)), 1);
        assert!(!claim(&conn, ID, 20_000, 30_000), "done is final");
        assert!(
            !claim(&conn, "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f", 2000, 3000),
            "unknown"
        );
    }

    #[test]
    fn done_is_never_overwritten() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert_eq!(done(&conn, ID, 2000), 1);
        assert_eq!(failed(&conn, ID, 3000), 0);
        assert_eq!(done(&conn, ID, 4000), 0, "a second done changes nothing");
        assert_eq!(status(&conn, ID).as_deref(), Some("done"));
        let tags: Vec<String> = conn
            .prepare("SELECT tag FROM image_tags WHERE image_id = ?1 ORDER BY tag")
            .unwrap()
            .query_map([ID], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            tags,
            ["cat", "tabby", "tiger cat"],
            "tags and categories, indexed once, in lower case"
        );
    }

    #[test]
    fn a_failed_image_can_be_redriven_to_done() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert_eq!(failed(&conn, ID, 2000), 1);
        assert!(claim(&conn, ID, 3000, 9000));
        assert_eq!(done_leased(&conn, ID, 4000, Some(9000)), 1);
        let row: ImageRow = row(&conn, ID);
        assert_eq!(row.error_code, None, "the old error is cleared");
        assert_eq!(row.attempts, 1);
    }

    #[test]
    fn defer_releases_only_its_own_lease() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert!(claim(&conn, ID, 2000, 9000));
        // Another delivery (no lease) cannot move the due time of a leased image.
        assert_eq!(
            conn.execute(DEFER, params![ID, 50_000, 3000, None::<u64>])
                .unwrap(),
            0
        );
        // Its holder can, and the lease is released.
        assert_eq!(
            conn.execute(DEFER, params![ID, 50_000, 3000, 9000])
                .unwrap(),
            1
        );
        let r = row(&conn, ID);
        assert_eq!((r.due_at, r.lease_until), (Some(50_000), None));
        let overdue: Vec<String> = conn
            .prepare(SELECT_OVERDUE)
            .unwrap()
            .query_map(params![60_000, 55_000, 10], |r| r.get("id"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(overdue, [ID]);
    }

    #[test]
    fn idempotency_keys_are_race_safe_and_expire() {
        let conn = db();
        let reserve = |image: &str, now: u64| -> Option<String> {
            conn.query_row(
                RESERVE_KEY,
                params!["anon", "k", image, now, now + 1000, now.saturating_sub(300)],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
        };
        assert_eq!(reserve("a", 100).as_deref(), Some("a"));
        assert_eq!(reserve("b", 200), None, "in flight");
        conn.execute(COMPLETE_KEY, params!["anon", "k", "a", "ff"])
            .unwrap();
        assert_eq!(reserve("b", 500), None, "completed and live");
        assert_eq!(
            reserve("c", 1200).as_deref(),
            Some("c"),
            "expired keys are taken over"
        );
        assert_eq!(
            reserve("d", 1600).as_deref(),
            Some("d"),
            "a stale pending key is taken over"
        );
        let other_scope: Option<String> = conn
            .query_row(
                RESERVE_KEY,
                params!["tok", "k", "e", 1700, 2700, 1400],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        assert_eq!(other_scope.as_deref(), Some("e"), "scopes do not collide");
    }

    fn row(conn: &Connection, id: &str) -> ImageRow {
        conn.query_row(SELECT_IMAGE, [id], |r| {
            Ok(ImageRow {
                id: r.get("id")?,
                status: r.get("status")?,
                r2_key: r.get("r2_key")?,
                content_type: r.get("content_type")?,
                size: r.get("size")?,
                uploaded_at: r.get("uploaded_at")?,
                attempts: r.get("attempts")?,
                due_at: r.get("due_at")?,
                lease_until: r.get("lease_until")?,
                error_code: r.get("error_code")?,
                error_message: r.get("error_message")?,
                tags: r.get("tags")?,
                labels: r.get("labels")?,
                model: r.get("model")?,
                min_score: r.get("min_score")?,
                processed_at: r.get("processed_at")?,
                updated_at: r.get("updated_at")?,
                callback_url: r.get("callback_url")?,
                categories: r.get("categories")?,
                reused_from: r.get("reused_from")?,
                owner: r.get("owner")?,
            })
        })
        .unwrap()
    }

    #[test]
    fn rows_become_views() {
        let conn = db();
        insert(&conn, ID, 1_764_417_600_000);
        conn.execute(MARK_SENT, params![ID, 1_764_417_600_000u64])
            .unwrap();
        let View::Queued(q) = row(&conn, ID).view().unwrap() else {
            panic!("queued")
        };
        assert_eq!(
            q.next_attempt_at.as_deref(),
            Some("2025-11-29T12:00:00.000Z")
        );
        done(&conn, ID, 1_764_417_601_000);
        let View::Finished(r) = row(&conn, ID).view().unwrap() else {
            panic!("finished")
        };
        assert_eq!(r.status, Status::Done);
        assert_eq!(r.tags, ["TABBY", "Tiger Cat"]);
        assert_eq!(r.categories[0].name, "cat");
        assert_eq!(r.categories[0].score, 0.9);
        assert_eq!(r.error, None);
    }

    #[test]
    fn final_transitions_wait_for_another_deliverys_lease() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert!(claim(&conn, ID, 2000, 9000), "delivery A tags it");
        // A dead letter (no lease) cannot fail it while A's lease is live...
        assert_eq!(failed(&conn, ID, 3000), 0);
        assert_eq!(status(&conn, ID).as_deref(), Some("queued"));
        // ...nor can a delivery whose own lease was another one.
        assert_eq!(done_leased(&conn, ID, 3000, Some(4000)), 0);
        // A finishes with its own lease.
        assert_eq!(done_leased(&conn, ID, 4000, Some(9000)), 1);
        assert_eq!(status(&conn, ID).as_deref(), Some("done"));

        // A's lease ran out and B took the image: A can no longer finish it, B can.
        let other = "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
        insert(&conn, other, 1000);
        assert!(claim(&conn, other, 2000, 9000));
        assert!(claim(&conn, other, 9500, 16_000));
        assert_eq!(failed_leased(&conn, other, 10_000, Some(9000)), 0);
        assert_eq!(done_leased(&conn, other, 10_000, Some(9000)), 0);
        assert_eq!(failed_leased(&conn, other, 10_000, Some(16_000)), 1);
        // Once no lease is live, a dead letter can fail it again (a redrive that crashed).
        assert!(claim(&conn, other, 17_000, 20_000));
        assert_eq!(failed(&conn, other, 21_000), 1, "the lease ran out");
    }

    #[test]
    fn an_image_is_due_only_once_its_message_was_sent() {
        let conn = db();
        insert(&conn, ID, 1000);
        let ids = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Vec<String> {
            conn.prepare(sql)
                .unwrap()
                .query_map(params, |r| r.get("id"))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        // Long after the stuck threshold, an upload still running is not overdue...
        assert!(ids(SELECT_OVERDUE, &[&1_000_000, &999_000, &10]).is_empty());
        // ...and only counts as abandoned past the give-up horizon.
        assert!(ids(SELECT_UNSENT, &[&1000, &10]).is_empty());
        assert_eq!(ids(SELECT_UNSENT, &[&1001, &10]), [ID]);
        // Once sent, it is due from the send.
        assert_eq!(conn.execute(MARK_SENT, params![ID, 5000]).unwrap(), 1);
        assert!(ids(SELECT_UNSENT, &[&1_000_000, &10]).is_empty());
        assert!(ids(SELECT_OVERDUE, &[&6000, &5000, &10]).is_empty());
        assert_eq!(ids(SELECT_OVERDUE, &[&6000, &5001, &10]), [ID]);
        // A tagger that claimed it before the send was recorded keeps its due time.
        let other = "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
        insert(&conn, other, 1000);
        assert!(claim(&conn, other, 2000, 9000));
        assert_eq!(conn.execute(MARK_SENT, params![other, 2500]).unwrap(), 0);
        assert_eq!(row(&conn, other).due_at, Some(9000));
    }

    #[test]
    fn a_pending_key_is_never_taken_over_while_its_image_exists() {
        let conn = db();
        let reserve = |image: &str, now: u64| -> Option<String> {
            conn.query_row(
                RESERVE_KEY,
                params![
                    "anon",
                    "k",
                    image,
                    now,
                    now + 100_000,
                    now.saturating_sub(300)
                ],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
        };
        assert_eq!(reserve(ID, 100).as_deref(), Some(ID));
        insert(&conn, ID, 150);
        // The first request is slow (its body still streams): its key stays pending.
        assert_eq!(
            reserve("b", 10_000),
            None,
            "its image exists: no second image"
        );
        // Its upload failed and removed its row: the key may be taken over.
        conn.execute(DELETE_UNFINISHED, [ID]).unwrap();
        assert_eq!(reserve("c", 10_000).as_deref(), Some("c"));
    }

    #[test]
    fn the_purge_removes_expired_keys_only_in_bounded_batches() {
        let conn = db();
        for (key, expires) in [("a", 100), ("b", 200), ("c", 300), ("live", 10_000)] {
            conn.execute(
                "INSERT INTO idempotency_keys (scope, key, image_id, body_sha256, created_at, expires_at) \
                 VALUES ('anon', ?1, 'x', 'ff', 0, ?2)",
                params![key, expires],
            )
            .unwrap();
        }
        let keys = || -> Vec<String> {
            conn.prepare("SELECT key FROM idempotency_keys ORDER BY key")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(conn.execute(PURGE_KEYS, params![5000, 2]).unwrap(), 2);
        assert_eq!(keys(), ["c", "live"], "oldest first, at most the limit");
        assert_eq!(conn.execute(PURGE_KEYS, params![5000, 2]).unwrap(), 1);
        assert_eq!(keys(), ["live"]);
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Claim,
        Done,
        Fail,
        Defer,
    }

    proptest! {
        /// Whatever deliveries do, in whatever order: once done, an image stays done with
        /// its first result, and it is never done twice.
        #[test]
        fn transitions_are_only_the_allowed_ones(ops in proptest::collection::vec(
            (prop_oneof![Just(Op::Claim), Just(Op::Done), Just(Op::Fail), Just(Op::Defer)], 0u64..50), 1..30)
        ) {
            let conn = db();
            insert(&conn, ID, 0);
            let mut now = 1;
            let mut done_count = 0;
            let mut was_done = false;
            let mut lease = None;
            for (op, step) in ops {
                now += step;
                let before = status(&conn, ID);
                match op {
                    Op::Claim => { if claim(&conn, ID, now, now + 20) { lease = Some(now + 20); } }
                    Op::Done => done_count += done_leased(&conn, ID, now, lease),
                    Op::Fail => { failed(&conn, ID, now); }
                    Op::Defer => { conn.execute(DEFER, params![ID, now + 5, now, None::<u64>]).unwrap(); }
                }
                let after = status(&conn, ID);
                if was_done {
                    prop_assert_eq!(after.as_deref(), Some("done"));
                }
                was_done = after.as_deref() == Some("done");
                prop_assert!(!(before.as_deref() == Some("done") && after.as_deref() != Some("done")));
            }
            prop_assert!(done_count <= 1);
        }
    }

    #[test]
    fn sent_records_the_size_and_the_due_time_and_finds_a_deleted_image() {
        let conn = db();
        insert(&conn, ID, 1000);
        assert_eq!(conn.execute(SENT, params![ID, 4321, 5000]).unwrap(), 1);
        let sent = row(&conn, ID);
        assert_eq!((sent.size, sent.due_at), (4321, Some(5000)));
        // A tagger that claimed it before the send was recorded keeps its due time, and the
        // row still counts as there.
        let other = "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
        insert(&conn, other, 1000);
        assert!(claim(&conn, other, 2000, 9000));
        assert_eq!(conn.execute(SENT, params![other, 10, 2500]).unwrap(), 1);
        assert_eq!(row(&conn, other).due_at, Some(9000));
        // A done image keeps `due_at` NULL.
        done_leased(&conn, other, 3000, Some(9000));
        assert_eq!(conn.execute(SENT, params![other, 10, 3500]).unwrap(), 1);
        assert_eq!(row(&conn, other).due_at, None);
        // Deleted during its upload: no row changes.
        conn.execute(DELETE_UNFINISHED, params![ID]).unwrap();
        assert_eq!(conn.execute(SENT, params![ID, 4321, 6000]).unwrap(), 0);
    }
}
