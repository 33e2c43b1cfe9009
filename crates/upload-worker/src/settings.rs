//! The upload worker's settings: read from vars and secrets once per isolate.

use std::rc::Rc;

use shared::config::{self, Vars};
use worker::Env;

/// Everything the upload worker reads from its vars and secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_upload_bytes: u64,
    pub max_pixels: u64,
    /// `None` or empty: the API is open.
    pub api_token: Option<String>,
    pub allowed_origins: String,
    /// Key of search cursors; `None`: derived from `api_token` (see `cursor_mac`).
    pub cursor_secret: Option<String>,
}

thread_local! {
    static SETTINGS: std::cell::OnceCell<Rc<Settings>> = const { std::cell::OnceCell::new() };
}

impl Settings {
    /// The settings of this isolate (vars and secrets never change within one).
    pub fn get(env: &Env) -> Rc<Settings> {
        SETTINGS.with(|cell| cell.get_or_init(|| Rc::new(Self::read(env))).clone())
    }

    fn read(env: &Env) -> Self {
        let vars = EnvVars(env);
        Self {
            max_upload_bytes: vars.get(config::MAX_UPLOAD_BYTES),
            max_pixels: vars.get(config::MAX_PIXELS),
            api_token: vars.raw(config::API_TOKEN.name).filter(|t| !t.is_empty()),
            allowed_origins: vars.text(config::ALLOWED_ORIGINS),
            cursor_secret: vars
                .raw(config::CURSOR_SECRET.name)
                .filter(|t| !t.is_empty()),
        }
    }
}

/// The worker's vars and secrets.
struct EnvVars<'a>(&'a Env);

impl Vars for EnvVars<'_> {
    fn raw(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|v| v.to_string())
    }
}
