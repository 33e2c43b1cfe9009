//! Turning an object into labels: the image is normalised for the model in Rust (decoded,
//! downscaled, re-encoded as a small JPEG), then sent to Workers AI.

use serde::Serialize;
use shared::wire::config::{binding, MODEL};
use shared::{Label, TagError};
use worker::js_sys::{Array, Uint8Array};
use worker::Env;

use imaging::{normalise, Limits, Normalised};

use crate::r2::JsBytes;
use crate::settings::Settings;

/// What the model is sent.
pub enum ModelInput {
    /// The original bytes: already small enough (a JPEG or PNG within the edge, under
    /// 256 KiB).
    Original(JsBytes),
    /// A smaller re-encoding (a JPEG with its shorter side at most `AI_INPUT_EDGE`); the
    /// original is dropped.
    Normalised(Vec<u8>),
}

/// Decides what to send the model: the original if it is a small JPEG or PNG within the edge,
/// else a downscaled JPEG. Decoding reads the object from JS memory a window at a time, checks
/// the pixel count from the header first, and never holds a full-size copy of a large photo.
pub fn prepare(mut bytes: JsBytes, settings: &Settings) -> Result<ModelInput, TagError> {
    let limits = Limits {
        max_pixels: settings.max_pixels,
        edge: settings.ai_input_edge,
        ..Limits::default()
    };
    let len = bytes.size();
    Ok(match normalise(&mut bytes, len, &limits)? {
        Normalised::Unchanged(_) => ModelInput::Original(bytes),
        Normalised::Jpeg { bytes, .. } => ModelInput::Normalised(bytes),
    })
}

/// The Workers AI input: the image as an array of byte values (the documented input of
/// `@cf/microsoft/resnet-50`).
#[derive(Serialize)]
struct AiInput {
    #[serde(with = "serde_wasm_bindgen::preserve")]
    image: Array,
}

/// Runs the classifier.
pub async fn run(env: &Env, input: &ModelInput) -> Result<Vec<Label>, TagError> {
    let ai = env
        .ai(binding::AI)
        .map_err(|e| TagError::AiMisconfigured(format!("AI binding: {e}")))?;
    let image = match input {
        ModelInput::Original(bytes) => Array::from(&bytes.as_js()),
        ModelInput::Normalised(jpeg) => Array::from(&Uint8Array::from(jpeg.as_slice())),
    };
    ai.run::<_, Vec<Label>>(MODEL, AiInput { image })
        .await
        .map_err(|e| TagError::from_ai_error(&ai_message(&e)))
}

/// The message of a Workers AI error in the shape the binding throws it: `Name: message`.
fn ai_message(error: &worker::Error) -> String {
    match error {
        worker::Error::UnknownJsError { name, message, .. } => {
            format!("{}: {message}", name.as_deref().unwrap_or("Error"))
        }
        other => other.to_string(),
    }
}
