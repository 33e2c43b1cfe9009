//! All SQL: the statements both workers run against D1, and the rows they read. The
//! schema is `migrations/`; the native tests run these statements against it in SQLite.

pub mod dashboard;
pub mod dedupe;
pub mod images;
pub mod keys;
pub mod live;
pub mod manage;
pub mod outbox;
#[cfg(test)]
pub(crate) mod testing;
