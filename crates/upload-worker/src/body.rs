//! Reading an upload's body: its type and pixel count from its first bytes, then its bytes
//! handed to [`crate::r2::store`], never copied back out of wasm.
//!
//! - A raw body with a `Content-Length` of at most [`BUFFER_LIMIT`] is read whole into an
//!   `ArrayBuffer`; only its head is copied into wasm.
//! - A larger raw body with a `Content-Length` passes through the runtime natively: its first
//!   chunks are read until the head decides, then written into a `FixedLengthStream` ahead of
//!   the rest of the body, which is piped after them straight into R2.
//! - A raw body without `Content-Length`, and every `multipart/form-data` body, is read chunk
//!   by chunk ([`Rest`]), 64 KiB per read. A form's chunks are copied into one buffer that
//!   every request shares (it is used only between awaits) and scanned there
//!   ([`shared::api::multipart::Scanner`]); the file's bytes go on as `subarray` views of the JS
//!   chunks, and [`crate::r2`] stores them in parts as they come.
//!
//! The head (see [`shared::api::admission`]) is read up to 256 KiB to find the image's pixel count: a
//! JPEG's frame header can follow large EXIF and ICC segments.
//!
//! A body refused part way (type, pixels, a malformed form) is drained before the error
//! response, up to the size limit: a client still sending would otherwise often see its
//! connection reset instead of the response.
//!
//! With [`BodyInfo::digest`], the SHA-256 that binds an `Idempotency-Key` to the body is
//! computed on the way: `crypto.subtle.digest` of a buffered body, a `tee` into
//! `crypto.DigestStream` for a piped one, and each chunk written to a `DigestStream` for a
//! raw body read chunk by chunk. A form's digest covers only its file part's declared type
//! and bytes ([`multipart::FORM_DIGEST_PREFIX`]), never the framing or the random boundary: a client
//! that rebuilds the same form gets its first image.

use std::cell::RefCell;
use std::collections::VecDeque;

use shared::api::admission::Head;
use shared::api::multipart::{self, Event, FilePicker, Scanner};
use shared::api::ApiError;
use shared::ImageType;
use worker::js_sys::{self, ArrayBuffer, BigInt, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::{future_to_promise, JsFuture};
use worker::web_sys::{self, ReadableStream, ReadableStreamDefaultReader};
use worker::web_sys::{WritableStream, WritableStreamDefaultWriter};
use worker::worker_sys::FixedLengthStream;

/// Raw bodies with a `Content-Length` up to this size are read whole (in JS) rather than
/// piped: that costs less CPU, and memory per request stays bounded by it.
pub const BUFFER_LIMIT: u64 = 1024 * 1024;

/// The most bytes of a chunk scanned at once: the size the shared scan buffer grows to.
const SCAN_SLICE: u32 = 64 * 1024;

/// The least bytes copied into wasm per step while the head is undecided.
const HEAD_STEP: usize = 4096;

thread_local! {
    /// The one buffer chunks are copied into, shared by all requests (it is used only
    /// between awaits), so that wasm memory does not grow with concurrent uploads.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static VALUE: JsValue = JsValue::from_str("value");
}

/// The request facts the body handling needs.
pub struct BodyInfo<'a> {
    pub content_type: Option<&'a str>,
    /// Checked against the limit already; `None` for a chunked body.
    pub content_length: Option<u64>,
    /// `MAX_UPLOAD_BYTES`: for the whole body, form or not.
    pub limit: u64,
    /// `MAX_PIXELS`.
    pub max_pixels: u64,
    /// Whether to compute the body's SHA-256 ([`crate::r2::Stored::sha256`]).
    pub digest: bool,
}

/// A body whose head passed the checks, ready for [`crate::r2::store`], which reads the rest.
pub struct Upload {
    /// The sniffed type: the R2 key's extension and the object's content type.
    pub image_type: ImageType,
    pub(crate) bytes: Bytes,
    pub(crate) digest: Option<Digest>,
}

/// Where an upload's bytes are.
pub(crate) enum Bytes {
    /// A small body, whole, in JS memory.
    Buffer(ArrayBuffer),
    /// A stream of exactly `size` bytes, and what feeds it (awaited after the R2 put).
    Stream {
        stream: ReadableStream,
        size: u64,
        feeding: JsFuture,
    },
    /// A body still being read chunk by chunk.
    Parts(Box<Rest>),
}

