//! The real schema in SQLite, for the statements' native tests.

use rusqlite::Connection;
use std::path::PathBuf;

/// The migration files, in the order wrangler applies them.
pub fn migrations() -> Vec<PathBuf> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    files
}

/// A fresh in-memory database with every migration applied, foreign keys on (as D1).
pub fn db() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    for file in migrations() {
        conn.execute_batch(&std::fs::read_to_string(file).unwrap())
            .unwrap();
    }
    conn
}

/// The detail column of `EXPLAIN QUERY PLAN` for `sql` with `params`, one line per node.
pub fn plan_details(
    conn: &Connection,
    sql: &str,
    params: &[rusqlite::types::Value],
) -> Vec<String> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(3))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
