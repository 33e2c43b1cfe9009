//! Reading an uploaded image from R2. The bytes stay in a JavaScript `ArrayBuffer`; Rust
//! reads them through [`JsBytes`], a slice at a time, so a large photo never sits whole in
//! wasm memory (which grows but never shrinks).

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use shared::wire::config::binding;
use shared::TagError;
use worker::js_sys::{ArrayBuffer, Uint8Array};
use worker::wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, ResponseBody};

use crate::store::OrStorage;

/// An object's bytes, in JavaScript memory.
pub struct JsBytes {
    buffer: ArrayBuffer,
    len: u64,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
}

/// How much is copied into wasm at a time.
const WINDOW: u64 = 64 * 1024;

impl JsBytes {
    fn new(buffer: ArrayBuffer) -> Self {
        let len = u64::from(buffer.byte_length());
        Self {
            buffer,
            len,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// The bytes as a JS `Uint8Array` (no copy).
    pub fn as_js(&self) -> Uint8Array {
        Uint8Array::new(&self.buffer)
    }

    /// Copies `[start, start + len)` into `out` (clamped to the end).
    pub fn copy_range(&self, start: u64, out: &mut Vec<u8>, len: u64) {
        let start = start.min(self.len);
        let end = start.saturating_add(len).min(self.len);
        out.resize((end - start) as usize, 0);
        Uint8Array::new_with_byte_offset_and_length(
            &self.buffer,
            start as u32,
            (end - start) as u32,
        )
        .copy_to(out);
    }
}

impl BufRead for JsBytes {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let in_window = self.pos >= self.window_start
            && self.pos < self.window_start + self.window.len() as u64;
        if !in_window && self.pos < self.len {
            let mut window = std::mem::take(&mut self.window);
            self.copy_range(self.pos, &mut window, WINDOW);
            self.window = window;
            self.window_start = self.pos;
        }
        if self.pos >= self.len {
            return Ok(&[]);
        }
        let offset = (self.pos - self.window_start) as usize;
        Ok(&self.window[offset..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount as u64).min(self.len);
    }
}

impl Read for JsBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl Seek for JsBytes {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?
            .min(self.len);
        Ok(self.pos)
    }
}

/// Reads an image's object; `Err(ObjectMissing)` if it is gone.
pub async fn read(env: &Env, key: &str) -> Result<JsBytes, TagError> {
    let bucket = env
        .bucket(binding::IMAGE_BUCKET)
        .or_storage("IMAGE_BUCKET binding")?;
    let object = bucket
        .get(key)
        .execute()
        .await
        .or_storage("R2 get")?
        .ok_or(TagError::ObjectMissing)?;
    let stream = match object.body().map(|b| b.response_body()) {
        Some(Ok(ResponseBody::Stream(stream))) => stream,
        _ => return Err(TagError::Storage(format!("R2 object {key} has no body"))),
    };
    let js = |e: JsValue| TagError::Storage(format!("R2 read {key}: {e:?}"));
    let response =
        worker::web_sys::Response::new_with_opt_readable_stream(Some(&stream)).map_err(js)?;
    let buffer = JsFuture::from(response.array_buffer().map_err(js)?)
        .await
        .map_err(js)?;
    Ok(JsBytes::new(buffer.into()))
}

/// Whether an object exists (without reading it).
pub async fn exists(env: &Env, key: &str) -> Result<bool, TagError> {
    let bucket = env
        .bucket(binding::IMAGE_BUCKET)
        .or_storage("IMAGE_BUCKET binding")?;
    Ok(bucket.head(key).await.or_storage("R2 head")?.is_some())
}