#[worker::wasm_bindgen::prelude::wasm_bindgen(
    wasm_bindgen = ::worker::wasm_bindgen,
    js_sys = ::worker::js_sys
)]
extern "C" {
    /// workerd's `crypto.DigestStream`: a writable stream that hashes what is written.
    #[wasm_bindgen(extends = WritableStream, extends = js_sys::Object)]
    type DigestStream;

    #[wasm_bindgen(constructor, catch, js_namespace = crypto)]
    fn new(algorithm: &str) -> Result<DigestStream, JsValue>;

    #[wasm_bindgen(method, getter)]
    fn digest(this: &DigestStream) -> Promise;

    #[wasm_bindgen(catch, js_namespace = ["crypto", "subtle"], js_name = digest)]
    fn subtle_digest(algorithm: &str, data: &ArrayBuffer) -> Result<Promise, JsValue>;

    /// A `ReadableStreamBYOBReader`, with workerd's `readAtLeast`.
    #[wasm_bindgen(extends = js_sys::Object)]
    type ByobReader;

    /// A `ReadableStream`, for `getReader` with options.
    #[wasm_bindgen(extends = js_sys::Object)]
    type BodyStream;

    #[wasm_bindgen(method, catch, js_name = getReader)]
    fn byob_reader(this: &BodyStream, options: &js_sys::Object) -> Result<ByobReader, JsValue>;

    #[wasm_bindgen(method, catch, js_name = readAtLeast)]
    fn read_at_least(this: &ByobReader, min: u32, view: &Uint8Array) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method)]
    fn cancel(this: &ByobReader) -> Promise;

    #[wasm_bindgen(method, js_name = releaseLock)]
    fn release_lock(this: &ByobReader);
}

/// The size of the reads of a body read chunk by chunk.
const READ_SIZE: u32 = 64 * 1024;

/// A body's reader for chunk-by-chunk reading. Request bodies arrive in 4 KiB pieces (1,300
/// reads, each a JS promise and a wake-up of the Rust executor, for 5 MiB); workerd's
/// `readAtLeast` on a BYOB reader gathers [`READ_SIZE`] bytes per read instead.
enum Chunks {
    Byob(ByobReader),
    Plain(ReadableStreamDefaultReader),
}

impl Chunks {
    fn new(body: &ReadableStream) -> Self {
        let options = js_sys::Object::new();
        let _ = Reflect::set(&options, &"mode".into(), &"byob".into());
        let stream: &BodyStream = body.unchecked_ref();
        if let Ok(reader) = stream.byob_reader(&options) {
            if Reflect::get(&reader, &"readAtLeast".into()).is_ok_and(|f| f.is_function()) {
                return Self::Byob(reader);
            }
            reader.release_lock();
        }
        Self::Plain(reader_of(body))
    }

    /// The next chunk, `None` at the end of the body.
    async fn next(&self) -> Result<Option<Uint8Array>, ApiError> {
        let reader = match self {
            Self::Plain(reader) => return next_chunk(reader).await,
            Self::Byob(reader) => reader,
        };
        let view = Uint8Array::new_with_length(READ_SIZE);
        let read = reader
            .read_at_least(READ_SIZE, &view)
            .map_err(js_error("readAtLeast"))?;
        let chunk = chunk_of(JsFuture::from(read).await)?;
        // At the end a BYOB read gives back an empty view.
        Ok(chunk.filter(|c| c.length() > 0))
    }

    fn cancel(&self) {
        let _ = match self {
            Self::Byob(reader) => reader.cancel(),
            Self::Plain(reader) => reader.cancel(),
        };
    }
}

/// A SHA-256 being computed by the runtime.
pub(crate) struct Digest(Promise);

