//! The webhook outbox in D1 (`migrations/0003_notifications.sql`): every statement the
//! workers run on `notifications`, and its rows. The native tests run them against the
//! real schema in SQLite, as [`crate::storage::images`]'s do.
//!
//! - [`INSERT_EVENT`] runs in the same batch as the image's transition (`MARK_DONE`,
//!   `MARK_FAILED`), so the event exists if and only if the transition does. It inserts
//!   nothing for an image without a callback, nothing if the transition did not happen
//!   (the image is not in the event's status), and nothing twice (the id is derived from
//!   the image and the event, and is the primary key).
//! - A delivery [`CLAIM_EVENT`]s the row (a lease, and only once it is due), attempts it,
//!   and records the result: [`DELIVERED`], [`RETRY_LATER`] or [`GAVE_UP`].
//! - The reconciler finds deliveries whose message was lost ([`SELECT_OVERDUE_EVENTS`]) and
//!   enqueues them again ([`REQUEUED_EVENT`]).

use serde::Deserialize;

use crate::wire::record::{DeliveryState, NotificationView};
use crate::wire::time::format_ms;

/// Sets the callback URL of an image just inserted (in the same batch as
/// [`crate::storage::images::INSERT_QUEUED`]). `?1` id, `?2` the checked URL.
pub const SET_CALLBACK: &str = "UPDATE images SET callback_url = ?2 WHERE id = ?1";

/// Records an event for an image that has a callback and is in `?6` (`done` or `failed`).
/// `?1` event id, `?2` image id, `?3` type, `?4` payload, `?5` now, `?6` status.
pub const INSERT_EVENT: &str = "INSERT OR IGNORE INTO notifications \
     (event_id, image_id, type, url, payload, state, created_at, due_at, updated_at) \
     SELECT ?1, id, ?3, callback_url, ?4, 'pending', ?5, ?5, ?5 FROM images \
     WHERE id = ?2 AND status = ?6 AND callback_url IS NOT NULL";

/// An event's row. `?1` event id.
pub const SELECT_EVENT: &str = "SELECT * FROM notifications WHERE event_id = ?1";

/// An image's latest event. `?1` image id.
pub const SELECT_LATEST: &str = "SELECT * FROM notifications WHERE image_id = ?1 \
     ORDER BY created_at DESC, type DESC LIMIT 1";

/// How early a message may arrive before the attempt it is for and still make it, in ms
/// (queue delays are whole seconds).
pub const EARLY_MS: u64 = 1000;

/// Takes an event for one attempt: it must be pending, due (within [`EARLY_MS`]) and not
/// leased. Counts the attempt. `?1` event id, `?2` now, `?3` lease end. Returns the row.
pub const CLAIM_EVENT: &str = "UPDATE notifications \
     SET lease_until = ?3, attempts = attempts + 1, last_attempt_at = ?2, updated_at = ?2 \
     WHERE event_id = ?1 AND state = 'pending' \
       AND (lease_until IS NULL OR lease_until <= ?2) \
       AND (due_at IS NULL OR due_at <= ?2 + 1000) \
     RETURNING *";

/// Records a delivery. `?1` event id, `?2` now, `?3` HTTP status.
pub const DELIVERED: &str = "UPDATE notifications \
     SET state = 'delivered', delivered_at = ?2, last_status = ?3, last_error = NULL, \
         due_at = NULL, lease_until = NULL, updated_at = ?2 \
     WHERE event_id = ?1 AND state = 'pending'";

/// Records a failed attempt and when the next is due, releasing the caller's lease (but
/// never another delivery's). `?1` event id, `?2` now, `?3` HTTP status or NULL, `?4` error,
/// `?5` next attempt, `?6` the caller's lease end.
pub const RETRY_LATER: &str = "UPDATE notifications \
     SET due_at = ?5, last_status = ?3, last_error = ?4, updated_at = ?2, \
         lease_until = CASE WHEN lease_until = ?6 THEN NULL ELSE lease_until END \
     WHERE event_id = ?1 AND state = 'pending'";

/// Records that a delivery gave up. `?1` event id, `?2` now, `?3` HTTP status or NULL,
/// `?4` error.
pub const GAVE_UP: &str = "UPDATE notifications \
     SET state = 'failed', last_status = ?3, last_error = ?4, due_at = NULL, \
         lease_until = NULL, updated_at = ?2 \
     WHERE event_id = ?1 AND state = 'pending'";

/// Pending deliveries overdue since before `?2` and not leased at `?1`; `?3` limit.
pub const SELECT_OVERDUE_EVENTS: &str = "SELECT * FROM notifications \
     WHERE state = 'pending' AND due_at < ?2 AND (lease_until IS NULL OR lease_until <= ?1) \
     ORDER BY due_at LIMIT ?3";

/// Notes that an overdue delivery was enqueued again: it is due now. `?1` event id, `?2` now.
pub const REQUEUED_EVENT: &str = "UPDATE notifications SET due_at = ?2, updated_at = ?2 \
     WHERE event_id = ?1 AND state = 'pending'";

