//! The operator dashboard (issue 22). `GET /admin` is a static page (it holds no data: it
//! asks for the operator key, keeps it in session storage and calls the API with it);
//! `GET /admin/stats` (the operator key only) is its figures: the aggregates of
//! [`shared::storage::dashboard`], read from D1 in one batch (one round trip), shaped there.

use edge::d1::{n, Db};
use edge::now_ms;
use edge::OrUnavailable;
use serde::de::DeserializeOwned;
use shared::api::ApiError;
use shared::storage::dashboard::{Dashboard, Rows, Window, STATEMENTS};
use worker::{D1Result, Env, Headers, Response};

use crate::http;
use crate::settings::Settings;

/// `GET /admin`: the dashboard's page.
pub fn page() -> Response {
    http::page(include_bytes!("dashboard.html"))
}

/// The rows of the `i`th statement's result.
fn rows<T: DeserializeOwned>(results: &[D1Result], i: usize) -> Result<Vec<T>, ApiError> {
    match results.get(i) {
        Some(result) => result.results::<T>().or_unavailable("D1 dashboard rows"),
        None => Err(ApiError::Unavailable(
            "D1 dashboard: a result is missing".into(),
        )),
    }
}

/// The first row of the `i`th statement's result (an aggregate always has one).
fn first<T: DeserializeOwned + Default>(results: &[D1Result], i: usize) -> Result<T, ApiError> {
    Ok(rows(results, i)?.into_iter().next().unwrap_or_default())
}

/// `GET /admin/stats`: the dashboard's figures, as of now.
pub async fn stats(env: &Env, settings: &Settings) -> Result<Response, ApiError> {
    let window = Window::at(now_ms());
    let db = Db::<ApiError>::open(env)?;
    let statements = STATEMENTS
        .iter()
        .zip(window.params())
        .map(|(sql, params)| db.statement(sql, &params.into_iter().map(n).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()?;
    let results = db.batch("D1 dashboard", statements).await?;
    let rows = Rows {
        hours: rows(&results, 0)?,
        latency: first(&results, 1)?,
        failures: rows(&results, 2)?,
        backlog: first(&results, 3)?,
        calls: first(&results, 4)?,
        deliveries: first(&results, 5)?,
        tags: rows(&results, 6)?,
    };
    let dashboard = Dashboard::shape(rows, &window, settings.ai_daily_budget);
    Ok(http::json(200, &dashboard, Headers::new()))
}
