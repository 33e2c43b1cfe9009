//! Request handlers: one function per route and method.

use std::rc::Rc;

use futures_util::future::join;

use shared::api::auth::{need, Caller, UsageCache};
use shared::api::live::LiveEvent;
use shared::api::multipart;
use shared::api::{check_content_length, Accepted, ApiError, IdempotencyKey, Method, Route};
use shared::storage::images::View;
use shared::tagging::pacer::{Usage, UsageReport};
use shared::wire::config::binding;
use shared::wire::keys::object_key;
use shared::wire::message::SCHEMA_VERSION;
use shared::wire::record::{status_url, TagRecord, TagsView};
use shared::{ImageId, ImageMessage, Status};
use worker::{
    Bucket, Context, Env, Headers, MessageBuilder, Queue, QueueContentType, Request, Response,
};

use edge::log::{self, Level};
use edge::now_ms;
use shared::wire::log_event;

use crate::body::{self, BodyInfo};
use crate::detach::detach;
use crate::http;
use crate::manage;
use crate::problem;
use crate::r2;
use crate::settings::{check_callback, Settings};
use crate::store::{OrUnavailable, Reservation, Store};

/// Entry point: never fails; every error becomes a JSON error response.
pub async fn handle(req: Request, env: Env, ctx: Context) -> Response {
    let settings = Settings::get(&env);
    let origin = header(&req, "origin");
    let response = match route(req, env, ctx, &settings).await {
        Ok(response) => response,
        Err(err) => http::error(&err),
    };
    http::finish(response, &settings, origin.as_deref())
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

async fn route(
    req: Request,
    env: Env,
    ctx: Context,
    settings: &Rc<Settings>,
) -> Result<Response, ApiError> {
    let route = Route::parse(&req.path())?.ok_or(ApiError::NotFound)?;
    // The raw method: workers-rs maps methods it does not know to GET.
    let method = Method::parse(&req.inner().method());
    match (route, method) {
        (_, Method::Options) => return Ok(http::preflight(route.allow())),
        // The demo page is static; the API calls it makes carry the token.
        (Route::Root, Method::Get | Method::Head) => {
            return Ok(http::page(include_bytes!("demo.html")))
        }
        // So is the dashboard's: its figures come from `/admin/stats`, with the operator key.
        (Route::Admin, Method::Get | Method::Head) => return Ok(crate::dashboard::page()),
        _ => {}
    }
    // A browser's socket authenticates with a ticket, not a header: `live::connect` checks.
    if (route, method) == (Route::Events, Method::Get) {
        return crate::live::connect(&req, &env, settings).await;
    }
    let caller = crate::auth::authenticate(&req, &env, settings).await?;
    caller.allow(need(route, method))?;
    // A client sees only its own images; the operator every image.
    let owner = caller.sees();
    match (route, method) {
        (Route::Root | Route::Images, Method::Post) => {
            upload(req, env, ctx, settings, &caller).await
        }
        (Route::Images, Method::Get | Method::Head) => {
            manage::search(&req, &env, settings, owner).await
        }
        (Route::Image(id), Method::Get | Method::Head) => status(&env, id, owner).await,
        // The delete runs to its end even if the client goes away.
        (Route::Image(id), Method::Delete) => {
            let work = manage::delete(env.clone(), id, owner.map(str::to_string));
            let deleted_from = detach(&ctx, work).await?;
            // The owner's sockets hear of it after the response (best-effort).
            let event = LiveEvent::deleted(id, now_ms());
            ctx.wait_until(
                async move { edge::live::publish_soon(&env, &deleted_from, &event).await },
            );
            Ok(Response::builder().with_status(204).empty())
        }
        (Route::EventsTicket, Method::Post) => crate::live::ticket(caller.owner(), settings).await,
        (Route::ImageTags(id), Method::Get | Method::Head) => tags(&env, id, owner).await,
        (Route::ImageContent(id), Method::Get | Method::Head) => {
            manage::image_content(&req, &env, id, method == Method::Head, owner).await
        }
        (Route::Tags, Method::Get | Method::Head) => manage::tags(&req, &env, owner).await,
        (Route::AdminUsage, Method::Get | Method::Head) => usage(&env).await,
        (Route::AdminStats, Method::Get | Method::Head) => {
            crate::dashboard::stats(&env, settings).await
        }
        (Route::AdminKeys, Method::Post) => crate::admin::create(&req, &env).await,
        (Route::AdminKeys, Method::Get | Method::Head) => crate::admin::list(&env).await,
        (Route::AdminKey(id), Method::Delete) => crate::admin::revoke(&env, id).await,
        _ => Err(ApiError::MethodNotAllowed {
            allow: route.allow(),
        }),
    }
}

fn accepted(status: u16, id: ImageId) -> Response {
    let headers = Headers::new();
    let _ = headers.set("location", &status_url(&id));
    http::json(status, &Accepted::new(id), headers)
}

/// `POST /images`: record, store, enqueue, answer `202`.
async fn upload(
    req: Request,
    env: Env,
    ctx: Context,
    settings: &Rc<Settings>,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let key = header(&req, "idempotency-key")
        .map(|k| IdempotencyKey::parse(&k))
        .transpose()?;
    let callback = callback_url(&req, settings)?;
    let content_type = header(&req, "content-type");
    let info = BodyInfo {
        content_type: content_type.as_deref(),
        content_length: check_content_length(
            header(&req, "content-length").as_deref(),
            settings.max_upload_bytes,
        )?,
        limit: settings.max_upload_bytes,
        max_pixels: settings.max_pixels,
        // The digest binds an Idempotency-Key to the body; without a key it is not needed.
        digest: key.is_some(),
    };
    // The caller's rate limit and quota, before any body is read.
    crate::auth::admit_upload(&env, caller, settings).await?;
    let store = Store::open_db(&env)?;
    let id = ImageId::from_uuid(uuid::Uuid::new_v4())
        .map_err(|e| ApiError::Internal(format!("uuid: {e}")))?;
    let reservation = match &key {
        Some(key) => {
            let scope = crate::auth::idempotency_scope(caller, settings).await?;
            match store
                .reserve_key(&scope, key.as_str(), &id, now_ms())
                .await?
            {
                Reservation::New => Some((scope, key.as_str().to_string())),
                Reservation::InFlight => return Err(ApiError::IdempotencyKeyInFlight),
                Reservation::Done {
                    image_id,
                    body_sha256,
                } => {
                    let digest = body::digest_only(req.inner(), &info).await?;
                    return if digest == body_sha256 {
                        Ok(accepted(200, image_id))
                    } else {
                        Err(ApiError::IdempotencyKeyReused)
                    };
                }
            }
        }
        None => None,
    };
    let upload = match body::read(req.inner(), &info).await {
        Ok(upload) => upload,
        Err(e) => {
            if let Some((scope, key)) = &reservation {
                let _ = store.release_key(scope, key, &id).await;
            }
            return Err(e);
        }
    };
    // From here on the work runs to its end even if the client disconnects.
    // Exact for a raw body with a length; a form's or a chunked body's is known once stored.
    let size_hint = match multipart::is_multipart(info.content_type) {
        true => 0,
        false => info.content_length.unwrap_or(0),
    };
    let owner = caller.owner().to_string();
    let work = detach(
        &ctx,
        ingest(
            env.clone(),
            store,
            id,
            upload,
            size_hint,
            reservation,
            callback,
            owner.clone(),
        ),
    );
    let uploaded_at = work.await?;
    // Committed and enqueued: the owner's sockets hear of it after the response.
    let event = LiveEvent::queued(id, uploaded_at);
    ctx.wait_until(async move { edge::live::publish_soon(&env, &owner, &event).await });
    log::emit(
        Level::Info,
        log_event::UPLOAD_ACCEPTED,
        &serde_json::json!({ "imageId": id }),
    );
    Ok(accepted(202, id))
}

/// The upload's callback URL: its `Callback-Url` header, else the `WEBHOOK_URL` var. A
/// refused header is the client's `400`, before anything is stored; a refused `WEBHOOK_URL`
/// is the operator's mistake: logged, and the upload goes on without a webhook.
fn callback_url(req: &Request, settings: &Settings) -> Result<Option<String>, ApiError> {
    let url = match header(req, "callback-url") {
        Some(raw) => check_callback(&raw, &settings.callback_policy)?,
        None => match &settings.default_callback {
            None => return Ok(None),
            Some(Ok(url)) => url.clone(),
            Some(Err(e)) => {
                problem::error(
                    "invalid_webhook_url",
                    &format!("WEBHOOK_URL is ignored: {e}"),
                );
                return Ok(None);
            }
        },
    };
    Ok(Some(url.as_str().to_string()))
}

/// Records the image (as `owner`'s), stores its bytes and enqueues it; undoes what it did if
/// a step fails. Returns when it was recorded (its `uploaded_at`).
#[allow(clippy::too_many_arguments)]
async fn ingest(
    env: Env,
    store: Store,
    id: ImageId,
    upload: body::Upload,
    size_hint: u64,
    reservation: Option<(String, String)>,
    callback: Option<String>,
    owner: String,
) -> Result<u64, ApiError> {
    let key = object_key(&id, upload.image_type.extension());
    let mime = upload.image_type.mime();
    let uploaded_at = now_ms();
    let uploaded_at_text = shared::wire::time::format_ms(uploaded_at);
    let undo_key = || async {
        if let Some((scope, key)) = &reservation {
            let _ = store.release_key(scope, key, &id).await;
        }
    };
    if let Err(e) = store
        .insert_queued(
            &id,
            &key,
            mime,
            size_hint,
            uploaded_at,
            callback.as_deref(),
            &owner,
        )
        .await
    {
        undo_key().await;
        return Err(e);
    }
    // A stale pending key is taken over only while its image has no row: if another request
    // took ours over before the insert above, it owns the key, and this upload stops here
    // (the two never both make an image).
    if let Some((scope, idem_key)) = &reservation {
        let holder = store.key_holder(scope, idem_key).await;
        if !matches!(&holder, Ok(Some(h)) if *h == id.to_string()) {
            let _ = store.delete_unfinished(&id).await;
            // Releases nothing unless the key still names this image.
            undo_key().await;
            return Err(holder.err().unwrap_or(ApiError::IdempotencyKeyInFlight));
        }
    }
    let bucket = edge::binding::<Bucket>(&env, binding::IMAGE_BUCKET)
        .map_err(|e| ApiError::Internal(format!("IMAGE_BUCKET binding: {e}")))?;
    let stored = match r2::store(&bucket, &key, upload, &uploaded_at_text).await {
        Ok(stored) => stored,
        Err(e) => {
            let _ = store.delete_unfinished(&id).await;
            undo_key().await;
            return Err(e);
        }
    };
    let message = ImageMessage {
        schema_version: SCHEMA_VERSION,
        image_id: id,
        r2_key: key.clone(),
        content_type: mime.into(),
        size: stored.size,
        uploaded_at: uploaded_at_text,
    };
    // The send, and at the same time one statement (issue 25: one D1 round trip less than a
    // size update before the send and a due time after it, and neither waits for the other):
    // the size (a form's or a chunked body's is only known now), the due time (the
    // reconciler never takes an upload in progress for a lost message), and the check that
    // the row still exists. Making the image due a moment before its message is sent is
    // safe: if the send fails, the row goes below; if the upload stops before it, the
    // reconciler finds the image overdue and sends it (its bytes are stored).
    let (sent, kept) = join(
        enqueue(&env, &message),
        store.sent(&id, stored.size, now_ms()),
    )
    .await;
    if let Err(e) = sent {
        // Nothing must stay recorded or stored that no message will ever tag.
        let _ = r2::delete(&bucket, &key).await;
        let _ = store.delete_unfinished(&id).await;
        undo_key().await;
        return Err(e);
    }
    // A `DELETE` during the upload removed the row, and maybe the object before the put
    // wrote it: the object goes too, and nothing is left behind (the message finds no row,
    // and the tagger drops it). If D1 failed, the upload is undone the same way.
    if !matches!(kept, Ok(true)) {
        if let Err(e) = r2::delete(&bucket, &key).await {
            problem::error("object_not_deleted", &format!("{key}: {e:?}"));
        }
        let _ = store.delete_unfinished(&id).await;
        undo_key().await;
        return Err(match kept {
            Err(e) => e,
            Ok(_) => ApiError::ImageDeleted,
        });
    }
    if let Some((scope, key)) = &reservation {
        if let Some(digest) = &stored.sha256 {
            if let Err(e) = store.complete_key(scope, key, &id, digest).await {
                // The image is safely queued; the key stays pending and is taken over later.
                problem::warn("idempotency_key_not_completed", &e.to_string());
            }
        }
    }
    Ok(uploaded_at)
}

/// Sends the message to the tagger's queue, as JSON.
async fn enqueue(env: &Env, message: &ImageMessage) -> Result<(), ApiError> {
    edge::binding::<Queue>(env, binding::IMAGE_QUEUE)
        .map_err(|e| ApiError::Internal(format!("IMAGE_QUEUE binding: {e}")))?
        .send(
            MessageBuilder::new(message)
                .content_type(QueueContentType::Json)
                .build(),
        )
        .await
        .or_unavailable("queue send")
}

/// The image's view: a done record from KV (the fast path), else the system of record.
/// `done` is final, so KV's copy of it is right; `failed` is not (a redrive can still tag the
/// image), so a failed record is always read from D1, and a KV write that failed after a
/// redrive can never show `failed` for an image that is done. For a client (`owner`), D1
/// also says whether the image is its own: another's is a `404` exactly as one that does
/// not exist.
async fn view(env: &Env, id: ImageId, owner: Option<&str>) -> Result<View, ApiError> {
    let store = Store::open(env)?;
    let published = store.published(&id).await?;
    if let Some(owner) = owner {
        let row = store
            .owned_image(&id, owner)
            .await?
            .ok_or(ApiError::ImageNotFound)?;
        return match published {
            Some(record) if record.status == Status::Done => Ok(View::Finished(record)),
            _ => row.view().ok_or(ApiError::ImageNotFound),
        };
    }
    if let Some(record) = published {
        if record.status == Status::Done {
            return Ok(View::Finished(record));
        }
    }
    store
        .image(&id)
        .await?
        .and_then(|row| row.view())
        .ok_or(ApiError::ImageNotFound)
}

/// Replaces the webhook marker of a record from KV (or a row) with the live delivery
/// record from D1. Only images with a callback carry the marker, so only they pay the read;
/// if it fails, the marker is shown (the record itself matters more).
async fn with_notification(env: &Env, id: ImageId, mut record: TagRecord) -> TagRecord {
    if record.notification.is_none() {
        return record;
    }
    let live = match Store::open(env) {
        Ok(store) => store.notification(&id).await,
        Err(e) => Err(e),
    };
    match live {
        Ok(Some(row)) => record.notification = Some(Box::new(row.view())),
        Ok(None) => {}
        Err(e) => problem::warn("notification_unavailable", &e.to_string()),
    }
    record
}

/// `GET /images/{id}`: the record once finished, else the queued view.
async fn status(env: &Env, id: ImageId, owner: Option<&str>) -> Result<Response, ApiError> {
    Ok(match view(env, id, owner).await? {
        View::Finished(record) => {
            let record = with_notification(env, id, record).await;
            http::json(200, &record, Headers::new())
        }
        View::Queued(queued) => http::json(200, &queued, Headers::new()),
    })
}

/// `GET /images/{id}/tags`: just the tags once done; otherwise as `GET /images/{id}`.
async fn tags(env: &Env, id: ImageId, owner: Option<&str>) -> Result<Response, ApiError> {
    Ok(match view(env, id, owner).await? {
        View::Finished(record) if record.status == Status::Done => {
            let tags = TagsView {
                image_id: id,
                tags: &record.tags,
            };
            http::json(200, &tags, Headers::new())
        }
        View::Finished(record) => {
            let record = with_notification(env, id, record).await;
            http::json(200, &record, Headers::new())
        }
        View::Queued(queued) => http::json(200, &queued, Headers::new()),
    })
}

thread_local! {
    /// This isolate's copy of the pacer's last usage answer.
    static USAGE: std::cell::RefCell<UsageCache<UsageReport>> =
        const { std::cell::RefCell::new(UsageCache::new()) };
}

/// `GET /admin/usage`: today's Workers AI calls, from the tagger's pacer, and the calls saved
/// by reuse (a count of a partial index in D1). An isolate asks the
/// pacer at most once per [`shared::api::auth::USAGE_CACHE_MS`] ([`UsageCache`]), so that no
/// request rate reaches the object the tagger's `acquire` needs.
async fn usage(env: &Env) -> Result<Response, ApiError> {
    let now = now_ms();
    if let Some(usage) = USAGE.with(|u| u.borrow().get(now)) {
        return Ok(http::json(200, &usage, Headers::new()));
    }
    USAGE.with(|u| u.borrow_mut().asking(now));
    let usage = UsageReport {
        usage: ask_usage(env).await?,
        ai_calls_saved: Store::open(env)?.ai_calls_saved().await?,
    };
    USAGE.with(|u| u.borrow_mut().answered(now, usage.clone()));
    Ok(http::json(200, &usage, Headers::new()))
}

/// Today's AI calls, asked of the pacer object.
async fn ask_usage(env: &Env) -> Result<Usage, ApiError> {
    let stub = env
        .durable_object(binding::AI_PACER)
        .and_then(|ns| ns.get_by_name(shared::tagging::pacer::OBJECT_NAME))
        .map_err(|e| ApiError::Internal(format!("AI_PACER binding: {e}")))?;
    let init = worker::RequestInit {
        method: worker::Method::Post,
        body: Some(
            serde_json::to_string(&shared::tagging::pacer::Ask::Usage)
                .unwrap_or_default()
                .into(),
        ),
        ..worker::RequestInit::default()
    };
    let req = Request::new_with_init("https://pacer/", &init)
        .map_err(|e| ApiError::Internal(format!("pacer request: {e}")))?;
    let mut res = stub
        .fetch_with_request(req)
        .await
        .or_unavailable("AI pacer")?;
    res.json().await.or_unavailable("AI pacer answer")
}
