//! The fleet-wide AI pacer: a Durable Object holding one [`shared::tagging::pacer::Pacer`], and the
//! client the consumer uses to talk to it. Every tagger invocation asks the same object
//! (named [`OBJECT_NAME`]) before calling Workers AI, so the account's rate, the daily budget
//! and the back-off after a refusal hold across the whole fleet.

use std::cell::RefCell;

use serde::Deserialize;
use shared::tagging::pacer::{Ask, Grant, Pacer, Usage, OBJECT_NAME};
use shared::wire::config::binding;
use worker::{
    durable_object, js_sys, DurableObject, Env, Method, Request, RequestInit, Response, Result,
    State, Stub,
};

use crate::settings::Settings;

/// Storage key of the day's usage.
const USAGE_KEY: &str = "usage";

#[durable_object]
pub struct AiPacer {
    state: State,
    env: Env,
    pacer: RefCell<Option<Pacer>>,
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl AiPacer {
    /// The pacer, loaded from storage on first use.
    async fn loaded(&self) -> Result<()> {
        if self.pacer.borrow().is_some() {
            return Ok(());
        }
        let settings = Settings::get(&self.env);
        let mut pacer = Pacer::new(&settings.pacer, now_ms());
        if let Some(saved) = self.state.storage().get::<Pacer>(USAGE_KEY).await? {
            if saved.day == pacer.day {
                pacer.used_today = saved.used_today;
            }
        }
        self.pacer.borrow_mut().get_or_insert(pacer);
        Ok(())
    }

    async fn save(&self) -> Result<()> {
        let saved = self.pacer.borrow().clone();
        if let Some(pacer) = saved {
            self.state.storage().put(USAGE_KEY, pacer).await?;
        }
        Ok(())
    }

    /// Runs `f` on the loaded pacer at the current time.
    fn with<T>(&self, f: impl FnOnce(&mut Pacer, u64) -> T) -> Option<T> {
        self.pacer.borrow_mut().as_mut().map(|p| f(p, now_ms()))
    }
}

impl DurableObject for AiPacer {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            pacer: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let ask: Ask = req.json().await?;
        self.loaded().await?;
        let config = Settings::get(&self.env).pacer;
        if let Ask::Usage = ask {
            return Response::from_json(&self.with(|p, now| p.usage(&config, now)));
        }
        let grant = self.with(|p, now| p.answer(&config, now, ask));
        if grant.as_ref().is_some_and(|g| g.granted > 0)
            || matches!(ask, Ask::Settle { unused, .. } if unused > 0)
        {
            self.save().await?;
        }
        Response::from_json(&grant)
    }
}

/// A consumer's handle on the pacer.
pub struct PacerClient {
    stub: Stub,
}

impl PacerClient {
    /// The fleet's pacer.
    pub fn open(env: &Env) -> Result<Self> {
        let stub = env
            .durable_object(binding::AI_PACER)?
            .get_by_name(OBJECT_NAME)?;
        Ok(Self { stub })
    }

    async fn ask<T: for<'de> Deserialize<'de>>(&self, ask: &Ask) -> Result<T> {
        let init = RequestInit {
            method: Method::Post,
            body: Some(serde_json::to_string(ask)?.into()),
            ..RequestInit::default()
        };
        let req = Request::new_with_init("https://pacer/", &init)?;
        let mut res = self.stub.fetch_with_request(req).await?;
        if res.status_code() != 200 {
            return Err(format!("pacer answered {}", res.status_code()).into());
        }
        res.json().await
    }

    /// Asks for `n` calls.
    pub async fn acquire(&self, n: u32) -> Result<Grant> {
        self.ask(&Ask::Acquire { n }).await
    }

    /// Ends a batch: gives back `unused` calls, and says how many the AI answered.
    pub async fn settle(&self, unused: u32, answered: u32) -> Result<Grant> {
        self.ask(&Ask::Settle { unused, answered }).await
    }

    /// Reports a busy refusal; slots for `n` calls after the back-off.
    pub async fn refused(&self, n: u32) -> Result<Grant> {
        self.ask(&Ask::Refused { n }).await
    }

    /// Reports Workers AI's daily allocation used up; slots tomorrow for `n` calls.
    pub async fn quota(&self, n: u32) -> Result<Grant> {
        self.ask(&Ask::Quota { n }).await
    }

    /// Today's usage.
    pub async fn usage(&self) -> Result<Usage> {
        self.ask(&Ask::Usage).await
    }
}