impl Digest {
    /// The digest as lowercase hex. A body that broke off fails it.
    pub(crate) async fn hex(self) -> Result<String, ApiError> {
        let buffer: ArrayBuffer = JsFuture::from(self.0)
            .await
            .map_err(|_| ApiError::IncompleteBody)?
            .dyn_into()
            .map_err(|_| ApiError::Internal("digest is not an ArrayBuffer".into()))?;
        Ok(hex(&Uint8Array::new(&buffer).to_vec()))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn digest_stream() -> Result<DigestStream, ApiError> {
    DigestStream::new("SHA-256").map_err(js_error("DigestStream"))
}

fn js_error(what: &'static str) -> impl FnOnce(JsValue) -> ApiError {
    move |e| ApiError::Internal(format!("{what}: {e:?}"))
}

/// Reads an upload's head and checks it: raw bytes, or a `multipart/form-data` form with
/// exactly one file in field `image` or `file`. The rest is read by [`crate::r2::store`].
pub async fn read(req: &web_sys::Request, info: &BodyInfo<'_>) -> Result<Upload, ApiError> {
    if multipart::is_multipart(info.content_type) {
        let boundary = multipart::boundary(info.content_type.unwrap_or_default())?;
        let body = req.body().ok_or(ApiError::EmptyBody)?;
        let (rest, digest) = Rest::start(body, info, Some(Box::new(Form::new(&boundary))))?;
        return rest.read_head(digest).await;
    }
    match info.content_length {
        Some(size) if size <= BUFFER_LIMIT => buffered(req, size, info).await,
        Some(size) => streamed(req.body().ok_or(ApiError::EmptyBody)?, size, info).await,
        None => {
            let body = req.body().ok_or(ApiError::EmptyBody)?;
            let (rest, digest) = Rest::start(body, info, None)?;
            rest.read_head(digest).await
        }
    }
}

/// Hashes the body as [`read`] does (a raw body whole, a form's file part and its declared
/// type), enforcing the size limit, and stores nothing: for a repeated `Idempotency-Key`, to
/// compare with the first request's digest.
pub async fn digest_only(req: &web_sys::Request, info: &BodyInfo<'_>) -> Result<String, ApiError> {
    let body = req.body().ok_or(ApiError::EmptyBody)?;
    if multipart::is_multipart(info.content_type) {
        let boundary = multipart::boundary(info.content_type.unwrap_or_default())?;
        let form = Some(Box::new(Form::new(&boundary)));
        let (mut rest, digest) = Rest::start(body, info, form)?;
        let digest = digest.ok_or_else(|| ApiError::Internal("no digest asked for".into()))?;
        // The file's views are dropped as they come: memory stays at one chunk.
        loop {
            rest.take_file_views().for_each(drop);
            if rest.is_over() {
                break;
            }
            rest.step().await?;
        }
        return digest.hex().await;
    }
    let stream = digest_stream()?;
    let digest = Digest(stream.digest());
    if info.content_length.is_some() {
        // The length was checked against the limit, and the runtime holds the body to it.
        JsFuture::from(body.pipe_to(&stream))
            .await
            .map_err(|_| ApiError::IncompleteBody)?;
        return digest.hex().await;
    }
    let reader = Chunks::new(&body);
    let writer = stream
        .get_writer()
        .map_err(js_error("DigestStream writer"))?;
    let mut read = 0u64;
    while let Some(chunk) = reader.next().await? {
        read += u64::from(chunk.length());
        if read > info.limit {
            reader.cancel();
            return Err(ApiError::PayloadTooLarge { limit: info.limit });
        }
        JsFuture::from(writer.write_with_chunk(&chunk))
            .await
            .map_err(js_error("DigestStream write"))?;
    }
    if read == 0 {
        return Err(ApiError::EmptyBody);
    }
    JsFuture::from(writer.close())
        .await
        .map_err(js_error("DigestStream close"))?;
    digest.hex().await
}

/// Reads a small body of known size whole into an `ArrayBuffer`, and checks its head.
async fn buffered(
    req: &web_sys::Request,
    size: u64,
    info: &BodyInfo<'_>,
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
    let mut head = Head::new(info.max_pixels);
    let bytes = Uint8Array::new(&buffer);
    feed_head(&mut head, &bytes, length, info.content_type)?;
    let image_type = head.finish(info.content_type)?;
    let digest = match info.digest {
        // Reads the bytes now, before the put takes the buffer.
        true => Some(Digest(
            subtle_digest("SHA-256", &buffer).map_err(js_error("digest"))?,
        )),
        false => None,
    };
    Ok(Upload {
        image_type,
        bytes: Bytes::Buffer(buffer),
        digest,
    })
}

/// Checks the head of a body of known size from its first chunks, then pipes all of it.
async fn streamed(
    body: ReadableStream,
    size: u64,
    info: &BodyInfo<'_>,
) -> Result<Upload, ApiError> {
    let reader = reader_of(&body);
    let mut head = Head::new(info.max_pixels);
    let mut chunks = Vec::new();
    let mut read = 0u64;
    let checked = loop {
        let chunk = match next_chunk(&reader).await {
            Ok(Some(chunk)) => chunk,
            // The body ended (a short one fails the FixedLengthStream later).
            Ok(None) => break head.finish(info.content_type),
            Err(e) => break Err(e),
        };
        read += u64::from(chunk.length());
        let fed = feed_head(&mut head, &chunk, chunk.length(), info.content_type);
        chunks.push(chunk);
        match fed {
            Ok(Some(image_type)) => break Ok(image_type),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    let image_type = match checked {
        Ok(image_type) => image_type,
        Err(e) => {
            reader.release_lock();
            drain(&Chunks::new(&body), read, info.limit).await;
            return Err(e);
        }
    };
    // The rest of the body is read by the pipe, from where the reader stopped.
    reader.release_lock();
    let fls = FixedLengthStream::new_big_int(BigInt::from(size))
        .map_err(js_error("FixedLengthStream"))?;
    let writable = fls.writable();
    let hasher = if info.digest {
        Some(digest_stream()?)
    } else {
        None
    };
    let digest = hasher.as_ref().map(|h| Digest(h.digest()));
    // Runs on its own, like a pipeTo: the R2 put reads what it writes.
    let feeding = future_to_promise(async move {
        if let Some(hasher) = &hasher {
            write_all(hasher, &chunks).await?;
        }
        write_all(&writable, &chunks).await?;
        drop(chunks);
        let Some(hasher) = hasher else {
            return JsFuture::from(body.pipe_to(&writable)).await;
        };
        // The hash only when asked: a tee costs CPU.
        let branches = body.tee();
        let to_r2: ReadableStream = branches.get(0).unchecked_into();
        let to_hash: ReadableStream = branches.get(1).unchecked_into();
        let hashing = JsFuture::from(to_hash.pipe_to(&hasher));
        let stored = JsFuture::from(to_r2.pipe_to(&writable)).await;
        hashing.await?;
        stored
    });
    Ok(Upload {
        image_type,
        bytes: Bytes::Stream {
            stream: fls.readable(),
            size,
            feeding: JsFuture::from(feeding),
        },
        digest,
    })
}

/// Reads and drops the rest of a refused body (`read` bytes of it were read), up to the size
/// limit. A client still sending a body that is never read gets its connection reset, often
/// before it reads the error response; drained, the connection ends cleanly. Past the limit
/// the body is cancelled.
async fn drain(reader: &Chunks, mut read: u64, limit: u64) {
    while read <= limit {
        match reader.next().await {
            Ok(Some(chunk)) => read += u64::from(chunk.length()),
            _ => return,
        }
    }
    reader.cancel();
}

/// Writes chunks into a stream, keeping it unlocked for a pipe afterwards.
async fn write_all(stream: &WritableStream, chunks: &[Uint8Array]) -> Result<(), JsValue> {
    let writer = stream.get_writer()?;
    for chunk in chunks {
        JsFuture::from(writer.write_with_chunk(chunk)).await?;
    }
    writer.release_lock();
    Ok(())
}

/// Offers a JS chunk to the head, copying into wasm only what deciding needs.
fn feed_head(
    head: &mut Head,
    chunk: &Uint8Array,
    len: u32,
    declared: Option<&str>,
) -> Result<Option<ImageType>, ApiError> {
    let mut at = 0u32;
    while at < len && head.decided().is_none() {
        let n = head.wants().max(HEAD_STEP).min((len - at) as usize) as u32;
        with_scratch(n as usize, |bytes| {
            chunk.subarray(at, at + n).copy_to(bytes);
            head.feed(bytes, declared)
        })?;
        at += n;
    }
    Ok(head.decided())
}

/// Runs `f` on `n` bytes of the shared buffer (grown if need be), or of a buffer of its own
/// should the shared one be in use (it never is: no caller nests, and none awaits inside).
fn with_scratch<T>(n: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < n {
                buf.resize(n, 0);
            }
            f(&mut buf[..n])
        }
        Err(_) => f(&mut vec![0; n]),
    })
}

/// A body read chunk by chunk: a raw body without `Content-Length`, or a form.
pub(crate) struct Rest {
    reader: Chunks,
    read: u64,
    limit: u64,
    /// Writes every chunk of a raw body into a `DigestStream`, when a digest was asked for
    /// (a form's file hashes its own bytes: [`File::hasher`]).
    hasher: Option<WritableStreamDefaultWriter>,
    /// `None` for a raw body: all of it is the file.
    form: Option<Box<Form>>,
    file: File,
    /// The body is read to its end, and valid.
    over: bool,
}

/// The file's side of a body read chunk by chunk.
struct File {
    head: Head,
    /// The declared type: the request's for a raw body, the part's for a form.
    declared: Option<String>,
    /// The file's bytes read and not yet taken: views of the body's chunks, with lengths.
    views: Vec<(Uint8Array, u32)>,
    /// All of the file's bytes are read.
    over: bool,
    /// A form's digest: the file part's declared type and bytes go into a `DigestStream`.
    hasher: Option<WritableStreamDefaultWriter>,
}

impl File {
    /// Takes the next view of the file; `bytes` are its bytes when already in wasm, else the
    /// head copies what it needs.
    fn push(&mut self, view: Uint8Array, len: u32, bytes: Option<&[u8]>) -> Result<(), ApiError> {
        if let Some(hasher) = &self.hasher {
            // Written in order; a failure shows in the digest.
            let _ = hasher.write_with_chunk(&view);
        }
        if self.head.decided().is_none() {
            match bytes {
                Some(bytes) => {
                    self.head.feed(bytes, self.declared.as_deref())?;
                }
                None => {
                    feed_head(&mut self.head, &view, len, self.declared.as_deref())?;
                }
            }
        }
        self.views.push((view, len));
        Ok(())
    }

