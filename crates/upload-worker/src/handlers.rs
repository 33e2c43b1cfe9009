//! Request handlers: one function per route and method.

use shared::api::{
    authorize, check_content_length, status_url, Accepted, ApiError, IdempotencyKey, Route,
};
use shared::keys::{idempotency_key, object_key, object_prefix, record_key};
use shared::message::SCHEMA_VERSION;
use shared::record::{QueuedView, TagsView};
use shared::{config, multipart, ImageId, ImageMessage, Status, TagRecord};
use worker::{
    Bucket, Data, Env, Headers, HttpMetadata, KvStore, MessageBuilder, Method, QueueContentType,
    Request, Response,
};

use crate::body::{self, BodyInfo};
use crate::edge::{self, internal, unavailable, Settings};

/// Entry point: never fails; every error becomes a JSON error response.
pub async fn handle(req: Request, env: &Env) -> Response {
    let settings = Settings::from_env(env);
    let origin = header(&req, "origin");
    let response = match route(req, env, &settings).await {
        Ok(response) => response,
        Err(err) => edge::error(&err),
    };
    let response = edge::with_memory_figure(response, &settings);
    edge::with_cors(response, &settings, origin.as_deref())
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

async fn route(req: Request, env: &Env, settings: &Settings) -> Result<Response, ApiError> {
    let route = Route::parse(&req.path())?.ok_or(ApiError::NotFound)?;
    let method = req.method();
    match (route, &method) {
        (_, Method::Options) => return Ok(preflight(route)),
        // The demo page is static; the API calls it makes carry the token.
        (Route::Root, Method::Get | Method::Head) => return Ok(demo_page()),
        _ => {}
    }
    authorize(
        header(&req, "authorization").as_deref(),
        settings.api_token.as_deref(),
    )?;
    match (route, method) {
        (Route::Root | Route::Images, Method::Post) => upload(req, env, settings).await,
        (Route::Image(id), Method::Get | Method::Head) => status(env, id).await,
        (Route::ImageTags(id), Method::Get | Method::Head) => tags(env, id).await,
        _ => Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        }),
    }
}

/// `OPTIONS`: the allowed methods, and what a CORS preflight needs.
fn preflight(route: Route) -> Response {
    let headers = Headers::new();
    let _ = headers.set("allow", route.allow());
    let _ = headers.set("access-control-allow-methods", route.allow());
    let _ = headers.set(
        "access-control-allow-headers",
        "Authorization, Content-Type, Idempotency-Key",
    );
    let _ = headers.set("access-control-max-age", "86400");
    Response::builder()
        .with_status(204)
        .with_headers(headers)
        .fixed(Vec::new())
}

/// `GET /`: a single self-contained page to upload an image and watch it being tagged.
fn demo_page() -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/html; charset=utf-8");
    let _ = headers.set(
        "content-security-policy",
        "default-src 'none'; img-src blob:; style-src 'unsafe-inline'; \
         script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
    );
    Response::builder()
        .with_status(200)
        .with_headers(headers)
        .fixed(include_bytes!("demo.html").to_vec())
}

fn bucket(env: &Env) -> Result<Bucket, ApiError> {
    env.bucket(config::IMAGE_BUCKET)
        .map_err(internal("IMAGE_BUCKET binding"))
}

fn kv(env: &Env) -> Result<KvStore, ApiError> {
    env.kv(config::RESULTS_KV)
        .map_err(internal("RESULTS_KV binding"))
}

fn now() -> String {
    String::from(worker::js_sys::Date::new_0().to_iso_string())
}

fn accepted(status: u16, id: ImageId) -> Response {
    let headers = Headers::new();
    let _ = headers.set("location", &status_url(&id));
    edge::json(status, &Accepted::new(id), headers)
}

/// `POST /images`: store, enqueue, answer `202`.
async fn upload(req: Request, env: &Env, settings: &Settings) -> Result<Response, ApiError> {
    let idempotency = header(&req, "idempotency-key")
        .map(|k| IdempotencyKey::parse(&k))
        .transpose()?;
    let kv = kv(env)?;
    if let Some(key) = &idempotency {
        if let Some(id) = earlier_upload(&kv, key).await? {
            return Ok(accepted(200, id));
        }
    }
    let upload = read_body(&req, settings).await?;
    let id = ImageId::from_uuid(uuid::Uuid::new_v4())
        .map_err(|e| ApiError::Internal(format!("uuid: {e}")))?;
    let bucket = bucket(env)?;
    let message = store(&bucket, id, upload).await?;
    if let Err(e) = enqueue(env, &message).await {
        // Nothing must stay in R2 that no message will ever tag.
        let _ = bucket.delete(&message.r2_key).await;
        return Err(e);
    }
    if let Some(key) = &idempotency {
        remember(&kv, key, id).await;
    }
    Ok(accepted(202, id))
}

