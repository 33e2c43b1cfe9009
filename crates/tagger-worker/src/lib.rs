//! The tagger worker: consumes `image-processing-queue` (and its dead letter queue), paces
//! Workers AI fleet-wide with the [`pacer::AiPacer`] Durable Object, records each image in
//! D1 and KV, delivers webhooks from `notification-queue` ([`notify`]), and reconciles stuck
//! images and deliveries on a cron.
//!
//! The queue handler is exported by hand rather than through `#[event(queue)]`: the macro's
//! message type hides the JS message, and with it the delivery `attempts` count that the
//! retry policy needs (workers-rs issue 1057). [`queue_api`] binds the few members used.

mod classify;
mod consumer;
mod live;
mod log;
mod notify;
mod pacer;
mod queue_api;
mod r2;
mod reconcile;
mod retention;
mod settings;
mod store;

pub use live::LiveEvents;
pub use pacer::AiPacer;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{event, Env, ScheduleContext, ScheduledEvent};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The queue entry point the runtime calls with each batch. It never fails: every message
/// is acked or retried on its own.
#[wasm_bindgen(
    wasm_bindgen = ::worker::wasm_bindgen,
    wasm_bindgen_futures = ::worker::wasm_bindgen_futures,
    js_sys = ::worker::js_sys
)]
pub async fn queue(
    batch: queue_api::QueueBatch,
    env: Env,
    _ctx: JsValue,
) -> Result<JsValue, JsValue> {
    consumer::consume(batch, &env).await;
    Ok(JsValue::UNDEFINED)
}

/// The reconciler's cron.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let now = event.schedule() as u64;
    let minute = ((now / 60_000) % 60) as u32;
    reconcile::run(&env, now, minute).await;
}