/// A row of `notifications`, as D1 returns it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct NotificationRow {
    pub event_id: String,
    pub image_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub url: String,
    pub payload: String,
    pub state: String,
    pub created_at: u64,
    pub due_at: Option<u64>,
    pub lease_until: Option<u64>,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<u64>,
    pub delivered_at: Option<u64>,
    pub updated_at: u64,
}

impl NotificationRow {
    pub fn state(&self) -> DeliveryState {
        DeliveryState::parse(&self.state)
    }

    /// The delivery record for `GET /images/{id}`.
    pub fn view(&self) -> NotificationView {
        let state = self.state();
        NotificationView {
            event_id: Some(self.event_id.clone()),
            event_type: Some(self.event_type.clone()),
            state,
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error.clone(),
            last_attempt_at: self.last_attempt_at.map(format_ms),
            next_attempt_at: self
                .due_at
                .filter(|_| state == DeliveryState::Pending)
                .map(format_ms),
            delivered_at: self.delivered_at.map(format_ms),
        }
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    //! The statements against the real schema (every migration), in SQLite.

    use super::*;
    use crate::storage::images::{INSERT_QUEUED, MARK_DONE, MARK_FAILED};
    use crate::storage::testing::db;
    use crate::webhook::{event_id, EventType};
    use crate::ImageId;
    use rusqlite::{params, Connection, OptionalExtension};

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    const URL: &str = "https://hooks.example.com/in";

    fn insert(conn: &Connection, id: &str, callback: Option<&str>) {
        conn.execute(
            INSERT_QUEUED,
            params![id, "images/x.png", "image/png", 10, 1000, "operator"],
        )
        .unwrap();
        if let Some(url) = callback {
            assert_eq!(conn.execute(SET_CALLBACK, params![id, url]).unwrap(), 1);
        }
    }

    fn tagged_id() -> String {
        event_id(&ImageId::parse(ID).unwrap(), EventType::Tagged)
    }

    fn failed_id() -> String {
        event_id(&ImageId::parse(ID).unwrap(), EventType::Failed)
    }

    /// `MARK_DONE` and `INSERT_EVENT` in one transaction, as the tagger's D1 batch runs them.
    fn done(conn: &mut Connection, now: u64) -> usize {
        let tx = conn.transaction().unwrap();
        let changed = tx
            .execute(
                MARK_DONE,
                params![ID, "[]", "[]", "m", 0.8, now, None::<u64>, "[]"],
            )
            .unwrap();
        tx.execute(
            INSERT_EVENT,
            params![tagged_id(), ID, "image.tagged", "{}", now, "done"],
        )
        .unwrap();
        tx.commit().unwrap();
        changed
    }

    fn failed(conn: &mut Connection, now: u64, payload: &str) -> usize {
        let tx = conn.transaction().unwrap();
        let changed = tx
            .execute(
                MARK_FAILED,
                params![ID, "invalid_image", "x", now, None::<u64>],
            )
            .unwrap();
        tx.execute(
            INSERT_EVENT,
            params![failed_id(), ID, "image.failed", payload, now, "failed"],
        )
        .unwrap();
        tx.commit().unwrap();
        changed
    }

    fn row(conn: &Connection, event: &str) -> Option<NotificationRow> {
        conn.query_row(SELECT_EVENT, [event], read_row)
            .optional()
            .unwrap()
    }

    fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRow> {
        Ok(NotificationRow {
            event_id: r.get("event_id")?,
            image_id: r.get("image_id")?,
            event_type: r.get("type")?,
            url: r.get("url")?,
            payload: r.get("payload")?,
            state: r.get("state")?,
            created_at: r.get("created_at")?,
            due_at: r.get("due_at")?,
            lease_until: r.get("lease_until")?,
            attempts: r.get("attempts")?,
            last_status: r.get("last_status")?,
            last_error: r.get("last_error")?,
            last_attempt_at: r.get("last_attempt_at")?,
            delivered_at: r.get("delivered_at")?,
            updated_at: r.get("updated_at")?,
        })
    }

    fn count(conn: &Connection) -> u32 {
        conn.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0))
            .unwrap()
    }

    fn claim(conn: &Connection, event: &str, now: u64) -> Option<NotificationRow> {
        conn.query_row(CLAIM_EVENT, params![event, now, now + 60_000], read_row)
            .optional()
            .unwrap()
    }

    #[test]
    fn the_transition_records_its_event_once() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        assert_eq!(done(&mut conn, 2000), 1);
        let event = row(&conn, &tagged_id()).unwrap();
        assert_eq!(event.url, URL, "the callback is copied");
        assert_eq!(event.state(), DeliveryState::Pending);
        assert_eq!((event.created_at, event.due_at), (2000, Some(2000)));
        assert_eq!(done(&mut conn, 3000), 0, "a second done changes nothing");
        assert_eq!(failed(&mut conn, 4000, "{}"), 0);
        assert_eq!(count(&conn), 1, "and records no event");
        assert_eq!(row(&conn, &tagged_id()).unwrap().created_at, 2000);
    }

    #[test]
    fn no_callback_no_event() {
        let mut conn = db();
        insert(&conn, ID, None);
        assert_eq!(done(&mut conn, 2000), 1);
        assert_eq!(count(&conn), 0);
    }

    #[test]
    fn a_failure_is_one_event_and_a_redrive_to_done_another() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        assert_eq!(failed(&mut conn, 2000, "first"), 1);
        assert_eq!(
            failed(&mut conn, 3000, "second"),
            1,
            "failed → failed happens"
        );
        assert_eq!(count(&conn), 1, "but raises nothing new");
        assert_eq!(row(&conn, &failed_id()).unwrap().payload, "first");
        assert_eq!(done(&mut conn, 4000), 1);
        assert_eq!(count(&conn), 2);
        let latest = conn
            .query_row(SELECT_LATEST, [ID], read_row)
            .optional()
            .unwrap()
            .unwrap();
        assert_eq!(latest.event_type, "image.tagged");
    }

    #[test]
    fn a_claim_is_one_attempt_at_a_time_and_only_when_due() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        done(&mut conn, 2000);
        let id = tagged_id();
        let claimed = claim(&conn, &id, 2000).unwrap();
        assert_eq!(claimed.attempts, 1);
        assert!(claim(&conn, &id, 3000).is_none(), "leased");
        // The attempt failed: next one due at 30 s, lease released.
        conn.execute(
            RETRY_LATER,
            params![id, 4000, 503, "HTTP 503", 32_000, claimed.lease_until],
        )
        .unwrap();
        let r = row(&conn, &id).unwrap();
        assert_eq!((r.lease_until, r.due_at), (None, Some(32_000)));
        assert_eq!(
            r.view().next_attempt_at.as_deref(),
            Some("1970-01-01T00:00:32.000Z")
        );
        assert!(claim(&conn, &id, 5000).is_none(), "not due yet");
        assert!(
            claim(&conn, &id, 31_000).is_some(),
            "due, give or take a second"
        );
        conn.execute(DELIVERED, params![id, 32_000, 204]).unwrap();
        let r = row(&conn, &id).unwrap();
        assert_eq!(r.state(), DeliveryState::Delivered);
        assert_eq!(
            (r.attempts, r.last_status, r.last_error.as_deref()),
            (2, Some(204), None)
        );
        assert_eq!(
            r.view().delivered_at.as_deref(),
            Some("1970-01-01T00:00:32.000Z")
        );
        assert_eq!(r.view().next_attempt_at, None);
        assert!(claim(&conn, &id, 100_000).is_none(), "delivered is final");
        assert_eq!(
            conn.execute(GAVE_UP, params![id, 100_000, 500, "x"])
                .unwrap(),
            0
        );
    }

    #[test]
    fn retry_later_never_releases_another_deliverys_lease() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        done(&mut conn, 2000);
        let id = tagged_id();
        let lease = claim(&conn, &id, 2000).unwrap().lease_until;
        conn.execute(RETRY_LATER, params![id, 3000, None::<u16>, "x", 9000, 1])
            .unwrap();
        assert_eq!(row(&conn, &id).unwrap().lease_until, lease);
    }

    #[test]
    fn giving_up_is_final() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        done(&mut conn, 2000);
        let id = tagged_id();
        claim(&conn, &id, 2000).unwrap();
        conn.execute(GAVE_UP, params![id, 3000, 410, "HTTP 410: gone"])
            .unwrap();
        let r = row(&conn, &id).unwrap();
        assert_eq!(r.state(), DeliveryState::Failed);
        assert_eq!((r.due_at, r.lease_until), (None, None));
        assert!(claim(&conn, &id, 1_000_000).is_none());
        let status: String = conn
            .query_row("SELECT status FROM images WHERE id = ?1", [ID], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "done", "the image is unaffected");
    }

    #[test]
    fn overdue_deliveries_are_found_and_requeued() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        done(&mut conn, 2000);
        let id = tagged_id();
        let overdue = |now: u64, cutoff: u64| -> Vec<String> {
            conn.prepare(SELECT_OVERDUE_EVENTS)
                .unwrap()
                .query_map(params![now, cutoff, 10], |r| r.get("event_id"))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert!(overdue(2500, 1000).is_empty(), "not overdue yet");
        assert_eq!(overdue(900_000, 600_000), std::slice::from_ref(&id));
        claim(&conn, &id, 900_000).unwrap();
        assert!(overdue(900_001, 600_000).is_empty(), "leased");
        assert_eq!(
            overdue(960_000, 600_000),
            std::slice::from_ref(&id),
            "the lease ran out"
        );
        conn.execute(REQUEUED_EVENT, params![id, 960_000]).unwrap();
        assert!(overdue(961_000, 600_000).is_empty());
        assert!(claim(&conn, &id, 961_000).is_some(), "due at once");
    }

    #[test]
    fn deleting_an_image_deletes_its_events() {
        let mut conn = db();
        insert(&conn, ID, Some(URL));
        done(&mut conn, 2000);
        conn.execute("DELETE FROM images WHERE id = ?1", [ID])
            .unwrap();
        assert_eq!(count(&conn), 0);
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("abc", 10), "abc");
    }
}
