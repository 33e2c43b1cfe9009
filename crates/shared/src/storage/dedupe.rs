//! No paying twice (issue 23): the tagger records each image's content hash (SHA-256 of its
//! stored bytes) and looks for another image of the SAME owner with those bytes. A `done`
//! one lends its labels (no AI call); a queued one whose delivery recorded the hash under
//! its live lease (it is past its own look-up, about to call the model or calling it) is
//! waited for. Every look-up is scoped by the image's own owner, so different clients never
//! share results nor learn of each other's uploads.
//!
//! The hash is recorded and looked up in one D1 batch (one transaction), so of two
//! deliveries of the same bytes at once, the first sees nothing and calls the model, and
//! the second sees the first and waits: never both calls, never both waiting.
//!
//! The look-ups read only the covering index `images_by_content`
//! (`migrations/0006_content_hash.sql`).

use serde::Deserialize;

/// Records an image's content hash, under the lease its delivery holds. `?1` id, `?2` hash
/// (lower-case hex).
pub const SET_CONTENT_HASH: &str =
    "UPDATE images SET content_hash = ?2, hash_lease = lease_until WHERE id = ?1";

/// A done image of the same owner as `?1` with content hash `?2`, other than `?1`.
pub const DONE_TWIN: &str = "SELECT id, lease_until FROM images \
     WHERE owner = (SELECT owner FROM images WHERE id = ?1) \
       AND content_hash = ?2 AND status = 'done' AND id != ?1 \
     LIMIT 1";

/// A queued image of the same owner as `?1` with content hash `?2`, other than `?1`, whose
/// delivery recorded the hash under its lease, live at `?3`: the one to wait for (until its
/// lease ends, the latest if several).
pub const IN_FLIGHT_TWIN: &str = "SELECT id, lease_until FROM images \
     WHERE owner = (SELECT owner FROM images WHERE id = ?1) \
       AND content_hash = ?2 AND status = 'queued' \
       AND lease_until > ?3 AND hash_lease = lease_until AND id != ?1 \
     ORDER BY lease_until DESC LIMIT 1";

/// Notes, in the batch right after `MARK_DONE`, that the image it just finished was done
/// with the labels of `?2`. `?1` id, `?3` the `now` of that `MARK_DONE` (so that it marks
/// only the transition it follows).
pub const MARK_REUSED: &str = "UPDATE images SET reused_from = ?2 \
     WHERE id = ?1 AND status = 'done' AND reused_from IS NULL AND processed_at = ?3";

/// AI calls saved: images done with another image's labels.
pub const COUNT_REUSED: &str = "SELECT count(*) AS saved FROM images WHERE reused_from IS NOT NULL";

/// A twin found by [`DONE_TWIN`] or [`IN_FLIGHT_TWIN`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TwinRow {
    pub id: String,
    pub lease_until: Option<u64>,
}

