//! Every write to the image bucket: the put of a buffered body, the streamed put of a body of
//! known length, the multipart upload of a body read chunk by chunk, and deletes.
//!
//! A body read chunk by chunk (a form, or a raw body without `Content-Length`) has no length
//! until its end, and R2 wants one. Its file's bytes, views of the body's chunks, are
//! gathered in JS up to [`PART_SIZE`]: a file that ends within it is put in one piece; a
//! larger one becomes a multipart upload of equal parts of [`PART_SIZE`] (the last one
//! smaller), each sent as soon as it is full. Memory per upload is therefore about one part
//! (the views, which a `FixedLengthStream` hands to R2 without a copy), whatever the file
//! size. Nothing is committed before the whole body has been read and found valid: the single
//! put waits for it, the multipart upload is completed only then, and aborted on any failure.

use shared::api::ApiError;
use shared::ImageType;
use worker::js_sys::{Array, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::spawn_local;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStream;
use worker::worker_sys::{FixedLengthStream, R2Bucket, R2MultipartUpload};
use worker::Bucket;

use edge::js_text;

use crate::body::{Bytes, Rest, Upload};
use crate::problem;

/// Size of every part of a multipart upload but the last, and the largest file put in one
/// piece when its length is not known up front. R2's smallest allowed part is 5 MiB.
pub const PART_SIZE: u32 = 5 * 1024 * 1024;

/// What [`store`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The object's size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the request body, when [`crate::body::BodyInfo::digest`] asked for it.
    pub sha256: Option<String>,
}

fn unavailable<'a>(what: &'static str, key: &'a str) -> impl FnOnce(JsValue) -> ApiError + 'a {
    move |e| ApiError::Unavailable(format!("R2 {what} {key}: {e:?}"))
}

/// Puts an upload into R2 under `key`, with its content type and `uploadedAt`. On an error
/// nothing is left under `key` (as far as R2 answers: a failed delete is only logged).
pub async fn store(
    bucket: &Bucket,
    key: &str,
    upload: Upload,
    uploaded_at: &str,
) -> Result<Stored, ApiError> {
    let bucket: &R2Bucket = bucket.as_ref().unchecked_ref();
    let options = put_options(upload.image_type, uploaded_at)?;
    let size = match upload.bytes {
        Bytes::Buffer(buffer) => {
            put(bucket, key, &buffer, &options).await?;
            u64::from(buffer.byte_length())
        }
        Bytes::Stream {
            stream,
            size,
            feeding,
        } => {
            // R2 took exactly `size` bytes or failed: the feed matters only for the error.
            match put(bucket, key, &stream, &options).await {
                Ok(()) => size,
                // A body that broke off or did not match its length fails the feed as well.
                Err(e) => match feeding.await {
                    Err(_) => return Err(ApiError::IncompleteBody),
                    Ok(_) => return Err(e),
                },
            }
        }
        Bytes::Parts(rest) => parts(bucket, key, *rest, options).await?,
    };
    let sha256 = match upload.digest {
        None => None,
        Some(digest) => match digest.hex().await {
            Ok(hex) => Some(hex),
            Err(e) => {
                delete_raw(bucket, key).await;
                return Err(e);
            }
        },
    };
    Ok(Stored { size, sha256 })
}

/// Deletes an object (one that no message will ever tag).
pub async fn delete(bucket: &Bucket, key: &str) -> Result<(), ApiError> {
    let bucket: &R2Bucket = bucket.as_ref().unchecked_ref();
    let promise = bucket
        .delete(key.to_string())
        .map_err(unavailable("delete", key))?;
    JsFuture::from(promise)
        .await
        .map_err(unavailable("delete", key))?;
    Ok(())
}

async fn delete_raw(bucket: &R2Bucket, key: &str) {
    let deleted = match bucket.delete(key.to_string()) {
        Ok(promise) => JsFuture::from(promise).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        let detail = format!("R2 delete {key} after a failed upload: {}", js_text(&e));
        problem::warn("r2_cleanup_failed", &detail);
    }
}

/// `{ httpMetadata: { contentType }, customMetadata: { uploadedAt } }`.
fn put_options(image_type: ImageType, uploaded_at: &str) -> Result<Object, ApiError> {
    let set = |target: &Object, name: &str, value: &JsValue| {
        Reflect::set(target, &JsValue::from_str(name), value)
            .map_err(|e| ApiError::Internal(format!("R2 options: {e:?}")))
    };
    let http = Object::new();
    set(&http, "contentType", &image_type.mime().into())?;
    let custom = Object::new();
    set(&custom, "uploadedAt", &uploaded_at.into())?;
    let options = Object::new();
    set(&options, "httpMetadata", &http)?;
    set(&options, "customMetadata", &custom)?;
    Ok(options)
}

async fn put(
    bucket: &R2Bucket,
    key: &str,
    value: &JsValue,
    options: &Object,
) -> Result<(), ApiError> {
    let promise = bucket
        .put(key.to_string(), value.clone(), options.into())
        .map_err(unavailable("put", key))?;
    JsFuture::from(promise)
        .await
        .map_err(unavailable("put", key))?;
    Ok(())
}

