//! Live updates from D1 (`GET /events`, [`crate::api::live`]): the events a committed
//! transition raises, rebuilt from the image's row, and the replay of a reconnect.
//!
//! D1 holds each image's current state, not a log of events, so a replay rebuilds what the
//! rows can still say: an image's `image.queued` (at `uploaded_at`) and its terminal event
//! (at `processed_at`). A deleted image has no row: its `image.deleted` cannot be replayed
//! (a replay that may have missed one says `complete: false` only when its anchor is gone;
//! clients that must know reload their list after a reconnect).

use crate::api::live::{LiveEvent, LiveKind};
use crate::storage::images::{ImageRow, View};
use crate::webhook::Event;
use crate::wire::record::ErrorInfo;
use crate::{ImageId, Status};

/// The anchor of a replay: the image the last event was about, if `?2` owns it. `?1` id.
pub const SELECT_ANCHOR: &str = "SELECT * FROM images WHERE id = ?1 AND owner = ?2";

/// `?1`'s images changed at `?2` or later, oldest change first, at most `?3` (index
/// `images_by_owner_updated`).
pub const SELECT_CHANGED: &str = "SELECT * FROM images \
     WHERE owner = ?1 AND updated_at >= ?2 ORDER BY updated_at LIMIT ?3";

/// When the event `kind` of this image happened, or a time before it (a replay from an
/// earlier time only repeats events, which clients deduplicate).
pub fn anchor_ms(row: &ImageRow, kind: LiveKind) -> Option<u64> {
    let terminal_kind = match row.status() {
        Status::Done => Some(LiveKind::Tagged),
        Status::Failed => Some(LiveKind::Failed),
        Status::Queued => None,
    };
    match kind {
        LiveKind::Deleted => None,
        k if Some(k) == terminal_kind => row.processed_at.or(Some(row.uploaded_at)),
        _ => Some(row.uploaded_at),
    }
}

/// The terminal event (`image.tagged` or `image.failed`) of a done or failed row, with
/// the webhook's body: the one a transition just committed.
pub fn terminal_event(row: &ImageRow) -> Option<LiveEvent> {
    let Some(View::Finished(record)) = row.view() else {
        return None;
    };
    let at = row.processed_at.unwrap_or(row.updated_at);
    let event = match record.status {
        Status::Done => Event::tagged(
            record.image_id,
            record.tags,
            record.categories,
            record.labels,
            at,
        ),
        Status::Failed => Event::failed(
            record.image_id,
            record.error.unwrap_or(ErrorInfo {
                code: String::new(),
                message: String::new(),
            }),
            at,
        ),
        Status::Queued => return None,
    };
    Some(LiveEvent::from_webhook(event))
}

/// The events a row can still tell, with their times: `image.queued` once its upload
/// completed (its message sent or claimed), and its terminal event if it has one.
pub fn events_of(row: &ImageRow) -> Vec<(u64, LiveEvent)> {
    let Ok(id) = ImageId::parse(&row.id) else {
        return Vec::new();
    };
    let mut events = Vec::with_capacity(2);
    // A queued row without a due time is an upload still running (it may yet be undone).
    if row.status() != Status::Queued || row.due_at.is_some() {
        events.push((row.uploaded_at, LiveEvent::queued(id, row.uploaded_at)));
    }
    if let Some(event) = terminal_event(row) {
        events.push((row.processed_at.unwrap_or(row.updated_at), event));
    }
    events
}

