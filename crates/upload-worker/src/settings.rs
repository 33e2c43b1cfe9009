//! The upload worker's settings: read from vars and secrets once per isolate.

use std::rc::Rc;

use edge::vars::EnvVars;
use shared::webhook::url::{CallbackPolicy, CallbackUrl, UrlError};
use shared::wire::config::{self, Vars};
use worker::Env;

/// Everything the upload worker reads from its vars and secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_upload_bytes: u64,
    pub max_pixels: u64,
    /// The operator key; `None`: the API is closed, unless `allow_anonymous`.
    pub api_token: Option<String>,
    /// `ALLOW_ANONYMOUS`: without an operator key, anonymous callers act as one client.
    pub allow_anonymous: bool,
    /// `UPLOAD_RATE_PERIOD_SECONDS`: the `Retry-After` of a `429 rate_limited`.
    pub upload_rate_period: u64,
    pub allowed_origins: String,
    /// What callback URLs may name (`ALLOW_INSECURE_CALLBACKS`, `WEBHOOK_ALLOWED_HOSTS`).
    pub callback_policy: CallbackPolicy,
    /// `WEBHOOK_URL`, checked like a `Callback-Url` header; `None` when unset.
    pub default_callback: Option<Result<CallbackUrl, UrlError>>,
    /// Key of search cursors; `None`: derived from `api_token` (see `cursor_mac`).
    pub cursor_secret: Option<String>,
    /// `AI_DAILY_BUDGET` (the tagger's; the dashboard shows today's calls against it).
    pub ai_daily_budget: Option<u64>,
}

impl Settings {
    /// The settings of this isolate (vars and secrets never change within one).
    pub fn get(env: &Env) -> Rc<Settings> {
        edge::vars::per_isolate(|| Self::read(env))
    }

    fn read(env: &Env) -> Self {
        let vars = EnvVars(env);
        let callback_policy = CallbackPolicy::new(
            config::flag(vars.raw(config::ALLOW_INSECURE_CALLBACKS.name).as_deref()),
            &vars.text(config::WEBHOOK_ALLOWED_HOSTS),
        );
        let default_callback = vars
            .raw(config::WEBHOOK_URL.name)
            .filter(|u| !u.trim().is_empty())
            .map(|u| check_callback(u.trim(), &callback_policy));
        Self {
            max_upload_bytes: vars.get(config::MAX_UPLOAD_BYTES),
            max_pixels: vars.get(config::MAX_PIXELS),
            api_token: vars.raw(config::API_TOKEN.name).filter(|t| !t.is_empty()),
            allow_anonymous: config::flag(vars.raw(config::ALLOW_ANONYMOUS.name).as_deref()),
            upload_rate_period: vars.get(config::UPLOAD_RATE_PERIOD_SECONDS),
            allowed_origins: vars.text(config::ALLOWED_ORIGINS),
            callback_policy,
            default_callback,
            cursor_secret: vars
                .raw(config::CURSOR_SECRET.name)
                .filter(|t| !t.is_empty()),
            ai_daily_budget: vars.get_opt(config::AI_DAILY_BUDGET),
        }
    }
}

/// Checks a callback URL with [`CallbackUrl::parse`], then parses the result with the
/// runtime's own URL parser (the one `fetch` uses), which must read the same host: a second
/// opinion on what the pure check cannot know, such as invalid Punycode.
pub fn check_callback(raw: &str, policy: &CallbackPolicy) -> Result<CallbackUrl, UrlError> {
    let url = CallbackUrl::parse(raw, policy)?;
    match web_sys::Url::new(url.as_str()) {
        Ok(parsed) if parsed.hostname() == url.host() => Ok(url),
        _ => Err(UrlError::Malformed("the host is not a valid domain name")),
    }
}
