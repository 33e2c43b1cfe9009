//! Getting an upload's bytes from the request to R2 without copying them into wasm memory.
//!
//! Only the first [`SNIFF_LEN`] bytes are ever copied into Rust, to recognise the format.
//! Everything else stays in JavaScript buffers, streams and blobs:
//! - a body with a `Content-Length` of at most [`BUFFER_LIMIT`] is read whole into an
//!   `ArrayBuffer` and put into R2 in one piece, which costs less than streaming it;
//! - a larger body with a `Content-Length` streams: its first chunks are read to sniff, then
//!   written into a `FixedLengthStream` ahead of the rest of the body, which is piped after
//!   them straight into R2 (no tee, which costs more);
//! - a chunked body is counted chunk by chunk and cut off at the limit, then handed on as a
//!   blob of known size (R2 needs a known length);
//! - a multipart form is parsed by the runtime's `FormData`, and its file handed on the same
//!   way.

use shared::api::ApiError;
use shared::multipart;
use shared::sniff::{check_type, SNIFF_LEN};
use shared::ImageType;
use worker::js_sys::{self, Array, ArrayBuffer, BigInt, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{self, Blob, ReadableStream, ReadableStreamDefaultReader};
use worker::worker_sys::FixedLengthStream;

/// Raw bodies up to this size are buffered (in JS) rather than streamed: memory per request
/// stays bounded by it, whatever the image size.
pub const BUFFER_LIMIT: u64 = 1024 * 1024;

/// A checked upload, ready to be put into R2.
pub struct Upload {
    pub image_type: ImageType,
    pub size: u64,
    pub bytes: Bytes,
}

/// Where an upload's bytes are.
pub enum Bytes {
    /// A stream of exactly `size` bytes, and what feeds it: awaited after the R2 put.
    Stream {
        stream: ReadableStream,
        feeding: JsFuture,
    },
    /// A small body, whole, in JS memory.
    Buffer(ArrayBuffer),
}

/// The request facts the body handling needs.
pub struct BodyInfo<'a> {
    pub content_type: Option<&'a str>,
    /// Checked against the limit already; `None` for a chunked body.
    pub content_length: Option<u64>,
    pub limit: u64,
}

fn js_error(what: &'static str) -> impl FnOnce(JsValue) -> ApiError {
    move |e| ApiError::Internal(format!("{what}: {e:?}"))
}

/// Reads a raw (non-multipart) image body.
pub async fn raw(req: &web_sys::Request, info: &BodyInfo<'_>) -> Result<Upload, ApiError> {
    match info.content_length {
        Some(size) if size <= BUFFER_LIMIT => buffered(req, size, info.content_type).await,
        Some(size) => {
            let body = req.body().ok_or(ApiError::EmptyBody)?;
            streamed(body, size, info.content_type).await
        }
        None => {
            let body = req.body().ok_or(ApiError::EmptyBody)?;
            let blob = collect_limited(&body, info.limit).await?;
            from_blob(&blob, info.content_type).await
        }
    }
}

/// Reads a small body of known size whole into an `ArrayBuffer`, and sniffs it.
async fn buffered(
    req: &web_sys::Request,
    size: u64,
    declared: Option<&str>,
) -> Result<Upload, ApiError> {
    let read = req.array_buffer().map_err(js_error("arrayBuffer"))?;
    let buffer: ArrayBuffer = JsFuture::from(read)
        .await
        .map_err(|_| ApiError::IncompleteBody)?
        .dyn_into()
        .map_err(|_| ApiError::Internal("body is not an ArrayBuffer".into()))?;
    let length = buffer.byte_length();
    if u64::from(length) != size {
        return Err(ApiError::IncompleteBody);
    }
    if length == 0 {
        return Err(ApiError::EmptyBody);
    }
    let head =
        Uint8Array::new_with_byte_offset_and_length(&buffer, 0, length.min(SNIFF_LEN as u32));
    let image_type = check_type(&head.to_vec(), declared)?;
    Ok(Upload {
        image_type,
        size,
        bytes: Bytes::Buffer(buffer),
    })
}

/// Sniffs a body of known size from its first chunks, then streams all of it.
async fn streamed(
    body: ReadableStream,
    size: u64,
    declared: Option<&str>,
) -> Result<Upload, ApiError> {
    let reader = reader_of(&body);
    let mut head = Vec::new();
    let mut prefix = Vec::with_capacity(SNIFF_LEN);
    while prefix.len() < SNIFF_LEN {
        let Some(chunk) = next_chunk(&reader).await? else {
            break;
        };
        let take = (SNIFF_LEN - prefix.len()).min(chunk.length() as usize);
        prefix.extend(chunk.subarray(0, take as u32).to_vec());
        head.push(chunk);
    }
    if prefix.is_empty() {
        return Err(ApiError::EmptyBody);
    }
    let image_type = check_type(&prefix, declared)?;
    // The rest of the body is read by the pipe, from where the reader stopped.
    reader.release_lock();
    let fls = FixedLengthStream::new_big_int(BigInt::from(size))
        .map_err(js_error("FixedLengthStream"))?;
    let writable = fls.writable();
    // Runs on its own, like a pipeTo: the R2 put reads what it writes.
    let feeding = worker::wasm_bindgen_futures::future_to_promise(async move {
        let writer = writable.get_writer()?;
        for chunk in head {
            JsFuture::from(writer.write_with_chunk(&chunk)).await?;
        }
        writer.release_lock();
        JsFuture::from(body.pipe_to(&writable)).await
    });
    Ok(Upload {
        image_type,
        size,
        bytes: Bytes::Stream {
            stream: fls.readable(),
            feeding: JsFuture::from(feeding),
        },
    })
}

