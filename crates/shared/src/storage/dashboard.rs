//! The operator dashboard (issue 22, `GET /admin/stats`): aggregates over D1, and their
//! shape for the page. Each statement reads one bounded range (a time window, a `LIMIT`) of
//! a covering index, or a small table kept by triggers (`migrations/0007_dashboard.sql`), so
//! its cost follows the window's rows at most, never the table's. The worker runs [`STATEMENTS`] in one D1 batch, with
//! the parameters of [`Window::params`], and hands the rows to [`Dashboard::shape`].

use serde::{Deserialize, Serialize};

use crate::wire::time::format_ms;

/// One hour, in milliseconds.
pub const HOUR_MS: u64 = 60 * 60 * 1000;
/// The window of the hourly chart, failures, time to done and webhooks: 24 hours.
pub const WINDOW_HOURS: u64 = 24;
/// Time to done is measured on at most this many of the latest done images in the window.
pub const LATENCY_SAMPLES: u64 = 2_000;
/// The backlog is counted up to this many queued images; beyond, it shows "at least".
pub const BACKLOG_CAP: u64 = 100_000;
/// Failure codes shown, most frequent first.
pub const FAILURE_CODES: u64 = 20;
/// Tags shown, most used first.
pub const TOP_TAGS: u64 = 10;

/// Uploads per hour and status now since `?1` (the start of the chart's first hour), from
/// the counts the triggers of `migrations/0007_dashboard.sql` keep (`upload_hours`): at most
/// three rows an hour, whatever the upload rate.
pub const UPLOADS_PER_HOUR: &str =
    "SELECT hour, status, count FROM upload_hours WHERE hour >= ?1 / 3600000";

/// The median and p95 (nearest rank) of upload-to-done time, in ms, over the latest `?2`
/// images done since `?1`. Index only (`images_by_finish`).
pub const TIME_TO_DONE: &str = "WITH recent AS (\
       SELECT processed_at - uploaded_at AS ms FROM images \
       WHERE status = 'done' AND processed_at >= ?1 ORDER BY processed_at DESC LIMIT ?2), \
     ranked AS (SELECT ms, row_number() OVER (ORDER BY ms) AS rank, count(*) OVER () AS n \
       FROM recent) \
     SELECT count(*) AS samples, \
       max(CASE WHEN rank = (n + 1) / 2 THEN ms END) AS median_ms, \
       max(CASE WHEN rank = (n * 95 + 99) / 100 THEN ms END) AS p95_ms \
     FROM ranked";

/// Images failed since `?1`, per error code, the `?2` most frequent. Index only
/// (`images_by_finish`).
pub const FAILURES: &str = "SELECT coalesce(error_code, 'unknown') AS code, count(*) AS count \
     FROM images WHERE status = 'failed' AND processed_at >= ?1 \
     GROUP BY code ORDER BY count DESC, code LIMIT ?2";

/// Queued images (counted up to `?1`) and the oldest one's upload time. Index only
/// (`images_by_status`, oldest first).
pub const BACKLOG: &str = "SELECT count(*) AS queued, min(uploaded_at) AS oldest FROM (\
       SELECT uploaded_at FROM images WHERE status = 'queued' ORDER BY uploaded_at LIMIT ?1)";

/// Images tagged by the model since `?1` (the start of the UTC day): done and not reused
/// from a twin. Index only (`images_by_finish`).
pub const MODEL_CALLS: &str = "SELECT count(*) AS calls FROM images \
     WHERE status = 'done' AND processed_at >= ?1 AND reused_from IS NULL";

/// Webhook events raised since `?1`, by where their delivery stands, in one pass over the
/// window (no sort). Index only (`notifications_by_creation`).
pub const DELIVERIES: &str = "SELECT \
       coalesce(sum(state = 'delivered'), 0) AS delivered, \
       coalesce(sum(state = 'pending' AND attempts > 0), 0) AS retrying, \
       coalesce(sum(state = 'pending' AND attempts = 0), 0) AS waiting, \
       coalesce(sum(state = 'failed'), 0) AS given_up \
     FROM notifications WHERE created_at >= ?1";

/// The `?1` most used tags (and categories), from the counts the triggers keep
/// (`tag_counts_by_count`).
pub const TOP_TAGS_SQL: &str =
    "SELECT tag, count FROM tag_counts ORDER BY count DESC, tag LIMIT ?1";

/// Every statement of the dashboard, in the order of [`Window::params`] and [`Rows`].
pub const STATEMENTS: [&str; 7] = [
    UPLOADS_PER_HOUR,
    TIME_TO_DONE,
    FAILURES,
    BACKLOG,
    MODEL_CALLS,
    DELIVERIES,
    TOP_TAGS_SQL,
];

/// The time bounds of one dashboard, from the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub now: u64,
    /// The start of the chart's first hour: 23 whole hours and the current one.
    pub first_hour: u64,
    /// 24 hours ago.
    pub since: u64,
    /// The start of the current UTC day.
    pub day_start: u64,
}

impl Window {
    /// The window ending at `now` (ms since the epoch).
    pub fn at(now: u64) -> Self {
        let hour = now / HOUR_MS;
        Self {
            now,
            first_hour: hour.saturating_sub(WINDOW_HOURS - 1) * HOUR_MS,
            since: now.saturating_sub(WINDOW_HOURS * HOUR_MS),
            day_start: now - now % (24 * HOUR_MS),
        }
    }

    /// The parameters of each of [`STATEMENTS`], in order.
    pub fn params(&self) -> [Vec<u64>; 7] {
        [
            vec![self.first_hour],
            vec![self.since, LATENCY_SAMPLES],
            vec![self.since, FAILURE_CODES],
            vec![BACKLOG_CAP],
            vec![self.day_start],
            vec![self.since],
            vec![TOP_TAGS],
        ]
    }
}