/// The replay of a reconnect: every event of `rows` at `since_ms` or later, oldest first
/// (an image's `image.queued` before its terminal event), except `skip` (the client's last
/// event, which it has).
pub fn replay(rows: &[ImageRow], since_ms: u64, skip: Option<&str>) -> Vec<LiveEvent> {
    let mut events: Vec<(u64, u8, LiveEvent)> = rows
        .iter()
        .flat_map(events_of)
        .filter(|(at, e)| *at >= since_ms && Some(e.id.as_str()) != skip)
        .map(|(at, e)| {
            let order = u8::from(e.event_type != LiveKind::Queued.as_str());
            (at, order, e)
        })
        .collect();
    events.sort_by_key(|e| (e.0, e.1));
    events.into_iter().map(|(_, _, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::live::{event_id, replay_since, REPLAY_MAX_IMAGES};
    use crate::storage::images::{CLAIM, INSERT_QUEUED, MARK_DONE, MARK_FAILED, MARK_SENT};
    use crate::storage::testing::{db, plan_details};
    use rusqlite::{params, Connection};

    const A: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    const B: &str = "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    const C: &str = "5f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    const OWNER: &str = "key_0123456789abcdef0123";

    fn upload(conn: &Connection, id: &str, owner: &str, at: u64) {
        conn.execute(
            INSERT_QUEUED,
            params![id, "images/x.png", "image/png", 10, at, owner],
        )
        .unwrap();
        conn.execute(MARK_SENT, params![id, at]).unwrap();
    }

    fn done(conn: &Connection, id: &str, at: u64) {
        let changed = conn
            .execute(
                MARK_DONE,
                params![
                    id,
                    r#"["TABBY"]"#,
                    r#"[{"label":"TABBY","score":0.9}]"#,
                    "m",
                    0.8,
                    at,
                    None::<u64>,
                    r#"[{"name":"cat","score":0.9}]"#
                ],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }

    fn rows(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Vec<ImageRow> {
        let mut st = conn.prepare(sql).unwrap();
        let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        st.query_map(p, |r| {
            let mut map = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v: rusqlite::types::Value = r.get(i)?;
                let json = match v {
                    rusqlite::types::Value::Null => serde_json::Value::Null,
                    rusqlite::types::Value::Integer(n) => n.into(),
                    rusqlite::types::Value::Real(f) => f.into(),
                    rusqlite::types::Value::Text(t) => t.into(),
                    rusqlite::types::Value::Blob(_) => serde_json::Value::Null,
                };
                map.insert(name.clone(), json);
            }
            Ok(serde_json::from_value::<ImageRow>(map.into()).unwrap())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn changed(conn: &Connection, owner: &str, since: u64) -> Vec<ImageRow> {
        rows(
            conn,
            SELECT_CHANGED,
            &[&owner, &since, &i64::from(REPLAY_MAX_IMAGES)],
        )
    }

    fn ids(events: &[LiveEvent]) -> Vec<String> {
        events.iter().map(|e| e.id.clone()).collect()
    }

    fn id(s: &str) -> ImageId {
        ImageId::parse(s).unwrap()
    }

    #[test]
    fn a_committed_transition_gives_the_webhooks_event() {
        let conn = db();
        upload(&conn, A, OWNER, 1000);
        let row = &rows(&conn, SELECT_ANCHOR, &[&A, &OWNER])[0];
        assert_eq!(row.owner, OWNER);
        assert_eq!(terminal_event(row), None, "queued: no terminal event");
        done(&conn, A, 2000);
        let row = &rows(&conn, SELECT_ANCHOR, &[&A, &OWNER])[0];
        let event = terminal_event(row).unwrap();
        assert_eq!(event.id, event_id(&id(A), LiveKind::Tagged));
        assert_eq!(event.event_type, "image.tagged");
        assert_eq!(event.data.status, "done");
        assert_eq!(event.data.tags, vec!["TABBY".to_string()]);
        assert_eq!(event.data.categories.as_ref().unwrap()[0].name, "cat");
        assert_eq!(event.timestamp, "1970-01-01T00:00:02.000Z");
        // Another owner does not find it.
        assert!(rows(&conn, SELECT_ANCHOR, &[&A, &"anonymous"]).is_empty());
    }

    #[test]
    fn failures_carry_their_code() {
        let conn = db();
        upload(&conn, A, OWNER, 1000);
        conn.execute(
            MARK_FAILED,
            params![A, "invalid_image", "not an image", 3000, None::<u64>],
        )
        .unwrap();
        let row = &rows(&conn, SELECT_ANCHOR, &[&A, &OWNER])[0];
        let event = terminal_event(row).unwrap();
        assert_eq!(event.event_type, "image.failed");
        assert_eq!(event.data.error.as_ref().unwrap().code, "invalid_image");
        assert_eq!(anchor_ms(row, LiveKind::Failed), Some(3000));
        assert_eq!(anchor_ms(row, LiveKind::Queued), Some(1000));
        assert_eq!(
            anchor_ms(row, LiveKind::Tagged),
            Some(1000),
            "earlier: safe"
        );
        assert_eq!(anchor_ms(row, LiveKind::Deleted), None);
    }

    #[test]
    fn a_reconnect_gets_what_it_missed_in_order() {
        let conn = db();
        upload(&conn, A, OWNER, 1000);
        upload(&conn, B, OWNER, 1500);
        done(&conn, A, 2000);
        upload(&conn, C, "anonymous", 1600);
        done(&conn, C, 2100);
        // An upload still running (no due time yet) is not announced.
        conn.execute(
            INSERT_QUEUED,
            params![
                "6f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f",
                "k",
                "image/png",
                1,
                1700,
                OWNER
            ],
        )
        .unwrap();
        // The client saw A queued: it gets B queued and A done, not another owner's C.
        let anchor = event_id(&id(A), LiveKind::Queued);
        let row = &rows(&conn, SELECT_ANCHOR, &[&A, &OWNER])[0];
        let (since, complete) = replay_since(anchor_ms(row, LiveKind::Queued), 5000);
        assert_eq!((since, complete), (1000, true));
        let events = replay(&changed(&conn, OWNER, since), since, Some(&anchor));
        assert_eq!(
            ids(&events),
            vec![
                event_id(&id(B), LiveKind::Queued),
                event_id(&id(A), LiveKind::Tagged)
            ]
        );
        // From A's done: nothing newer.
        let anchor = event_id(&id(A), LiveKind::Tagged);
        let since = anchor_ms(row, LiveKind::Tagged).unwrap();
        assert!(replay(&changed(&conn, OWNER, since), since, Some(&anchor)).is_empty());
        // A claim moves updated_at but raises nothing.
        let claimed = rows(&conn, CLAIM, &[&B, &9000, &99_000]);
        assert_eq!(claimed.len(), 1);
        assert!(replay(&changed(&conn, OWNER, since), since, Some(&anchor)).is_empty());
    }

    #[test]
    fn the_replay_read_uses_its_index() {
        let conn = db();
        let plan = plan_details(
            &conn,
            SELECT_CHANGED,
            &[OWNER.to_string().into(), 0i64.into(), 10i64.into()],
        );
        assert!(
            plan.iter().any(|d| d.contains("images_by_owner_updated")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");
    }
}
