//! The tagger worker: consumes `image-processing-queue` (and its dead letter queue),
//! classifies each image with Workers AI and writes the tag record to KV.
//!
//! The queue handler is exported by hand rather than through `#[event(queue)]`: the macro's
//! message type hides the JS message, and with it the delivery `attempts` count that the
//! retry backoff needs (workers-rs issue 1057). [`queue_api`] binds the few members used.

mod consumer;
mod queue_api;
mod tagging;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{event, Env};

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