/// Reads the rest of a body and stores its file, in one piece or as a multipart upload.
async fn parts(
    bucket: &R2Bucket,
    key: &str,
    mut rest: Rest,
    options: Object,
) -> Result<u64, ApiError> {
    let mut sink = PartSink {
        bucket,
        key,
        options,
        pending: Vec::new(),
        pending_len: 0,
        upload: None,
        uploaded: Array::new(),
        size: 0,
    };
    let result = sink.fill(&mut rest).await;
    let result = match result {
        Ok(()) => sink.finish().await,
        Err(e) => Err(e),
    };
    if result.is_err() {
        rest.abandon().await;
        sink.abort().await;
    }
    result
}

/// The file's bytes on their way into R2.
struct PartSink<'a> {
    bucket: &'a R2Bucket,
    key: &'a str,
    options: Object,
    /// Views of the body's chunks not sent yet, with their lengths.
    pending: Vec<(Uint8Array, u32)>,
    pending_len: u32,
    /// The multipart upload, once the file is known to be larger than a part.
    upload: Option<R2MultipartUpload>,
    /// `R2UploadedPart`s, for `complete`.
    uploaded: Array,
    size: u64,
}

impl PartSink<'_> {
    /// Reads the body to its end, sending every full part on the way.
    async fn fill(&mut self, rest: &mut Rest) -> Result<(), ApiError> {
        loop {
            for (view, len) in rest.take_file_views() {
                self.pending.push((view, len));
                self.pending_len += len;
                self.size += u64::from(len);
            }
            while self.pending_len >= PART_SIZE {
                self.send_part().await?;
            }
            if rest.is_over() {
                return Ok(());
            }
            rest.step().await?;
        }
    }

    /// Sends the first [`PART_SIZE`] bytes of `pending` as the next part.
    async fn send_part(&mut self) -> Result<(), ApiError> {
        let upload = match &self.upload {
            Some(upload) => upload.clone(),
            None => {
                let promise = self
                    .bucket
                    .create_multipart_upload(self.key.to_string(), self.options.clone().into())
                    .map_err(unavailable("createMultipartUpload", self.key))?;
                let upload: R2MultipartUpload = JsFuture::from(promise)
                    .await
                    .map_err(unavailable("createMultipartUpload", self.key))?
                    .unchecked_into();
                self.upload.insert(upload).clone()
            }
        };
        self.upload_part(&upload, PART_SIZE).await
    }

    /// Uploads the first `len` pending bytes as the next part.
    async fn upload_part(&mut self, upload: &R2MultipartUpload, len: u32) -> Result<(), ApiError> {
        let number = u16::try_from(self.uploaded.length() + 1)
            .map_err(|_| ApiError::Internal("too many parts".into()))?;
        let stream = self.take(len)?;
        let promise = upload
            .upload_part(number, stream.into())
            .map_err(unavailable("uploadPart", self.key))?;
        let part = JsFuture::from(promise)
            .await
            .map_err(unavailable("uploadPart", self.key))?;
        self.uploaded.push(&part);
        Ok(())
    }

    /// A stream of the first `len` pending bytes (at most `pending_len`), which leave
    /// `pending`. The views go into a `FixedLengthStream` as they are: no copy of the part is
    /// made. R2 fails if the stream does not deliver exactly `len` bytes, so nothing waits for
    /// the feed.
    fn take(&mut self, len: u32) -> Result<ReadableStream, ApiError> {
        let mut views = Vec::new();
        let mut taken = 0;
        let mut used = 0;
        for (view, n) in &mut self.pending {
            if taken == len {
                break;
            }
            let want = len - taken;
            if *n <= want {
                views.push(view.clone());
                taken += *n;
                used += 1;
            } else {
                views.push(view.subarray(0, want));
                *view = view.subarray(want, *n);
                *n -= want;
                taken = len;
            }
        }
        self.pending.drain(..used);
        self.pending_len -= taken;
        let fls = FixedLengthStream::new(taken)
            .map_err(|e| ApiError::Internal(format!("FixedLengthStream: {e:?}")))?;
        let writable = fls.writable();
        spawn_local(async move {
            let Ok(writer) = writable.get_writer() else {
                return;
            };
            // Queued at once: the views are in memory already.
            for view in &views {
                let _ = writer.write_with_chunk(view);
            }
            drop(views);
            let _ = JsFuture::from(writer.close()).await;
        });
        Ok(fls.readable())
    }

    /// After the body's end: one put, or the last part and `complete`.
    async fn finish(&mut self) -> Result<u64, ApiError> {
        let Some(upload) = self.upload.clone() else {
            let stream = self.take(self.pending_len)?;
            put(self.bucket, self.key, &stream, &self.options).await?;
            return Ok(self.size);
        };
        if self.pending_len > 0 {
            self.upload_part(&upload, self.pending_len).await?;
        }
        let promise = upload
            .complete(self.uploaded.to_vec())
            .map_err(unavailable("complete", self.key))?;
        JsFuture::from(promise)
            .await
            .map_err(unavailable("complete", self.key))?;
        Ok(self.size)
    }

    /// Drops a multipart upload that will not be completed (best effort: R2 also expires
    /// incomplete uploads on its own).
    async fn abort(&mut self) {
        self.pending.clear();
        let Some(upload) = self.upload.take() else {
            return;
        };
        let aborted = match upload.abort() {
            Ok(promise) => JsFuture::from(promise).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = aborted {
            let detail = format!(
                "R2 abort of the multipart upload of {}: {}",
                self.key,
                js_text(&e)
            );
            problem::warn("r2_cleanup_failed", &detail);
        }
    }
}