    /// A form's file part begins, with its declared type (the part's `Content-Type`).
    fn begin(&mut self, declared: Option<String>) {
        if let Some(hasher) = &self.hasher {
            let mut prefix = multipart::FORM_DIGEST_PREFIX.to_vec();
            prefix.extend_from_slice(declared.as_deref().unwrap_or_default().as_bytes());
            prefix.push(b'\n');
            let _ = hasher.write_with_chunk(&Uint8Array::from(prefix.as_slice()));
        }
        self.declared = declared;
    }
}

impl Rest {
    /// Starts reading `body`; with the digest of it, if asked for.
    fn start(
        body: ReadableStream,
        info: &BodyInfo<'_>,
        form: Option<Box<Form>>,
    ) -> Result<(Self, Option<Digest>), ApiError> {
        let (hasher, digest) = if info.digest {
            let stream = digest_stream()?;
            let digest = Digest(stream.digest());
            let writer = stream
                .get_writer()
                .map_err(js_error("DigestStream writer"))?;
            (Some(writer), Some(digest))
        } else {
            (None, None)
        };
        let (declared, hasher, file_hasher) = match form {
            None => (info.content_type.map(str::to_string), hasher, None),
            Some(_) => (None, None, hasher),
        };
        let rest = Self {
            reader: Chunks::new(&body),
            read: 0,
            limit: info.limit,
            hasher,
            form,
            file: File {
                head: Head::new(info.max_pixels),
                declared,
                views: Vec::new(),
                over: false,
                hasher: file_hasher,
            },
            over: false,
        };
        Ok((rest, digest))
    }

