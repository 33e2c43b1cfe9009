//! Structured logs: one JSON line per event, readable with `wrangler tail` and in Workers
//! Logs (`[observability]`).

use serde::Serialize;
use shared::tagging::outcome::Outcome;
use shared::{ImageId, TagError};

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

/// What became of one delivery of one message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageLine<'a> {
    pub event: &'static str,
    pub queue: &'a str,
    pub message_id: String,
    pub image_id: Option<ImageId>,
    pub outcome: Outcome,
    pub attempt: u32,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
}

impl<'a> MessageLine<'a> {
    /// A line for a message of `queue`.
    pub fn new(queue: &'a str, message_id: String, attempt: u32, started_ms: f64) -> Self {
        Self {
            event: shared::wire::log_event::MESSAGE,
            queue,
            message_id,
            image_id: None,
            outcome: Outcome::Done,
            attempt,
            duration_ms: worker::js_sys::Date::now() - started_ms,
            error_code: None,
            error: None,
            delay_seconds: None,
        }
    }

    /// Sets the outcome, and the error it came with, if any.
    pub fn outcome(mut self, outcome: Outcome, error: Option<&TagError>) -> Self {
        self.outcome = outcome;
        self.error_code = error.map(TagError::code);
        self.error = error.map(TagError::message);
        self
    }

    /// Writes the line; a misconfigured AI is an error-level line, for alerting.
    pub fn emit(self) {
        let error = self.error_code == Some("ai_misconfigured");
        emit(&self, error);
    }
}
