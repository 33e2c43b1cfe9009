//! Names both workers and the wrangler configs agree on: bindings, queues, vars and their
//! defaults. This is the one place they are written; `local/contract.json` is generated from
//! it for the JavaScript side (see [`crate::wire::contract`]).

/// Binding names, as in `wrangler.upload.toml` and `wrangler.tagger.toml`.
pub mod binding {
    /// R2 bucket holding the uploaded image bytes.
    pub const IMAGE_BUCKET: &str = "IMAGE_BUCKET";
    /// Producer of [`super::queue::IMAGES`]: the upload worker sends, the tagger re-sends.
    pub const IMAGE_QUEUE: &str = "IMAGE_QUEUE";
    /// Producer of [`super::queue::NOTIFICATIONS`], on the tagger.
    pub const NOTIFY_QUEUE: &str = "NOTIFY_QUEUE";
    /// KV namespace: the fast read path of tag records.
    pub const RESULTS_KV: &str = "RESULTS_KV";
    /// D1 database: the system of record.
    pub const DB: &str = "DB";
    /// Workers AI.
    pub const AI: &str = "AI";
    /// Durable Object namespace of the fleet-wide AI pacer.
    pub const AI_PACER: &str = "AI_PACER";
    /// Rate Limiting binding of uploads, counted per client key (`[[ratelimits]]`).
    pub const UPLOAD_LIMITER: &str = "UPLOAD_LIMITER";
    /// Durable Object namespace of live updates: one object per client (owner id), holding
    /// its WebSockets. The class lives in the tagger; the upload worker binds it by
    /// `script_name`.
    pub const LIVE_EVENTS: &str = "LIVE_EVENTS";
}

/// Queue names.
pub mod queue {
    /// Uploaded images waiting to be tagged.
    pub const IMAGES: &str = "image-processing-queue";
    /// Dead letter queue of [`IMAGES`]; the tagger consumes it too.
    pub const IMAGES_DEAD_LETTER: &str = "image-processing-dlq";
    /// Webhook deliveries waiting to be sent.
    pub const NOTIFICATIONS: &str = "notification-queue";

    /// The queue of this list that a deployed queue is: one named exactly so, or so plus an
    /// environment's suffix (`image-processing-queue-staging`: scripts/deploy.mjs names
    /// every resource of a non-production deployment that way). `None` for any other name.
    pub fn of_deployed(name: &str) -> Option<&'static str> {
        [IMAGES, IMAGES_DEAD_LETTER, NOTIFICATIONS]
            .into_iter()
            .filter(|q| {
                name.strip_prefix(q)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
            .max_by_key(|q| q.len())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn deployed_names_map_to_their_queue() {
            assert_eq!(of_deployed(IMAGES), Some(IMAGES));
            assert_eq!(of_deployed("image-processing-queue-staging"), Some(IMAGES));
            assert_eq!(
                of_deployed("image-processing-dlq-staging"),
                Some(IMAGES_DEAD_LETTER)
            );
            assert_eq!(of_deployed("notification-queue-pr-12"), Some(NOTIFICATIONS));
            assert_eq!(of_deployed("image-processing-queuex"), None);
            assert_eq!(of_deployed("other-queue"), None);
            assert_eq!(of_deployed(""), None);
        }
    }
}

/// The D1 database's name (`database_name` in both wrangler configs).
pub const DATABASE_NAME: &str = "image-tagger";
/// The class of the Durable Object behind [`binding::AI_PACER`].
pub const AI_PACER_CLASS: &str = "AiPacer";
/// The class of the Durable Object behind [`binding::LIVE_EVENTS`].
pub const LIVE_EVENTS_CLASS: &str = "LiveEvents";
/// Routes of live updates (`shared::api::Route::Events`, `Route::EventsTicket`).
pub mod live_route {
    /// The WebSocket.
    pub const EVENTS: &str = "/events";
    /// `POST`: a ticket to open it from a browser.
    pub const TICKET: &str = "/events/ticket";
}
/// The classifier the tagger runs.
pub const MODEL: &str = "@cf/microsoft/resnet-50";

/// A var or secret that a worker reads, with its typed default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var<T: 'static> {
    pub name: &'static str,
    /// `None`: unset by default (a feature that is off, or a secret).
    pub default: Option<T>,
    /// One line for humans.
    pub doc: &'static str,
}

impl<T: Copy + std::str::FromStr> Var<T> {
    /// The var's value: `raw` when it parses, else the default. Unset, empty and malformed
    /// values all fall back, so that a typo in a config never takes a worker down.
    pub fn parse(&self, raw: Option<&str>) -> Option<T> {
        raw.map(str::trim)
            .filter(|v| !v.is_empty())
            .and_then(|v| v.parse().ok())
            .or(self.default)
    }