    /// Reads until the file's head decides; the upload then holds the rest of the body.
    async fn read_head(mut self, digest: Option<Digest>) -> Result<Upload, ApiError> {
        let image_type = loop {
            if let Some(image_type) = self.file.head.decided() {
                break image_type;
            }
            if self.file.over {
                match self.file.head.finish(self.file.declared.as_deref()) {
                    Ok(image_type) => break image_type,
                    Err(e) => {
                        // A form may go on after its file.
                        if !self.over {
                            self.over = true;
                            drain(&self.reader, self.read, self.limit).await;
                        }
                        return Err(e);
                    }
                }
            }
            self.step().await?;
        };
        Ok(Upload {
            image_type,
            bytes: Bytes::Parts(Box::new(self)),
            digest,
        })
    }

    /// The file's bytes read so far and not yet taken, as views of the body's chunks.
    pub(crate) fn take_file_views(&mut self) -> std::vec::Drain<'_, (Uint8Array, u32)> {
        self.file.views.drain(..)
    }

    /// Whether the body is read to its end (and valid: a form is complete, with its file).
    pub(crate) fn is_over(&self) -> bool {
        self.over
    }

    /// Drains what is left of the body after a failure elsewhere (R2), so that the client
    /// gets the error response (see [`drain`]).
    pub(crate) async fn abandon(&mut self) {
        if !self.over {
            self.over = true;
            drain(&self.reader, self.read, self.limit).await;
        }
    }

