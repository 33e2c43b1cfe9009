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
        use ::worker::js_sys::{ArrayBuffer, Uint8Array, JSON};
        use ::worker::wasm_bindgen::JsCast;
        let body = self.body();
        if let Some(text) = body.as_string() {
            // A text body is passed on as-is, so that JSON sent as text still decodes.
            return text;
        }
        // A `bytes` body (an ArrayBuffer) would stringify as `{}`: take its bytes as text,
        // so that JSON sent as bytes decodes and a poison record keeps what was sent.
        let bytes = if body.is_instance_of::<ArrayBuffer>() {
            Some(Uint8Array::new(&body))
        } else if ArrayBuffer::is_view(&body) {
            let view = body.unchecked_ref::<Uint8Array>();
            Some(Uint8Array::new_with_byte_offset_and_length(
                &view.buffer(),
                view.byte_offset(),
                view.byte_length(),
            ))
        } else {
            None
        };
        if let Some(bytes) = bytes {
            return String::from_utf8_lossy(&bytes.to_vec()).into_owned();
        }
        JSON::stringify(&body)
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default()
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