/// The image an `Idempotency-Key` already created, if any.
async fn earlier_upload(kv: &KvStore, key: &IdempotencyKey) -> Result<Option<ImageId>, ApiError> {
    let earlier = kv
        .get(&idempotency_key(key))
        .text()
        .await
        .map_err(|e| ApiError::Unavailable(format!("KV get idempotency key: {e}")))?;
    Ok(earlier.and_then(|id| ImageId::parse(&id).ok()))
}

/// Checks the headers, then sniffs and sizes the body, raw or multipart.
async fn read_body(req: &Request, settings: &Settings) -> Result<body::Upload, ApiError> {
    let content_type = header(req, "content-type");
    let info = BodyInfo {
        content_type: content_type.as_deref(),
        content_length: check_content_length(
            header(req, "content-length").as_deref(),
            settings.max_upload_bytes,
        )?,
        limit: settings.max_upload_bytes,
    };
    if multipart::is_multipart(info.content_type) {
        body::multipart(req.inner().body(), &info).await
    } else {
        body::raw(req.inner(), &info).await
    }
}

/// Puts the upload into R2 and describes it as the queue message.
async fn store(
    bucket: &Bucket,
    id: ImageId,
    upload: body::Upload,
) -> Result<ImageMessage, ApiError> {
    let key = object_key(&id, upload.image_type);
    let uploaded_at = now();
    let mime = upload.image_type.mime();
    match upload.bytes {
        body::Bytes::Stream { stream, feeding } => {
            let put = bucket
                .put(&key, Data::ReadableStream(stream))
                .http_metadata(HttpMetadata {
                    content_type: Some(mime.into()),
                    ..Default::default()
                })
                .custom_metadata([("uploadedAt".to_string(), uploaded_at.clone())])
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
        }
        body::Bytes::Buffer(buffer) => {
            body::put_buffer(bucket, &key, &buffer, mime, &uploaded_at)
                .await
                .map_err(|e| ApiError::Unavailable(format!("R2 put {key}: {e:?}")))?;
        }
    }
    Ok(ImageMessage {
        schema_version: SCHEMA_VERSION,
        image_id: id,
        r2_key: key,
        content_type: upload.image_type.mime().into(),
        size: upload.size,
        uploaded_at,
    })
}

/// Sends the message to the tagger's queue, as JSON.
async fn enqueue(env: &Env, message: &ImageMessage) -> Result<(), ApiError> {
    env.queue(config::IMAGE_QUEUE)
        .map_err(internal("IMAGE_QUEUE binding"))?
        .send(
            MessageBuilder::new(message)
                .content_type(QueueContentType::Json)
                .build(),
        )
        .await
        .map_err(unavailable("queue send"))
}

/// Remembers which image an `Idempotency-Key` created, for 24 hours.
async fn remember(kv: &KvStore, key: &IdempotencyKey, id: ImageId) {
    let stored = match kv.put(&idempotency_key(key), id.to_string()) {
        Ok(put) => put
            .expiration_ttl(IdempotencyKey::TTL_SECONDS)
            .execute()
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = stored {
        // The image is safely queued; a lost key only weakens deduplication.
        worker::console_warn!("idempotency key not stored for {id}: {e}");
    }
}

/// The tag record of an image, if the tagger has written one.
async fn record(env: &Env, id: ImageId) -> Result<Option<TagRecord>, ApiError> {
    kv(env)?
        .get(&record_key(&id))
        .json::<TagRecord>()
        .await
        .map_err(|e| ApiError::Unavailable(format!("KV get record {id}: {e}")))
}

/// Whether the image's bytes are in R2 (whatever their extension).
async fn stored(env: &Env, id: ImageId) -> Result<bool, ApiError> {
    let objects = bucket(env)?
        .list()
        .prefix(object_prefix(&id))
        .limit(1)
        .execute()
        .await
        .map_err(unavailable("R2 list"))?;
    Ok(!objects.objects().is_empty())
}

/// `GET /images/{id}`: the record if there is one, else `queued` if the bytes are stored.
async fn status(env: &Env, id: ImageId) -> Result<Response, ApiError> {
    match record(env, id).await? {
        Some(record) => Ok(edge::json(200, &record, Headers::new())),
        None => untagged(env, id).await,
    }
}

/// `GET /images/{id}/tags`: just the tags once done; otherwise as `GET /images/{id}`.
async fn tags(env: &Env, id: ImageId) -> Result<Response, ApiError> {
    match record(env, id).await? {
        Some(record) if record.status == Status::Done => {
            let view = TagsView {
                image_id: id,
                tags: &record.tags,
            };
            Ok(edge::json(200, &view, Headers::new()))
        }
        Some(record) => Ok(edge::json(200, &record, Headers::new())),
        None => untagged(env, id).await,
    }
}

/// An image without a record: `queued` if its bytes are stored, else unknown.
async fn untagged(env: &Env, id: ImageId) -> Result<Response, ApiError> {
    if stored(env, id).await? {
        Ok(edge::json(200, &QueuedView::new(id), Headers::new()))
    } else {
        Err(ApiError::ImageNotFound)
    }
}