    /// Reads and handles the next chunk. After an error the rest of the body is drained (see
    /// [`drain`]), or cancelled past the size limit.
    pub(crate) async fn step(&mut self) -> Result<(), ApiError> {
        let result = self.next().await;
        match &result {
            Ok(()) => {}
            Err(ApiError::PayloadTooLarge { .. }) => {
                self.over = true;
                self.reader.cancel();
            }
            Err(ApiError::IncompleteBody) => self.over = true,
            Err(_) => {
                self.over = true;
                drain(&self.reader, self.read, self.limit).await;
            }
        }
        result
    }

    async fn next(&mut self) -> Result<(), ApiError> {
        if self.over {
            return Ok(());
        }
        let Some(chunk) = self.reader.next().await? else {
            return self.end();
        };
        let len = chunk.length();
        self.read += u64::from(len);
        if self.read > self.limit {
            return Err(ApiError::PayloadTooLarge { limit: self.limit });
        }
        if let Some(hasher) = &self.hasher {
            // Written in order; a failure shows in the digest.
            let _ = hasher.write_with_chunk(&chunk);
        }
        match &mut self.form {
            Some(form) => form.scan(&chunk, len, &mut self.file),
            None if len > 0 => self.file.push(chunk, len, None),
            None => Ok(()),
        }
    }

    /// The end of the body: the form must be complete.
    fn end(&mut self) -> Result<(), ApiError> {
        if self.read == 0 {
            return Err(ApiError::EmptyBody);
        }
        if let Some(form) = &self.form {
            form.scanner.finish()?;
            form.picker.finish()?;
        }
        if let Some(hasher) = self.hasher.take().or_else(|| self.file.hasher.take()) {
            let _ = hasher.close();
        }
        self.file.over = true;
        self.over = true;
        Ok(())
    }
}

/// A `multipart/form-data` body being scanned.
struct Form {
    scanner: Scanner,
    picker: FilePicker,
    events: Vec<Event>,
    /// The current part is the file.
    in_file: bool,
    /// The last chunks while the scanner holds back their last bytes (a later data event
    /// may carry them), with their lengths.
    tail: VecDeque<(Uint8Array, u32)>,
}

impl Form {
    fn new(boundary: &str) -> Self {
        Self {
            scanner: Scanner::new(boundary),
            picker: FilePicker::default(),
            events: Vec::new(),
            in_file: false,
            tail: VecDeque::new(),
        }
    }

    /// Scans a chunk, in slices of at most [`SCAN_SLICE`].
    fn scan(&mut self, chunk: &Uint8Array, len: u32, file: &mut File) -> Result<(), ApiError> {
        let mut at = 0;
        while at < len && !self.scanner.is_done() {
            let n = (len - at).min(SCAN_SLICE);
            let piece = match n == len {
                true => chunk.clone(),
                false => chunk.subarray(at, at + n),
            };
            self.scan_piece(&piece, n, file)?;
            at += n;
        }
        Ok(())
    }