/// A row of [`UPLOADS_PER_HOUR`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HourRow {
    pub hour: u64,
    pub status: String,
    pub count: u64,
}

/// The row of [`TIME_TO_DONE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct LatencyRow {
    pub samples: u64,
    pub median_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// A row of [`FAILURES`].
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct CodeCount {
    pub code: String,
    pub count: u64,
}

/// The row of [`BACKLOG`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct BacklogRow {
    pub queued: u64,
    pub oldest: Option<u64>,
}

/// The row of [`MODEL_CALLS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct CallsRow {
    pub calls: u64,
}

/// A row of [`TOP_TAGS_SQL`].
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct TagCount {
    pub tag: String,
    pub count: u64,
}

/// What [`STATEMENTS`] returned, one field each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rows {
    pub hours: Vec<HourRow>,
    pub latency: LatencyRow,
    pub failures: Vec<CodeCount>,
    pub backlog: BacklogRow,
    pub calls: CallsRow,
    pub deliveries: Deliveries,
    pub tags: Vec<TagCount>,
}

/// One hour of the chart: uploads in it, by their status now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HourBucket {
    /// The hour's start, RFC 3339.
    pub hour: String,
    pub queued: u64,
    pub done: u64,
    pub failed: u64,
}

/// Time from upload to done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeToDone {
    /// Done images measured (the latest, at most [`LATENCY_SAMPLES`]).
    pub samples: u64,
    pub median_ms: Option<u64>,
    pub p95_ms: Option<u64>,
}

/// The queued images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    /// Queued images, counted up to [`BACKLOG_CAP`].
    pub queued: u64,
    /// `true` when the count reached the cap: there are at least that many.
    pub at_least: bool,
    /// The oldest queued image's upload time, RFC 3339.
    pub oldest_uploaded_at: Option<String>,
    pub oldest_age_seconds: Option<u64>,
}

/// Model calls today against the daily budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AiToday {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Images the model tagged today (done, not reused from a twin).
    pub calls: u64,
    /// `AI_DAILY_BUDGET`; `None`: no limit.
    pub daily_budget: Option<u64>,
    /// `calls` as a percentage of the budget, if there is one.
    pub budget_used_percent: Option<f64>,
}

/// Webhook events of the window, by where their delivery stands: the row of [`DELIVERIES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all(serialize = "camelCase"))]
pub struct Deliveries {
    pub delivered: u64,
    /// Pending after at least one failed attempt.
    pub retrying: u64,
    /// Pending, not attempted yet.
    pub waiting: u64,
    /// Given up: recorded as failed.
    pub given_up: u64,
}

/// The body of `GET /admin/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub generated_at: String,
    pub window_hours: u64,
    /// [`WINDOW_HOURS`] buckets, oldest first, the last one the current hour.
    pub uploads_per_hour: Vec<HourBucket>,
    pub time_to_done: TimeToDone,
    pub failures: Vec<CodeCount>,
    pub backlog: Backlog,
    pub ai: AiToday,
    pub webhooks: Deliveries,
    pub top_tags: Vec<TagCount>,
}

impl Dashboard {
    /// The dashboard of `rows`, read at `window`, with the `AI_DAILY_BUDGET` in force.
    pub fn shape(rows: Rows, window: &Window, budget: Option<u64>) -> Self {
        let first = window.first_hour / HOUR_MS;
        let mut hours: Vec<HourBucket> = (0..WINDOW_HOURS)
            .map(|i| HourBucket {
                hour: format_ms((first + i) * HOUR_MS),
                ..HourBucket::default()
            })
            .collect();
        for row in &rows.hours {
            let Some(bucket) = row
                .hour
                .checked_sub(first)
                .and_then(|i| hours.get_mut(i as usize))
            else {
                continue;
            };
            match row.status.as_str() {
                "queued" => bucket.queued += row.count,
                "done" => bucket.done += row.count,
                "failed" => bucket.failed += row.count,
                _ => {}
            }
        }
        let oldest = rows.backlog.oldest.filter(|_| rows.backlog.queued > 0);
        let calls = rows.calls.calls;
        Self {
            generated_at: format_ms(window.now),
            window_hours: WINDOW_HOURS,
            uploads_per_hour: hours,
            time_to_done: TimeToDone {
                samples: rows.latency.samples,
                median_ms: rows.latency.median_ms,
                p95_ms: rows.latency.p95_ms,
            },
            failures: rows.failures,
            backlog: Backlog {
                queued: rows.backlog.queued,
                at_least: rows.backlog.queued >= BACKLOG_CAP,
                oldest_uploaded_at: oldest.map(format_ms),
                oldest_age_seconds: oldest.map(|t| window.now.saturating_sub(t) / 1000),
            },
            ai: AiToday {
                day: format_ms(window.day_start).chars().take(10).collect(),
                calls,
                daily_budget: budget,
                budget_used_percent: budget
                    .filter(|b| *b > 0)
                    .map(|b| (calls as f64 * 1000.0 / b as f64).round() / 10.0),
            },
            webhooks: rows.deliveries,
            top_tags: rows.tags,
        }
    }
}

/// The nearest-rank percentile `pct` (0 to 100) of `sorted`: what [`TIME_TO_DONE`]
/// computes in SQL, for its tests.
pub fn nearest_rank(sorted: &[u64], pct: u64) -> Option<u64> {
    let n = sorted.len() as u64;
    let rank = (n * pct).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

#[cfg(test)]
mod tests;