/// Reads a `multipart/form-data` body with exactly one file, in field `image` or `file`.
pub async fn multipart(
    body: Option<ReadableStream>,
    info: &BodyInfo<'_>,
) -> Result<Upload, ApiError> {
    let content_type = info.content_type.unwrap_or_default();
    multipart::boundary(content_type)?;
    let body = body.ok_or(ApiError::EmptyBody)?;
    // Count the body against the limit before the runtime parses it.
    let blob = collect_limited(&body, info.limit).await?;
    let form = parse_form(&blob, content_type).await?;
    let mut fields = Vec::new();
    for entry in js_sys::try_iter(&form).ok().flatten().into_iter().flatten() {
        let pair: Array = entry.map_err(js_error("iterate form"))?.unchecked_into();
        let name = pair.get(0).as_string().unwrap_or_default();
        fields.push((name, pair.get(1).is_instance_of::<Blob>()));
    }
    let name = multipart::pick_file_field(fields.iter().map(|(n, f)| (n.as_str(), *f)))?;
    let file: Blob = form
        .get(name)
        .dyn_into()
        .map_err(|_| ApiError::InvalidMultipart("the file part is not a file".into()))?;
    // The part's own type is only a claim, checked like a raw body's Content-Type.
    let declared = file.type_();
    from_blob(&file, Some(declared.as_str()).filter(|t| !t.is_empty())).await
}

/// Sniffs a blob and wraps it as an [`Upload`].
async fn from_blob(blob: &Blob, declared: Option<&str>) -> Result<Upload, ApiError> {
    let size = blob.size() as u64;
    if size == 0 {
        return Err(ApiError::EmptyBody);
    }
    let head = blob
        .slice_with_i32_and_i32(0, SNIFF_LEN as i32)
        .map_err(js_error("slice blob"))?;
    let head = JsFuture::from(head.array_buffer())
        .await
        .map_err(js_error("read blob head"))?;
    let image_type = check_type(&Uint8Array::new(&head).to_vec(), declared)?;
    let (stream, feeding) = fixed_length(&blob.stream(), size)?;
    Ok(Upload {
        image_type,
        size,
        bytes: Bytes::Stream { stream, feeding },
    })
}

/// Pipes `source` through a `FixedLengthStream` of `size` bytes, which R2 accepts and which
/// errors if the source is shorter or longer.
fn fixed_length(
    source: &ReadableStream,
    size: u64,
) -> Result<(ReadableStream, JsFuture), ApiError> {
    let fls = FixedLengthStream::new_big_int(BigInt::from(size))
        .map_err(js_error("FixedLengthStream"))?;
    let feeding = JsFuture::from(source.pipe_to(&fls.writable()));
    Ok((fls.readable(), feeding))
}

/// One chunk from a reader: `None` at the end of the stream.
async fn next_chunk(reader: &ReadableStreamDefaultReader) -> Result<Option<Uint8Array>, ApiError> {
    let result = JsFuture::from(reader.read())
        .await
        .map_err(|_| ApiError::IncompleteBody)?;
    let done = Reflect::get(&result, &"done".into()).map_err(js_error("read result"))?;
    if done.is_truthy() {
        return Ok(None);
    }
    let value = Reflect::get(&result, &"value".into()).map_err(js_error("read result"))?;
    value
        .dyn_into::<Uint8Array>()
        .map(Some)
        .map_err(|_| ApiError::Internal("body chunk is not bytes".into()))
}

fn reader_of(stream: &ReadableStream) -> ReadableStreamDefaultReader {
    stream.get_reader().unchecked_into()
}

/// Gathers a body of unknown length into a blob, failing as soon as it passes `limit`.
async fn collect_limited(stream: &ReadableStream, limit: u64) -> Result<Blob, ApiError> {
    let reader = reader_of(stream);
    let chunks = Array::new();
    let mut total: u64 = 0;
    while let Some(chunk) = next_chunk(&reader).await? {
        total += u64::from(chunk.length());
        if total > limit {
            let _ = reader.cancel();
            return Err(ApiError::PayloadTooLarge { limit });
        }
        chunks.push(&chunk);
    }
    Blob::new_with_u8_array_sequence(&chunks).map_err(js_error("Blob"))
}

