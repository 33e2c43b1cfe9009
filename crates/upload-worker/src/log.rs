//! Structured logs: one JSON line per event, readable with `wrangler tail` and in Workers
//! Logs (`[observability]`).

use serde::Serialize;

/// Writes one JSON line, as an error when `error` is set.
pub fn emit<T: Serialize>(line: &T, error: bool) {
    let Ok(text) = serde_json::to_string(line) else {
        return;
    };
    if error {
        worker::console_error!("{text}");
    } else {
        worker::console_log!("{text}");
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    event: &'static str,
    level: &'static str,
    code: &'a str,
    detail: &'a str,
}

/// An internal error: a bug or a broken platform.
pub fn error(code: &str, detail: &str) {
    emit(
        &Problem {
            event: shared::wire::log_event::UPLOAD_PROBLEM,
            level: "error",
            code,
            detail,
        },
        true,
    );
}

/// A dependency that failed; the client was told to retry.
pub fn warn(code: &str, detail: &str) {
    emit(
        &Problem {
            event: shared::wire::log_event::UPLOAD_PROBLEM,
            level: "warn",
            code,
            detail,
        },
        false,
    );
}