/// The answer of [`COUNT_REUSED`].
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct SavedRow {
    pub saved: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::images::{CLAIM, INSERT_QUEUED, MARK_DONE};

    use crate::storage::testing::db;
    use rusqlite::{params, Connection, OptionalExtension};

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const C: &str = "00000000-0000-4000-8000-00000000000c";

    fn insert(conn: &Connection, id: &str, owner: &str, hash: &str) {
        conn.execute(
            INSERT_QUEUED,
            params![id, "images/x.png", "image/png", 10, 1, owner],
        )
        .unwrap();
        conn.execute(SET_CONTENT_HASH, params![id, hash]).unwrap();
    }

    fn twin(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> Option<TwinRow> {
        conn.query_row(sql, p, |r| {
            Ok(TwinRow {
                id: r.get(0)?,
                lease_until: r.get(1)?,
            })
        })
        .optional()
        .unwrap()
    }

    fn done(conn: &Connection, id: &str, reused_from: Option<&str>) {
        let n = conn
            .execute(
                MARK_DONE,
                params![id, "[]", "[]", "m", 0.8, 50, None::<u64>, "[]"],
            )
            .unwrap();
        assert_eq!(n, 1);
        if let Some(from) = reused_from {
            let n = conn.execute(MARK_REUSED, params![id, from, 50]).unwrap();
            assert_eq!(n, 1);
        }
    }

    #[test]
    fn a_done_twin_is_found_only_for_the_same_owner_and_bytes() {
        let conn = db();
        insert(&conn, A, "key_1", "h");
        insert(&conn, B, "key_1", "h");
        insert(&conn, C, "key_2", "h");
        assert_eq!(twin(&conn, DONE_TWIN, &[&B, &"h"]), None, "A is not done");
        done(&conn, A, None);
        let found = twin(&conn, DONE_TWIN, &[&B, &"h"]).map(|t| t.id);
        assert_eq!(found.as_deref(), Some(A));
        assert_eq!(twin(&conn, DONE_TWIN, &[&B, &"other"]), None, "other bytes");
        assert_eq!(twin(&conn, DONE_TWIN, &[&C, &"h"]), None, "another owner");
        assert_eq!(twin(&conn, DONE_TWIN, &[&A, &"h"]), None, "never itself");
    }

    #[test]
    fn only_a_twin_hashed_under_its_live_lease_is_waited_for() {
        let conn = db();
        let claim = |id: &str, now: u64, until: u64| {
            conn.query_row(CLAIM, params![id, now, until], |_| Ok(()))
                .unwrap()
        };
        let hash = |id: &str| conn.execute(SET_CONTENT_HASH, params![id, "h"]).unwrap();
        let in_flight = |id: &str, now: u64| {
            twin(&conn, IN_FLIGHT_TWIN, &[&id, &"h", &now]).map(|t| (t.id, t.lease_until))
        };
        insert(&conn, A, "key_1", "h");
        insert(&conn, B, "key_1", "h");
        insert(&conn, C, "key_2", "h");
        // Hashed before any lease (as `insert` does): nobody is in flight.
        claim(A, 100, 1100);
        claim(B, 100, 1100);
        assert_eq!(
            in_flight(B, 200),
            None,
            "A has not looked yet under its lease"
        );
        // A looks first: it sees nothing and calls; B, looking after it, waits for A.
        hash(A);
        assert_eq!(in_flight(A, 200), None);
        hash(B);
        assert_eq!(in_flight(B, 200), Some((A.into(), Some(1100))));
        // Another owner's delivery never waits for A.
        claim(C, 100, 1100);
        hash(C);
        assert_eq!(in_flight(C, 200), None);
        // Once A's lease ran out (at 1100), B does not wait for it.
        assert_eq!(in_flight(B, 1100), None);
        // A lease taken again (a later delivery of A) is not in flight until A looks again.
        claim(A, 1100, 2100);
        assert_eq!(in_flight(B, 1200), None);
        hash(A);
        assert_eq!(in_flight(B, 1200), Some((A.into(), Some(2100))));
    }

    #[test]
    fn reuses_are_counted() {
        let conn = db();
        insert(&conn, A, "key_1", "h");
        insert(&conn, B, "key_1", "h");
        let saved = || {
            conn.query_row(COUNT_REUSED, [], |r| r.get::<_, u64>(0))
                .unwrap()
        };
        done(&conn, A, None);
        assert_eq!(saved(), 0);
        done(&conn, B, Some(A));
        assert_eq!(saved(), 1);
        let from: Option<String> = conn
            .query_row("SELECT reused_from FROM images WHERE id = ?1", [B], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(from.as_deref(), Some(A));
    }

    #[test]
    fn the_look_ups_read_only_indexes() {
        let conn = db();
        let text = |s: &str| rusqlite::types::Value::Text(s.into());
        let int = rusqlite::types::Value::Integer;
        for (sql, params, expected) in [
            (
                DONE_TWIN,
                vec![text(A), text("h")],
                "SEARCH images USING COVERING INDEX images_by_content \
                 (owner=? AND content_hash=? AND status=?)",
            ),
            (
                IN_FLIGHT_TWIN,
                vec![text(A), text("h"), int(1)],
                "SEARCH images USING COVERING INDEX images_by_content \
                 (owner=? AND content_hash=? AND status=? AND lease_until>?)",
            ),
            (
                COUNT_REUSED,
                vec![],
                "SEARCH images USING COVERING INDEX images_reused (reused_from>?)",
            ),
        ] {
            let plan = crate::storage::testing::plan_details(&conn, sql, &params);
            assert!(plan.iter().any(|l| l == expected), "{sql}: {plan:#?}");
            assert!(
                plan.iter().all(|l| !l.contains("TEMP B-TREE")),
                "{sql}: {plan:#?}"
            );
            assert!(
                plan.iter()
                    .all(|l| !l.starts_with("SCAN ") || l == expected),
                "{sql}: {plan:#?}"
            );
        }
    }
}