    fn scan_piece(
        &mut self,
        piece: &Uint8Array,
        len: u32,
        file: &mut File,
    ) -> Result<(), ApiError> {
        let mut events = std::mem::take(&mut self.events);
        let result: Result<(), ApiError> = with_scratch(len as usize, |bytes| {
            piece.copy_to(bytes);
            self.scanner.feed(bytes, &mut events)?;
            for event in events.drain(..) {
                self.event(event, piece, len, bytes, file)?;
            }
            Ok(())
        });
        events.clear();
        self.events = events;
        result?;
        self.keep_tail(piece, len);
        Ok(())
    }

    fn event(
        &mut self,
        event: Event,
        piece: &Uint8Array,
        len: u32,
        bytes: &[u8],
        file: &mut File,
    ) -> Result<(), ApiError> {
        match event {
            Event::Part(head) => {
                self.in_file = self.picker.offer(&head.name, head.is_file())?;
                if self.in_file {
                    // The part's own type is only a claim, checked like a raw body's.
                    file.begin(head.content_type.filter(|t| !t.is_empty()));
                }
            }
            Event::Data { carried, range } if self.in_file => {
                if carried > 0 {
                    self.push_carried(carried, file)?;
                }
                if !range.is_empty() {
                    let (start, end) = (range.start as u32, range.end as u32);
                    let view = match end - start == len {
                        true => piece.clone(),
                        false => piece.subarray(start, end),
                    };
                    file.push(view, end - start, Some(&bytes[range]))?;
                }
            }
            Event::Data { .. } => {}
            Event::PartEnd if self.in_file => {
                self.in_file = false;
                file.over = true;
            }
            Event::PartEnd | Event::End => {}
        }
        Ok(())
    }

    /// The last `carried` bytes of the previous pieces, which turned out to be file data.
    fn push_carried(&mut self, carried: usize, file: &mut File) -> Result<(), ApiError> {
        let mut need = carried as u32;
        let mut views = Vec::new();
        for (view, n) in self.tail.iter().rev() {
            if need == 0 {
                break;
            }
            let take = need.min(*n);
            views.push(match take == *n {
                true => (view.clone(), take),
                false => (view.subarray(n - take, *n), take),
            });
            need -= take;
        }
        if need > 0 {
            return Err(ApiError::Internal(
                "carried bytes not in the kept chunks".into(),
            ));
        }
        let mut delimiter = &self.scanner.delimiter()[..carried];
        for (view, n) in views.into_iter().rev() {
            let (these, rest) = delimiter.split_at(n as usize);
            file.push(view, n, Some(these))?;
            delimiter = rest;
        }
        self.tail.clear();
        Ok(())
    }

    /// Keeps the pieces whose last bytes the scanner holds back, while in the file.
    fn keep_tail(&mut self, piece: &Uint8Array, len: u32) {
        let held = self.scanner.held() as u64;
        if held == 0 || !self.in_file {
            self.tail.clear();
            return;
        }
        self.tail.push_back((piece.clone(), len));
        let mut kept: u64 = self.tail.iter().map(|(_, n)| u64::from(*n)).sum();
        while let Some(&(_, n)) = self.tail.front() {
            if kept - u64::from(n) < held {
                break;
            }
            kept -= u64::from(n);
            self.tail.pop_front();
        }
    }
}

/// One chunk from a reader: `None` at the end of the stream.
async fn next_chunk(reader: &ReadableStreamDefaultReader) -> Result<Option<Uint8Array>, ApiError> {
    chunk_of(JsFuture::from(reader.read()).await)
}

/// The chunk of a read's result: `None` at the end of the stream.
fn chunk_of(result: Result<JsValue, JsValue>) -> Result<Option<Uint8Array>, ApiError> {
    let result = result.map_err(|_| ApiError::IncompleteBody)?;
    // `value` is undefined when `done` is true (for a BYOB read, it is an empty view).
    let value = VALUE
        .with(|key| Reflect::get(&result, key))
        .map_err(js_error("read result"))?;
    if value.is_undefined() {
        return Ok(None);
    }
    value
        .dyn_into::<Uint8Array>()
        .map(Some)
        .map_err(|_| ApiError::Internal("body chunk is not bytes".into()))
}

fn reader_of(stream: &ReadableStream) -> ReadableStreamDefaultReader {
    stream.get_reader().unchecked_into()
}