    /// [`Var::parse`] for a var that has a default (every such var does; see the tests).
    pub fn value(&self, raw: Option<&str>) -> T
    where
        T: Default,
    {
        self.parse(raw).unwrap_or_default()
    }
}

impl Var<&'static str> {
    /// A text var's value: `raw` as given (trimmed), else the default, else empty.
    pub fn text(&self, raw: Option<&str>) -> String {
        raw.map(str::trim)
            .or(self.default)
            .unwrap_or_default()
            .to_string()
    }
}

/// Where vars come from: the worker's `env`, or a map in tests.
pub trait Vars {
    /// The raw value of a var or secret, if set.
    fn raw(&self, name: &str) -> Option<String>;

    /// A var's value, or its default.
    fn get<T: Copy + std::str::FromStr + Default>(&self, var: Var<T>) -> T {
        var.value(self.raw(var.name).as_deref())
    }

    /// A var that is unset by default.
    fn get_opt<T: Copy + std::str::FromStr>(&self, var: Var<T>) -> Option<T> {
        var.parse(self.raw(var.name).as_deref())
    }

    /// A text var, trimmed, or its default.
    fn text(&self, var: Var<&'static str>) -> String {
        var.text(self.raw(var.name).as_deref())
    }
}

macro_rules! vars {
    ($($ident:ident: $ty:ty = $default:expr, $doc:literal;)*) => {
        $( #[doc = $doc] pub const $ident: Var<$ty> = Var {
            name: stringify!($ident), default: $default, doc: $doc,
        }; )*
        /// Every var and secret either worker reads: name, default as text, doc.
        pub fn all_vars() -> Vec<(&'static str, Option<String>, &'static str)> {
            vec![$(($ident.name, $ident.default.map(|d| d.to_string()), $ident.doc)),*]
        }
    };
}

vars! {
    MAX_UPLOAD_BYTES: u64 = Some(10 * 1024 * 1024), "Largest accepted upload, in bytes.";
    ALLOWED_ORIGINS: &str = Some(""), "Origins CORS allows: `*` or a comma-separated list; empty disables CORS.";
    API_TOKEN: &str = None, "Secret: the operator key. Every API request needs it or a client key (`Authorization: Bearer ...`); unset, the API is closed.";
    MAX_PIXELS: u64 = Some(50_000_000), "Largest accepted image, in pixels (width × height).";
    MIN_SCORE: f64 = Some(0.8), "Labels must score strictly above this to become tags.";
    RETRY_BASE_SECONDS: u32 = Some(2), "First retry delay after a transient error; it doubles per attempt.";
    RETRY_MAX_SECONDS: u32 = Some(300), "Cap of the retry delay.";
    MAX_RETRIES: u32 = Some(10), "The image queue consumer's `max_retries`; keep the two equal.";
    CONCURRENCY: usize = Some(10), "Messages of one batch processed at once.";
    GIVE_UP_AFTER_SECONDS: u64 = Some(24 * 60 * 60), "Transient errors are retried until this long after upload.";
    AI_REQUESTS_PER_SECOND: f64 = Some(50.0), "Fleet-wide rate of Workers AI calls (the account's limit).";
    AI_COOLDOWN_MAX_SECONDS: u64 = Some(30), "Longest fleet-wide pause of AI calls after the AI refuses one.";
    AI_DAILY_BUDGET: u64 = None, "Most Workers AI calls per UTC day; unset means no limit.";
    AI_INPUT_EDGE: u32 = Some(512), "The image sent to the model has its shorter side at most this, in pixels.";
    BYTES_IN_FLIGHT: u64 = Some(16 * 1024 * 1024), "Most image bytes one tagger isolate reads and shrinks at once, shared by every batch it runs.";
    STUCK_AFTER_SECONDS: u64 = Some(15 * 60), "The reconciler re-enqueues images overdue by this long (counted from when their message was sent).";
    LEASE_SECONDS: u64 = Some(120), "How long a tagger holds an image it is working on.";
    RETENTION_DAYS: u32 = None, "When set (from 1), finished images older than this many days are deleted by the reconciler; below 1 it is a logged configuration error and retention stays off.";
    CURSOR_SECRET: &str = None, "Secret: the HMAC key of search cursors; unset, it is derived from `API_TOKEN` (or public on an open API).";
    WEBHOOK_URL: &str = None, "Upload worker: the callback URL of uploads without a `Callback-Url` header; unset: none.";
    ALLOW_INSECURE_CALLBACKS: bool = Some(false), "Both workers (same value), local runs only: `true` accepts plain-http callbacks to `localhost` and `127.0.0.1`.";
    WEBHOOK_ALLOWED_HOSTS: &str = Some(""), "Both workers (same value; the tagger checks each stored URL again before delivering): when set, the only hosts callbacks may name, comma-separated (`*.example.com` for subdomains, `host:port` for an https port other than 443).";
    WEBHOOK_SECRET: &str = None, "Tagger secret, `whsec_` + base64: the key webhooks are signed with. Without it deliveries wait and retry.";
    WEBHOOK_SECRET_PREVIOUS: &str = None, "Tagger secret, during a rotation only: the previous key; deliveries then carry both signatures.";
    WEBHOOK_RETRY_BASE_SECONDS: u32 = Some(30), "First wait after a failed webhook delivery; it doubles per attempt (with jitter), up to 1 h.";
    WEBHOOK_GIVE_UP_AFTER_SECONDS: u64 = Some(24 * 60 * 60), "Failed webhook deliveries are retried until this long after the event, then recorded as failed.";
    ALLOW_ANONYMOUS: bool = Some(false), "Upload worker, local runs and demos only, never in production: `true` opens an API without `API_TOKEN` to anonymous callers.";
    UPLOAD_RATE_PERIOD_SECONDS: u64 = Some(60), "The `period` of the `UPLOAD_LIMITER` rate limit (keep the two equal): the `Retry-After` of a `429 rate_limited`.";
}

