//! Bindings to the JS `MessageBatch` and `Message` of the Queues consumer API.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

#[wasm_bindgen(wasm_bindgen = ::worker::wasm_bindgen, js_sys = ::worker::js_sys)]
extern "C" {
    /// A batch of messages from one queue.
    #[wasm_bindgen(extends = ::worker::js_sys::Object)]
    pub type QueueBatch;

    /// The queue's name.
    #[wasm_bindgen(method, getter)]
    pub fn queue(this: &QueueBatch) -> String;

    /// The messages of the batch.
    #[wasm_bindgen(method, getter)]
    pub fn messages(this: &QueueBatch) -> Vec<QueueMessage>;

    /// One delivery of one message.
    #[wasm_bindgen(extends = ::worker::js_sys::Object)]
    pub type QueueMessage;

    /// The system-generated message id.
    #[wasm_bindgen(method, getter)]
    pub fn id(this: &QueueMessage) -> String;

    /// The body, as sent.
    #[wasm_bindgen(method, getter)]
    pub fn body(this: &QueueMessage) -> JsValue;

    /// How many times this message has been delivered, this delivery included (from 1).
    #[wasm_bindgen(method, getter)]
    pub fn attempts(this: &QueueMessage) -> f64;

    /// Marks the message done.
    #[wasm_bindgen(method, catch)]
    pub fn ack(this: &QueueMessage) -> Result<(), JsValue>;

    /// Marks the message for another delivery, with `{ delaySeconds }`.
    #[wasm_bindgen(method, catch)]
    pub fn retry(this: &QueueMessage, options: &JsValue) -> Result<(), JsValue>;
}

impl QueueMessage {
    /// The body as JSON text, whatever content type it was sent with.
    pub fn body_json(&self) -> String {
        let body = self.body();
        match body.as_string() {
            // A text body is passed on as-is, so that JSON sent as text still decodes.
            Some(text) => text,
            None => ::worker::js_sys::JSON::stringify(&body)
                .ok()
                .and_then(|s| s.as_string())
                .unwrap_or_default(),
        }
    }

    /// The delivery attempt, from 1; 1 if the runtime does not say.
    pub fn attempt(&self) -> u32 {
        let attempts = self.attempts();
        if attempts.is_finite() && attempts >= 1.0 {
            attempts as u32
        } else {
            1
        }
    }
}
