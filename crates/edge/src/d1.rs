//! D1 statements: bound, run and read, every failure mapped to the caller's error type
//! ([`PlatformError`]) with what failed. The SQL itself comes from `shared::storage`.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use shared::wire::config::binding;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, D1Result, Env};

use crate::fail::PlatformError;

/// A number parameter.
pub fn n(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}

/// A text parameter.
pub fn s(value: &str) -> JsValue {
    JsValue::from_str(value)
}

/// The `DB` binding, failing as `E`.
pub struct Db<E> {
    db: D1Database,
    error: PhantomData<E>,
}

impl<E: PlatformError> Db<E> {
    /// Wraps an opened database.
    pub fn new(db: D1Database) -> Self {
        Self {
            db,
            error: PhantomData,
        }
    }

    /// Opens the `DB` binding.
    pub fn open(env: &Env) -> Result<Self, E> {
        let db = crate::binding::<D1Database>(env, binding::DB)
            .map_err(|e| E::platform("DB binding", e))?;
        Ok(Self::new(db))
    }

    /// `sql` with its parameters bound.
    pub fn statement(&self, sql: &str, params: &[JsValue]) -> Result<D1PreparedStatement, E> {
        self.db
            .prepare(sql)
            .bind(params)
            .map_err(|e| E::platform("D1 bind", e))
    }

    /// Runs one statement; `what` names it in the error.
    pub async fn run(&self, what: &str, sql: &str, params: &[JsValue]) -> Result<(), E> {
        self.statement(sql, params)?
            .run()
            .await
            .map(drop)
            .map_err(|e| E::platform(what, e))
    }

    /// The first row of one statement, if any.
    pub async fn first<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        params: &[JsValue],
    ) -> Result<Option<T>, E> {
        self.statement(sql, params)?
            .first::<T>(None)
            .await
            .map_err(|e| E::platform(what, e))
    }

    /// Every row of one statement.
    pub async fn all<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        params: &[JsValue],
    ) -> Result<Vec<T>, E> {
        self.statement(sql, params)?
            .all()
            .await
            .and_then(|r| r.results::<T>())
            .map_err(|e| E::platform(what, e))
    }

    /// Runs statements in one transaction.
    pub async fn batch(
        &self,
        what: &str,
        statements: Vec<D1PreparedStatement>,
    ) -> Result<Vec<D1Result>, E> {
        self.db
            .batch(statements)
            .await
            .map_err(|e| E::platform(what, e))
    }
}
