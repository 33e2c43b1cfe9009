//! The upload worker's problem lines: a request that failed, logged with its detail (the
//! client gets only a code), as `upload.problem` through the one logger ([`edge::log`]).

use edge::log::{self, Level};
use serde::Serialize;
use shared::wire::log_event;

#[derive(Serialize)]
struct Problem<'a> {
    code: &'a str,
    detail: &'a str,
}

fn emit(level: Level, code: &str, detail: &str) {
    log::emit(level, log_event::UPLOAD_PROBLEM, &Problem { code, detail });
}

/// An internal error: a bug or a broken platform.
pub fn error(code: &str, detail: &str) {
    emit(Level::Error, code, detail);
}

/// A dependency that failed; the client was told to retry, or the work goes on without it.
pub fn warn(code: &str, detail: &str) {
    emit(Level::Warn, code, detail);
}
