//! Request handlers: one function per route and method.

use shared::api::{
    authorize, check_content_length, status_url, Accepted, ApiError, IdempotencyKey, Route,
};
use shared::keys::{idempotency_key, object_key, object_prefix, record_key};
use shared::message::SCHEMA_VERSION;
use shared::record::{QueuedView, TagsView};
use shared::{config, ImageId, ImageMessage, Status, TagRecord};
use worker::{
    Bucket, Env, Headers, KvStore, MessageBuilder, Method, QueueContentType, Request, Response,
};

use crate::body::{self, BodyInfo};
use crate::edge::{self, internal, unavailable, Settings};
use crate::r2;

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
            // Until keys are bound to bodies, the repeat's digest is only logged.
            let content_type = header(&req, "content-type");
            let info = body_info(&req, content_type.as_deref(), env, settings, true)?;
            let sha256 = body::digest_only(req.inner(), &info).await?;
            worker::console_log!("repeated idempotency key of {id}: body sha256 {sha256}");
            return Ok(accepted(200, id));
        }
    }
    let content_type = header(&req, "content-type");
    let info = body_info(
        &req,
        content_type.as_deref(),
        env,
        settings,
        idempotency.is_some(),
    )?;
    let upload = body::read(req.inner(), &info).await?;
    let id = ImageId::from_uuid(uuid::Uuid::new_v4())
        .map_err(|e| ApiError::Internal(format!("uuid: {e}")))?;
    let bucket = bucket(env)?;
    let message = store(&bucket, id, upload).await?;
    if let Err(e) = enqueue(env, &message).await {
        // Nothing must stay in R2 that no message will ever tag.
        let _ = r2::delete(&bucket, &message.r2_key).await;
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

/// What the body handling needs to know, from the headers and settings.
fn body_info<'a>(
    req: &Request,
    content_type: Option<&'a str>,
    env: &Env,
    settings: &Settings,
    digest: bool,
) -> Result<BodyInfo<'a>, ApiError> {
    let max_pixels = env.var(config::MAX_PIXELS).ok().map(|v| v.to_string());
    Ok(BodyInfo {
        content_type,
        content_length: check_content_length(
            header(req, "content-length").as_deref(),
            settings.max_upload_bytes,
        )?,
        limit: settings.max_upload_bytes,
        max_pixels: config::parse_var(max_pixels.as_deref(), config::DEFAULT_MAX_PIXELS),
        digest,
    })
}

/// Puts the upload into R2 and describes it as the queue message.
async fn store(
    bucket: &Bucket,
    id: ImageId,
    upload: body::Upload,
) -> Result<ImageMessage, ApiError> {
    let key = object_key(&id, upload.image_type);
    let uploaded_at = now();
    let content_type = upload.image_type.mime().into();
    let stored = r2::store(bucket, &key, upload, &uploaded_at).await?;
    if let Some(sha256) = &stored.sha256 {
        worker::console_log!("upload {id}: body sha256 {sha256}");
    }
    Ok(ImageMessage {
        schema_version: SCHEMA_VERSION,
        image_id: id,
        r2_key: key,
        content_type,
        size: stored.size,
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
