//! The one logger of both workers: every line is one JSON object that starts with `event`
//! (a name from `shared::wire::log_event`) and `level`, readable with `wrangler tail` and in
//! Workers Logs (`[observability]`). The only place the `console_*` macros are allowed
//! (clippy's `disallowed-macros`, in the root `clippy.toml`).

use serde::Serialize;

/// How bad it is; also which console method writes the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something happened as it should.
    Info,
    /// A dependency failed or something was skipped; the pipeline carries on.
    Warn,
    /// A bug, a misconfiguration or a broken platform: for alerting.
    Error,
}

impl Level {
    /// The `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// `Error` when `error`, else `Info`.
    pub fn error_if(error: bool) -> Self {
        if error {
            Level::Error
        } else {
            Level::Info
        }
    }
}

/// The line `{"event":…,"level":…, …fields}`; `fields` serializes to an object.
pub fn line<T: Serialize + ?Sized>(level: Level, event: &str, fields: &T) -> Option<String> {
    let event = serde_json::to_string(event).ok()?;
    let body = serde_json::to_string(fields).ok()?;
    let mut out = String::with_capacity(body.len() + event.len() + 24);
    out.push_str("{\"event\":");
    out.push_str(&event);
    out.push_str(",\"level\":\"");
    out.push_str(level.as_str());
    out.push('"');
    match body.strip_prefix('{') {
        Some("}") => out.push('}'),
        Some(rest) => {
            out.push(',');
            out.push_str(rest);
        }
        None => {
            out.push_str(",\"value\":");
            out.push_str(&body);
            out.push('}');
        }
    }
    Some(out)
}

/// Writes one line (see [`line`]) with the console method of its level.
#[allow(clippy::disallowed_macros)]
pub fn emit<T: Serialize + ?Sized>(level: Level, event: &str, fields: &T) {
    let Some(text) = line(level, event, fields) else {
        return;
    };
    match level {
        Level::Info => worker::console_log!("{text}"),
        Level::Warn => worker::console_warn!("{text}"),
        Level::Error => worker::console_error!("{text}"),
    }
}

#[derive(Serialize)]
struct Detail<'a> {
    error: &'a str,
}

/// A line whose only field is `error`, the text of what went wrong.
pub fn problem(level: Level, event: &str, error: &str) {
    emit(level, event, &Detail { error });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_level_come_first() {
        let fields = serde_json::json!({ "imageId": "x" });
        assert_eq!(
            line(Level::Warn, "a.b", &fields).as_deref(),
            Some(r#"{"event":"a.b","level":"warn","imageId":"x"}"#)
        );
        assert_eq!(
            line(Level::Info, "a", &serde_json::json!({})).as_deref(),
            Some(r#"{"event":"a","level":"info"}"#)
        );
        assert_eq!(
            line(Level::Error, "a", "text").as_deref(),
            Some(r#"{"event":"a","level":"error","value":"text"}"#)
        );
    }
}
