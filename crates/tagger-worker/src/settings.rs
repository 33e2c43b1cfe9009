//! The tagger's settings: read from vars once per isolate, then shared by every batch, the
//! cron and the Durable Object.

use std::rc::Rc;

use shared::tagging::pacer::PacerConfig;
use shared::tagging::retry::{Backoff, Policy};
use shared::webhook::retry::RetryPolicy;
use shared::webhook::sign::parse_secret;
use shared::webhook::url::CallbackPolicy;
use shared::wire::config::{self, Vars};
use worker::Env;

/// Everything the tagger reads from its vars.
#[derive(Clone, Debug)]
pub struct Settings {
    pub min_score: f64,
    pub policy: Policy,
    pub concurrency: usize,
    pub bytes_in_flight: u64,
    pub pacer: PacerConfig,
    pub ai_input_edge: u32,
    pub max_pixels: u64,
    pub stuck_after_ms: u64,
    pub lease_ms: u64,
    /// `RETENTION_DAYS`: `Ok(None)` when unset; an error (logged by the cron, retention
    /// off) for a value below 1 or malformed.
    pub retention_days: Result<Option<u32>, String>,
    /// Webhook deliveries: when to retry and when to give up.
    pub webhook_retry: RetryPolicy,
    /// The keys webhooks are signed with: `WEBHOOK_SECRET`, then `WEBHOOK_SECRET_PREVIOUS`.
    pub webhook_keys: WebhookKeys,
    /// The callback policy of now (`ALLOW_INSECURE_CALLBACKS`, `WEBHOOK_ALLOWED_HOSTS`), which
    /// every stored URL is checked against again before each delivery.
    pub callback_policy: CallbackPolicy,
}

/// The webhook signing keys, or why there are none. Never printed.
#[derive(Clone)]
pub struct WebhookKeys(pub Result<Vec<Vec<u8>>, String>);

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(keys) => write!(f, "WebhookKeys({} keys)", keys.len()),
            Err(e) => write!(f, "WebhookKeys(unusable: {e})"),
        }
    }
}

impl WebhookKeys {
    /// The current secret (required) and the previous one (optional, during a rotation).
    /// A malformed secret makes deliveries wait rather than go out with fewer signatures.
    fn read(vars: &EnvVars) -> Self {
        let current = vars
            .raw(config::WEBHOOK_SECRET.name)
            .filter(|s| !s.trim().is_empty());
        let previous = vars
            .raw(config::WEBHOOK_SECRET_PREVIOUS.name)
            .filter(|s| !s.trim().is_empty());
        let Some(current) = current else {
            return Self(Err("WEBHOOK_SECRET is not set".into()));
        };
        let mut keys = Vec::with_capacity(2);
        for (name, raw) in [
            (config::WEBHOOK_SECRET.name, Some(current)),
            (config::WEBHOOK_SECRET_PREVIOUS.name, previous),
        ] {
            if let Some(raw) = raw {
                match parse_secret(&raw) {
                    Ok(key) => keys.push(key),
                    Err(e) => return Self(Err(format!("{name}: {e}"))),
                }
            }
        }
        Self(Ok(keys))
    }
}

thread_local! {
    static SETTINGS: std::cell::OnceCell<Rc<Settings>> = const { std::cell::OnceCell::new() };
}

impl Settings {
    /// The settings of this isolate (vars never change within one).
    pub fn get(env: &Env) -> Rc<Settings> {
        SETTINGS.with(|cell| cell.get_or_init(|| Rc::new(Self::read(env))).clone())
    }

    fn read(env: &Env) -> Self {
        let vars = EnvVars(env);
        let ms = |seconds: u64| seconds.saturating_mul(1000);
        Self {
            min_score: config::min_score(vars.raw(config::MIN_SCORE.name).as_deref()),
            policy: Policy {
                backoff: Backoff {
                    base_seconds: vars.get(config::RETRY_BASE_SECONDS),
                    max_seconds: vars.get(config::RETRY_MAX_SECONDS),
                },
                max_retries: vars.get(config::MAX_RETRIES),
                give_up_after_ms: ms(vars.get(config::GIVE_UP_AFTER_SECONDS)),
            },
            concurrency: vars.get(config::CONCURRENCY).max(1),
            bytes_in_flight: vars.get(config::BYTES_IN_FLIGHT),
            pacer: PacerConfig::new(
                vars.get(config::AI_REQUESTS_PER_SECOND),
                vars.get_opt(config::AI_DAILY_BUDGET),
                ms(vars.get(config::AI_COOLDOWN_MAX_SECONDS)),
            ),
            ai_input_edge: vars.get(config::AI_INPUT_EDGE).max(1),
            max_pixels: vars.get(config::MAX_PIXELS),
            stuck_after_ms: ms(vars.get(config::STUCK_AFTER_SECONDS)),
            lease_ms: ms(vars.get(config::LEASE_SECONDS)).max(1000),
            retention_days: config::retention_days(
                vars.raw(config::RETENTION_DAYS.name).as_deref(),
            ),
            webhook_retry: RetryPolicy {
                base_seconds: vars.get(config::WEBHOOK_RETRY_BASE_SECONDS).max(1),
                give_up_after_ms: ms(vars.get(config::WEBHOOK_GIVE_UP_AFTER_SECONDS)),
            },
            webhook_keys: WebhookKeys::read(&vars),
            callback_policy: CallbackPolicy::new(
                config::flag(vars.raw(config::ALLOW_INSECURE_CALLBACKS.name).as_deref()),
                &vars.text(config::WEBHOOK_ALLOWED_HOSTS),
            ),
        }
    }
}

/// The worker's vars and secrets.
pub struct EnvVars<'a>(pub &'a Env);

impl Vars for EnvVars<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|v| v.to_string())
    }
}
