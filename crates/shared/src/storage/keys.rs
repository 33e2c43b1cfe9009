//! The statements of client keys (issue 20): making, finding, listing and revoking them, and
//! counting each owner's uploads per UTC day for quotas. The native tests run them against
//! the migrations in SQLite and check that each one searches an index.

/// Records a new key. `?1` key id, `?2` SHA-256 of the secret key (hex), `?3` name,
/// `?4` scopes ([`crate::api::auth::Scopes::stored`]), `?5` daily uploads or NULL, `?6` now.
pub const INSERT_KEY: &str = "INSERT INTO api_keys \
     (key_id, key_hash, name, scopes, daily_uploads, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The live key with this hash. `?1` SHA-256 of the presented key (hex).
pub const SELECT_KEY_BY_HASH: &str =
    "SELECT key_id, name, scopes, daily_uploads, created_at, revoked_at FROM api_keys \
     WHERE key_hash = ?1 AND revoked_at IS NULL";

/// Every key, revoked ones too, oldest first, at most `?1`.
pub const LIST_KEYS: &str =
    "SELECT key_id, name, scopes, daily_uploads, created_at, revoked_at FROM api_keys \
     ORDER BY created_at, key_id LIMIT ?1";

/// Revokes a key (again: a no-op that keeps the first time). `?1` key id, `?2` now.
/// Returns the key id if the key exists.
pub const REVOKE_KEY: &str = "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?2) \
     WHERE key_id = ?1 RETURNING key_id";

/// Counts one upload of `?1` on day `?2`, unless `?3` are counted already. Returns the new
/// count, or no row when the quota is used up.
pub const COUNT_UPLOAD: &str = "INSERT INTO key_usage (owner, day, uploads) VALUES (?1, ?2, 1) \
     ON CONFLICT (owner, day) DO UPDATE SET uploads = uploads + 1 WHERE uploads < ?3 \
     RETURNING uploads";

/// Forgets the counts of `?1`'s days before `?2` (run with [`COUNT_UPLOAD`], so that an owner
/// keeps at most today's row).
pub const FORGET_OLD_DAYS: &str = "DELETE FROM key_usage WHERE owner = ?1 AND day < ?2";

/// A row of [`COUNT_UPLOAD`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct UploadCount {
    pub uploads: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{KeyRow, Scope, Scopes};
    use crate::storage::testing::db;
    use rusqlite::{params, Connection, OptionalExtension};

    fn insert(conn: &Connection, id: &str, hash: &str, at: u64) {
        let scopes: Scopes = [Scope::ImagesRead].into_iter().collect();
        conn.execute(
            INSERT_KEY,
            params![id, hash, "app", scopes.stored(), None::<u64>, at],
        )
        .unwrap();
    }

    fn lookup(conn: &Connection, hash: &str) -> Option<KeyRow> {
        conn.query_row(SELECT_KEY_BY_HASH, [hash], |r| {
            Ok(KeyRow {
                key_id: r.get("key_id")?,
                name: r.get("name")?,
                scopes: r.get("scopes")?,
                daily_uploads: r.get("daily_uploads")?,
                created_at: r.get("created_at")?,
                revoked_at: r.get("revoked_at")?,
            })
        })
        .optional()
        .unwrap()
    }

    #[test]
    fn keys_are_found_by_hash_until_revoked() {
        let conn = db();
        insert(&conn, "key_a", "h1", 10);
        insert(&conn, "key_b", "h2", 5);
        let found = lookup(&conn, "h1").unwrap();
        assert_eq!(found.key_id, "key_a");
        assert_eq!(found.client().scopes.names(), ["images:read"]);
        assert!(lookup(&conn, "h3").is_none());
        // A hash is unique: a second key with it is refused.
        assert!(conn
            .execute(INSERT_KEY, params!["key_c", "h1", "x", "", None::<u64>, 1])
            .is_err());
        let revoke = |id: &str, now: u64| -> Option<String> {
            conn.query_row(REVOKE_KEY, params![id, now], |r| r.get(0))
                .optional()
                .unwrap()
        };
        assert_eq!(revoke("key_a", 100).as_deref(), Some("key_a"));
        assert!(lookup(&conn, "h1").is_none(), "a revoked key opens nothing");
        assert_eq!(
            revoke("key_a", 200).as_deref(),
            Some("key_a"),
            "again: still there"
        );
        assert_eq!(revoke("key_zz", 200), None);
        let listed: Vec<(String, Option<u64>)> = conn
            .prepare(LIST_KEYS)
            .unwrap()
            .query_map([10], |r| Ok((r.get("key_id")?, r.get("revoked_at")?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            listed,
            [
                ("key_b".to_string(), None),
                ("key_a".to_string(), Some(100))
            ],
            "oldest first; the first revocation time is kept"
        );
    }

    #[test]
    fn a_quota_counts_up_to_its_limit_per_day() {
        let conn = db();
        let count = |owner: &str, day: u64, limit: u64| -> Option<u64> {
            conn.query_row(COUNT_UPLOAD, params![owner, day, limit], |r| r.get(0))
                .optional()
                .unwrap()
        };
        assert_eq!(count("key_a", 1, 2), Some(1));
        assert_eq!(count("key_a", 1, 2), Some(2));
        assert_eq!(count("key_a", 1, 2), None, "used up");
        assert_eq!(count("key_a", 1, 2), None, "and refusals are not counted");
        assert_eq!(count("key_b", 1, 2), Some(1), "per owner");
        assert_eq!(count("key_a", 2, 2), Some(1), "a new day");
        assert_eq!(count("key_a", 1, 3), Some(3), "a raised quota counts on");
        conn.execute(FORGET_OLD_DAYS, params!["key_a", 2]).unwrap();
        let rows: Vec<(String, u64)> = conn
            .prepare("SELECT owner, day FROM key_usage ORDER BY owner, day")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            [("key_a".into(), 2), ("key_b".into(), 1)],
            "only the owner's older days go"
        );
    }

    #[test]
    fn key_statements_search_indexes() {
        let conn = db();
        let text = |s: &str| rusqlite::types::Value::Text(s.into());
        let int = rusqlite::types::Value::Integer;
        for (sql, params, expected) in [
            (
                SELECT_KEY_BY_HASH,
                vec![text("h")],
                "SEARCH api_keys USING INDEX sqlite_autoindex_api_keys_2 (key_hash=?)",
            ),
            (
                REVOKE_KEY,
                vec![text("key_a"), int(1)],
                "SEARCH api_keys USING INDEX sqlite_autoindex_api_keys_1 (key_id=?)",
            ),
            (COUNT_UPLOAD, vec![text("key_a"), int(1), int(5)], ""),
            (
                FORGET_OLD_DAYS,
                vec![text("key_a"), int(5)],
                "SEARCH key_usage USING PRIMARY KEY (owner=? AND day<?)",
            ),
            (
                LIST_KEYS,
                vec![int(10)],
                "SCAN api_keys USING INDEX api_keys_by_creation",
            ),
        ] {
            let plan = crate::storage::testing::plan_details(&conn, sql, &params);
            assert!(
                plan.iter().all(|l| !l.contains("TEMP B-TREE")),
                "{sql}: {plan:#?}"
            );
            assert!(
                plan.iter()
                    .all(|l| !l.starts_with("SCAN ") || l == expected),
                "{sql}: {plan:#?}"
            );
            if !expected.is_empty() {
                assert!(plan.iter().any(|l| l == expected), "{sql}: {plan:#?}");
            }
        }
    }
}