/// Parses a buffered multipart body with the runtime's `FormData`.
async fn parse_form(blob: &Blob, content_type: &str) -> Result<web_sys::FormData, ApiError> {
    let headers = web_sys::Headers::new().map_err(js_error("Headers"))?;
    headers
        .set("content-type", content_type)
        .map_err(js_error("Headers"))?;
    let init = web_sys::ResponseInit::new();
    init.set_headers(&headers);
    let response = web_sys::Response::new_with_opt_blob_and_init(Some(blob), &init)
        .map_err(js_error("Response"))?;
    let form = response.form_data().map_err(js_error("formData"))?;
    // The runtime's parser error is logged, not sent: its `Debug` form is an internal
    // detail (the JS exception and its stack), not a message for clients.
    JsFuture::from(form)
        .await
        .map_err(|e| {
            worker::console_log!("malformed multipart body: {e:?}");
            ApiError::InvalidMultipart("malformed multipart body".into())
        })?
        .dyn_into()
        .map_err(|_| ApiError::InvalidMultipart("malformed multipart body".into()))
}

/// What [`store`] stored.
pub struct Stored {
    pub size: u64,
    /// SHA-256 of the bytes, hex, when it was computed.
    pub sha256: Option<String>,
}

/// Puts an upload into R2 under `key`, with its content type and upload time.
pub async fn store(
    bucket: &worker::Bucket,
    key: &str,
    upload: Upload,
    uploaded_at: &str,
) -> Result<Stored, ApiError> {
    let mime = upload.image_type.mime();
    match upload.bytes {
        Bytes::Stream { stream, feeding } => {
            let put = bucket
                .put(key, worker::Data::ReadableStream(stream))
                .http_metadata(worker::HttpMetadata {
                    content_type: Some(mime.into()),
                    ..Default::default()
                })
                .custom_metadata([("uploadedAt".to_string(), uploaded_at.to_string())])
                .execute()
                .await;
            let fed = feeding.await;
            if let Err(e) = put {
                // A body that broke off or did not match its length fails the feed as well.
                return Err(if fed.is_err() {
                    ApiError::IncompleteBody
                } else {
                    ApiError::Unavailable(format!("R2 put {key}: {e}"))
                });
            }
            Ok(Stored {
                size: upload.size,
                sha256: None,
            })
        }
        Bytes::Buffer(buffer) => {
            // Hash first: the put may take the buffer's contents.
            let sha256 = crate::crypto::sha256_hex(&buffer.clone().into()).await.ok();
            put_buffer(bucket, key, &buffer, mime, uploaded_at)
                .await
                .map_err(|e| ApiError::Unavailable(format!("R2 put {key}: {e:?}")))?;
            Ok(Stored {
                size: upload.size,
                sha256,
            })
        }
    }
}

/// Reads a whole body only to hash it (a repeated Idempotency-Key): nothing is stored.
pub async fn digest_only(req: &worker::Request, info: &BodyInfo<'_>) -> Result<String, ApiError> {
    let body = req.inner().body().ok_or(ApiError::EmptyBody)?;
    let blob = collect_limited(&body, info.limit).await?;
    let buffer = JsFuture::from(blob.array_buffer())
        .await
        .map_err(js_error("read body"))?;
    crate::crypto::sha256_hex(&buffer).await
}

#[worker::wasm_bindgen::prelude::wasm_bindgen(
    wasm_bindgen = ::worker::wasm_bindgen,
    js_sys = ::worker::js_sys
)]
extern "C" {
    /// The runtime's R2 bucket, for a put of a JS `ArrayBuffer` (`worker::Bucket::put` would
    /// take it only as bytes copied through wasm).
    #[wasm_bindgen(extends = ::worker::js_sys::Object)]
    type JsBucket;

    #[wasm_bindgen(method, catch, js_name = put)]
    fn put_array_buffer(
        this: &JsBucket,
        key: &str,
        value: &ArrayBuffer,
        options: &js_sys::Object,
    ) -> Result<js_sys::Promise, JsValue>;
}

/// Puts a buffered body into R2 with its content type and upload time.
pub async fn put_buffer(
    bucket: &worker::Bucket,
    key: &str,
    buffer: &ArrayBuffer,
    content_type: &str,
    uploaded_at: &str,
) -> Result<(), JsValue> {
    let http = js_sys::Object::new();
    Reflect::set(&http, &"contentType".into(), &content_type.into())?;
    let custom = js_sys::Object::new();
    Reflect::set(&custom, &"uploadedAt".into(), &uploaded_at.into())?;
    let options = js_sys::Object::new();
    Reflect::set(&options, &"httpMetadata".into(), &http)?;
    Reflect::set(&options, &"customMetadata".into(), &custom)?;
    let bucket: &JsBucket = bucket.as_ref().unchecked_ref();
    JsFuture::from(bucket.put_array_buffer(key, buffer, &options)?).await?;
    Ok(())
}