/// A yes/no var: `true`, `1` or `yes` (any case) is yes; anything else, or unset, is no.
pub fn flag(raw: Option<&str>) -> bool {
    raw.map(str::trim).is_some_and(|v| {
        ["true", "1", "yes"]
            .iter()
            .any(|y| v.eq_ignore_ascii_case(y))
    })
}

/// `MIN_SCORE`, checked: a finite number in `[0, 1]`, else the default.
pub fn min_score(raw: Option<&str>) -> f64 {
    let default = 0.8;
    match MIN_SCORE.parse(raw) {
        Some(s) if s.is_finite() && (0.0..=1.0).contains(&s) => s,
        _ => default,
    }
}

/// `RETENTION_DAYS`, checked: unset or empty is `Ok(None)` (retention is off); a whole
/// number of days from 1 is `Ok(Some(days))`. Anything else (`0`, a negative or fractional
/// number, text) is a configuration error, never a default: retention then stays off, and
/// the reconciler logs the error on every run. (`0` would delete every finished image.)
pub fn retention_days(raw: Option<&str>) -> Result<Option<u32>, String> {
    let Some(value) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.parse::<u32>() {
        Ok(days) if days >= 1 => Ok(Some(days)),
        _ => Err(format!(
            "{} must be a whole number of days from 1, not {value:?}; retention is off",
            RETENTION_DAYS.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_days_below_one_are_a_configuration_error() {
        assert_eq!(retention_days(None), Ok(None));
        assert_eq!(retention_days(Some(" ")), Ok(None));
        assert_eq!(retention_days(Some("1")), Ok(Some(1)));
        assert_eq!(retention_days(Some(" 30 ")), Ok(Some(30)));
        for bad in ["0", "-1", "1.5", "seven", "99999999999"] {
            let error = retention_days(Some(bad)).unwrap_err();
            assert!(error.contains("RETENTION_DAYS"), "{error}");
        }
    }

    #[test]
    fn vars_fall_back_to_defaults() {
        assert_eq!(MAX_RETRIES.parse(None), Some(10));
        assert_eq!(MAX_RETRIES.parse(Some("")), Some(10));
        assert_eq!(MAX_RETRIES.parse(Some(" 12 ")), Some(12));
        assert_eq!(MAX_RETRIES.parse(Some("-1")), Some(10));
        assert_eq!(AI_DAILY_BUDGET.parse(None), None);
        assert_eq!(AI_DAILY_BUDGET.parse(Some("3")), Some(3));
        assert_eq!(min_score(Some("0.5")), 0.5);
        assert_eq!(min_score(Some("1.5")), 0.8);
        assert_eq!(min_score(Some("NaN")), 0.8);
        assert_eq!(min_score(None), 0.8);
        assert_eq!(ALLOWED_ORIGINS.text(None), "");
        assert_eq!(ALLOWED_ORIGINS.text(Some(" * ")), "*");
        assert!(flag(Some("true")) && flag(Some(" TRUE ")) && flag(Some("1")));
        assert!(!flag(None) && !flag(Some("")) && !flag(Some("false")) && !flag(Some("no")));
        assert_eq!(WEBHOOK_RETRY_BASE_SECONDS.parse(None), Some(30));
        assert_eq!(WEBHOOK_GIVE_UP_AFTER_SECONDS.parse(Some("5")), Some(5));
        assert_eq!(WEBHOOK_URL.default, None);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = all_vars().into_iter().map(|v| v.0).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
