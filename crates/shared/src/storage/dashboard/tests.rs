//! The dashboard's statements against the real schema in SQLite: what they count, and that
//! each reads an index (EXPLAIN QUERY PLAN), never a table scan.

use super::*;
use crate::storage::images::{INSERT_QUEUED, MARK_DONE, MARK_FAILED};
use crate::storage::testing::{db, plan_details};
use proptest::prelude::*;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};

const NOW: u64 = 1_796_000_000_000 + 37 * 60_000; // 37 minutes into an hour

fn id(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

fn queued(conn: &Connection, i: u64, uploaded_at: u64) {
    conn.execute(
        INSERT_QUEUED,
        params![
            id(i),
            "images/x.png",
            "image/png",
            10,
            uploaded_at,
            "operator"
        ],
    )
    .unwrap();
}

fn done(conn: &Connection, i: u64, at: u64) {
    let changed = conn
        .execute(
            MARK_DONE,
            params![id(i), "[]", "[]", "m", 0.8, at, None::<u64>, "[]"],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

fn failed(conn: &Connection, i: u64, code: &str, at: u64) {
    let changed = conn
        .execute(MARK_FAILED, params![id(i), code, "msg", at, None::<u64>])
        .unwrap();
    assert_eq!(changed, 1);
}

fn event(conn: &Connection, i: u64, state: &str, attempts: u64, created_at: u64) {
    conn.execute(
        "INSERT INTO notifications (event_id, image_id, type, url, payload, state, created_at, \
         attempts, updated_at) VALUES (?1, ?2, 'image.tagged', 'https://h/', '{}', ?3, ?4, ?5, ?4)",
        params![format!("evt_{i}"), id(i), state, created_at, attempts],
    )
    .unwrap();
}

fn values(params: &[u64]) -> Vec<Value> {
    params.iter().map(|p| Value::Integer(*p as i64)).collect()
}

fn query<T>(
    conn: &Connection,
    sql: &str,
    params: &[u64],
    f: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut st = conn.prepare(sql).unwrap();
    st.query_map(params_from_iter(values(params)), |r| f(r))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn opt(v: Option<i64>) -> Option<u64> {
    v.map(|v| v as u64)
}

/// Every statement run as the worker runs them, its rows read as D1 gives them.
fn rows(conn: &Connection, window: &Window) -> Rows {
    let p = window.params();
    let one = |i: usize| -> Vec<u64> { p[i].clone() };
    Rows {
        hours: query(conn, STATEMENTS[0], &one(0), |r| {
            Ok(HourRow {
                hour: r.get::<_, i64>(0)? as u64,
                status: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
            })
        }),
        latency: query(conn, STATEMENTS[1], &one(1), |r| {
            Ok(LatencyRow {
                samples: r.get::<_, i64>(0)? as u64,
                median_ms: opt(r.get(1)?),
                p95_ms: opt(r.get(2)?),
            })
        })[0],
        failures: query(conn, STATEMENTS[2], &one(2), |r| {
            Ok(CodeCount {
                code: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        }),
        backlog: query(conn, STATEMENTS[3], &one(3), |r| {
            Ok(BacklogRow {
                queued: r.get::<_, i64>(0)? as u64,
                oldest: opt(r.get(1)?),
            })
        })[0],
        calls: query(conn, STATEMENTS[4], &one(4), |r| {
            Ok(CallsRow {
                calls: r.get::<_, i64>(0)? as u64,
            })
        })[0],
        deliveries: query(conn, STATEMENTS[5], &one(5), |r| {
            Ok(Deliveries {
                delivered: r.get::<_, i64>(0)? as u64,
                retrying: r.get::<_, i64>(1)? as u64,
                waiting: r.get::<_, i64>(2)? as u64,
                given_up: r.get::<_, i64>(3)? as u64,
            })
        })[0],
        tags: query(conn, STATEMENTS[6], &one(6), |r| {
            Ok(TagCount {
                tag: r.get(0)?,
                count: r.get::<_, i64>(1)? as u64,
            })
        }),
    }
}

#[test]
fn window_bounds() {
    let w = Window::at(NOW);
    assert_eq!(w.first_hour % HOUR_MS, 0);
    assert_eq!((NOW / HOUR_MS) * HOUR_MS - w.first_hour, 23 * HOUR_MS);
    assert_eq!(w.since, NOW - 24 * HOUR_MS);
    assert_eq!(w.day_start % (24 * HOUR_MS), 0);
    assert!(w.day_start <= NOW && NOW - w.day_start < 24 * HOUR_MS);
    assert_eq!(w.params().len(), STATEMENTS.len());
    // Near the epoch nothing underflows.
    let early = Window::at(5);
    assert_eq!((early.first_hour, early.since, early.day_start), (0, 0, 0));
}

#[test]
fn an_empty_database_gives_an_empty_dashboard() {
    let conn = db();
    let w = Window::at(NOW);
    let d = Dashboard::shape(rows(&conn, &w), &w, None);
    assert_eq!(d.uploads_per_hour.len(), 24);
    assert!(d
        .uploads_per_hour
        .iter()
        .all(|h| h.queued + h.done + h.failed == 0));
    assert_eq!(d.time_to_done, TimeToDone::default());
    assert!(d.failures.is_empty() && d.top_tags.is_empty());
    assert_eq!(d.backlog, Backlog::default());
    assert_eq!(d.ai.calls, 0);
    assert_eq!(d.ai.budget_used_percent, None);
    assert_eq!(d.webhooks, Deliveries::default());
}

#[test]
fn counts_what_was_made() {
    let conn = db();
    let w = Window::at(NOW);
    // Two days ago: outside every window but the backlog's.
    queued(&conn, 1, NOW - 48 * HOUR_MS);
    queued(&conn, 2, NOW - 48 * HOUR_MS + 5);
    done(&conn, 2, NOW - 47 * HOUR_MS);
    // This hour: 2 queued, 3 done (10 s, 20 s, 30 s), 1 failed.
    let hour = NOW - 10 * 60_000;
    queued(&conn, 10, hour);
    queued(&conn, 11, hour + 1);
    for (i, secs) in [(12, 10), (13, 20), (14, 30)] {
        queued(&conn, i, hour);
        done(&conn, i, hour + secs * 1000);
    }
    queued(&conn, 15, hour);
    failed(&conn, 15, "unsupported_image", hour + 1);
    // Five hours ago: 2 failed with another code, 1 done in 60 s, reused from image 12.
    let earlier = NOW - 5 * HOUR_MS;
    for i in [20, 21] {
        queued(&conn, i, earlier);
        failed(&conn, i, "ai_refused", earlier + 5);
    }
    queued(&conn, 22, earlier);
    done(&conn, 22, earlier + 60_000);
    conn.execute(
        "UPDATE images SET reused_from = ?2 WHERE id = ?1",
        params![id(22), id(12)],
    )
    .unwrap();
    // Webhooks: delivered, retrying, waiting, given up; one from before the window.
    event(&conn, 12, "delivered", 1, hour);
    event(&conn, 13, "pending", 2, hour);
    event(&conn, 14, "pending", 0, hour);
    event(&conn, 15, "failed", 9, earlier);
    event(&conn, 2, "delivered", 1, NOW - 47 * HOUR_MS);
    // Tags, counted by the triggers.
    for (tag, image) in [("cat", 12), ("cat", 13), ("dog", 13)] {
        conn.execute(
            "INSERT INTO image_tags (tag, uploaded_at, image_id) VALUES (?1, 1, ?2)",
            params![tag, id(image)],
        )
        .unwrap();
    }

    let d = Dashboard::shape(rows(&conn, &w), &w, Some(8));
    let last = d.uploads_per_hour.last().unwrap();
    assert_eq!((last.queued, last.done, last.failed), (2, 3, 1));
    let five = &d.uploads_per_hour[23 - 5];
    assert_eq!((five.queued, five.done, five.failed), (0, 1, 2));
    let total: u64 = d
        .uploads_per_hour
        .iter()
        .map(|h| h.queued + h.done + h.failed)
        .sum();
    assert_eq!(total, 9, "the two-day-old images are outside the chart");
    assert_eq!(d.uploads_per_hour[0].hour, format_ms(w.first_hour));
    // Time to done: 10, 20, 30, 60 s; nearest rank: median 20 s, p95 60 s.
    assert_eq!(
        d.time_to_done,
        TimeToDone {
            samples: 4,
            median_ms: Some(20_000),
            p95_ms: Some(60_000)
        }
    );
    assert_eq!(
        d.failures,
        vec![
            CodeCount {
                code: "ai_refused".into(),
                count: 2
            },
            CodeCount {
                code: "unsupported_image".into(),
                count: 1
            },
        ]
    );
    assert_eq!(d.backlog.queued, 3);
    assert!(!d.backlog.at_least);
    assert_eq!(
        d.backlog.oldest_uploaded_at,
        Some(format_ms(NOW - 48 * HOUR_MS))
    );
    assert_eq!(d.backlog.oldest_age_seconds, Some(48 * 3600));
    // Today (NOW is 1.5 h into its UTC day): images 12, 13 and 14. Image 2 was done two
    // days ago, and 22 (five hours ago, the day before) was reused from 12 anyway.
    assert!(hour >= w.day_start);
    assert_eq!(d.ai.calls, 3);
    assert_eq!(d.ai.daily_budget, Some(8));
    assert_eq!(d.ai.budget_used_percent, Some(37.5));
    assert_eq!(
        d.webhooks,
        Deliveries {
            delivered: 1,
            retrying: 1,
            waiting: 1,
            given_up: 1
        }
    );
    assert_eq!(
        d.top_tags,
        vec![
            TagCount {
                tag: "cat".into(),
                count: 2
            },
            TagCount {
                tag: "dog".into(),
                count: 1
            },
        ]
    );
}

#[test]
fn the_backlog_is_counted_up_to_its_cap() {
    let rows = Rows {
        backlog: BacklogRow {
            queued: BACKLOG_CAP,
            oldest: Some(NOW - 1000),
        },
        ..Rows::default()
    };
    let d = Dashboard::shape(rows, &Window::at(NOW), Some(0));
    assert!(d.backlog.at_least);
    assert_eq!(d.backlog.oldest_age_seconds, Some(1));
    // A budget of 0 has no percentage (no division by zero).
    assert_eq!(d.ai.budget_used_percent, None);
}

#[test]
fn rows_outside_the_chart_are_ignored() {
    let w = Window::at(NOW);
    let hour = |h: u64, status: &str| HourRow {
        hour: h,
        status: status.into(),
        count: 1,
    };
    let first = w.first_hour / HOUR_MS;
    let rows = Rows {
        hours: vec![
            hour(first - 1, "done"),
            hour(first + 24, "done"),
            hour(first, "done"),
            hour(first, "other"),
        ],
        ..Rows::default()
    };
    let d = Dashboard::shape(rows, &w, None);
    let sum: u64 = d.uploads_per_hour.iter().map(|h| h.done).sum();
    assert_eq!(sum, 1);
    assert_eq!(d.uploads_per_hour[0].done, 1);
}

/// The index each statement reads, by name: a plan that scans a table fails.
#[test]
fn every_aggregate_reads_an_index() {
    let conn = db();
    let w = Window::at(NOW);
    let expected = [
        "SEARCH upload_hours USING PRIMARY KEY (hour>?)",
        "SEARCH images USING COVERING INDEX images_by_finish (status=? AND processed_at>?)",
        "SEARCH images USING COVERING INDEX images_by_finish (status=? AND processed_at>?)",
        "SEARCH images USING COVERING INDEX images_by_status (status=?)",
        "SEARCH images USING COVERING INDEX images_by_finish (status=? AND processed_at>?)",
        "SEARCH notifications USING COVERING INDEX notifications_by_creation (created_at>?)",
        "SCAN tag_counts USING COVERING INDEX tag_counts_by_count",
    ];
    for ((sql, params), access) in STATEMENTS.iter().zip(w.params()).zip(expected) {
        let plan = plan_details(&conn, sql, &values(&params));
        let joined = plan.join(" | ");
        assert!(plan.iter().any(|d| d == access), "{sql}: {joined}");
        for table in ["images", "notifications", "tag_counts", "upload_hours"] {
            assert!(
                !plan.iter().any(|d| d == &format!("SCAN {table}")),
                "{sql} scans {table}: {joined}"
            );
        }
    }
}

/// What `upload_hours` should hold: the images per hour of upload and status, counted.
fn hours_counted(conn: &Connection) -> Vec<(i64, String, i64)> {
    query(
        conn,
        "SELECT uploaded_at / 3600000, status, count(*) FROM images GROUP BY 1, 2 ORDER BY 1, 2",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

fn hours_kept(conn: &Connection) -> Vec<(i64, String, i64)> {
    query(
        conn,
        "SELECT hour, status, count FROM upload_hours ORDER BY 1, 2",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

/// One step on an image, with the statements the workers run.
#[derive(Clone, Debug)]
enum Step {
    Upload { hour: u64 },
    Done,
    Fail,
    Undo,
    Delete,
    Redrive,
}

fn step() -> impl Strategy<Value = (usize, Step)> {
    (
        0usize..12,
        prop_oneof![
            (0u64..30).prop_map(|hour| Step::Upload { hour }),
            Just(Step::Done),
            Just(Step::Fail),
            Just(Step::Undo),
            Just(Step::Delete),
            Just(Step::Redrive),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The triggers keep `upload_hours` equal to the images counted per hour and status,
    /// through uploads, transitions, redrives and deletes (and rows at 0 are removed).
    #[test]
    fn upload_hours_follow_images(steps in proptest::collection::vec(step(), 0..80)) {
        let conn = db();
        let t = NOW - 30 * HOUR_MS;
        for (k, (image, step)) in steps.iter().enumerate() {
            let i = *image as u64;
            let at = NOW + k as u64;
            match step {
                Step::Upload { hour } => {
                    // A repeated id is refused by the primary key and counts nothing.
                    let _ = conn.execute(
                        INSERT_QUEUED,
                        params![id(i), "images/x.png", "image/png", 10, t + hour * HOUR_MS + i, "operator"],
                    );
                }
                Step::Done => {
                    conn.execute(MARK_DONE, params![id(i), "[]", "[]", "m", 0.8, at, None::<u64>, "[]"]).unwrap();
                }
                Step::Fail => {
                    conn.execute(MARK_FAILED, params![id(i), "invalid_image", "m", at, None::<u64>]).unwrap();
                }
                Step::Undo => {
                    conn.execute(crate::storage::images::DELETE_UNFINISHED, params![id(i)]).unwrap();
                }
                Step::Delete => {
                    let ids = crate::storage::manage::id_list(&[id(i)]);
                    for sql in crate::storage::manage::DELETE_IMAGES {
                        conn.execute(sql, params![ids]).unwrap();
                    }
                }
                // No statement sends an image back to queued today; the trigger would count it.
                Step::Redrive => {
                    conn.execute(
                        "UPDATE images SET status = 'queued', error_code = NULL WHERE id = ?1 AND status = 'failed'",
                        params![id(i)],
                    )
                    .unwrap();
                }
            }
            prop_assert_eq!(hours_kept(&conn), hours_counted(&conn));
        }
    }

    /// Time to done is the nearest-rank median and p95 of the latest done images.
    #[test]
    fn time_to_done_is_the_nearest_rank(durations in proptest::collection::vec(0u64..600_000, 0..60)) {
        let conn = db();
        let w = Window::at(NOW);
        for (i, ms) in durations.iter().enumerate() {
            let at = NOW - 3 * HOUR_MS + i as u64 * 1000;
            queued(&conn, i as u64, at);
            done(&conn, i as u64, at + ms);
        }
        let d = Dashboard::shape(rows(&conn, &w), &w, None);
        let mut sorted = durations.clone();
        sorted.sort_unstable();
        prop_assert_eq!(d.time_to_done.samples, durations.len() as u64);
        prop_assert_eq!(d.time_to_done.median_ms, nearest_rank(&sorted, 50));
        prop_assert_eq!(d.time_to_done.p95_ms, nearest_rank(&sorted, 95));
    }
}

/// Only the latest [`LATENCY_SAMPLES`] done images are measured: older slow ones are not.
#[test]
fn time_to_done_reads_only_the_latest_samples() {
    let conn = db();
    let w = Window::at(NOW);
    let old = 200;
    for i in 0..LATENCY_SAMPLES + old {
        // The slow ones were done first (about 22.7 h ago), the rest from 20 h ago on.
        let (at, ms) = match i < old {
            true => (NOW - 23 * HOUR_MS + i * 1000, 1_000_000),
            false => (NOW - 20 * HOUR_MS + i * 1000, 1000),
        };
        queued(&conn, i, at);
        done(&conn, i, at + ms);
    }
    let d = Dashboard::shape(rows(&conn, &w), &w, None);
    assert_eq!(
        d.time_to_done,
        TimeToDone {
            samples: LATENCY_SAMPLES,
            median_ms: Some(1000),
            p95_ms: Some(1000)
        }
    );
}

#[test]
fn nearest_rank_examples() {
    assert_eq!(nearest_rank(&[], 50), None);
    assert_eq!(nearest_rank(&[7], 95), Some(7));
    assert_eq!(nearest_rank(&[1, 2, 3, 4], 50), Some(2));
    let hundred: Vec<u64> = (1..=100).collect();
    assert_eq!(nearest_rank(&hundred, 95), Some(95));
    assert_eq!(nearest_rank(&hundred, 50), Some(50));
}
