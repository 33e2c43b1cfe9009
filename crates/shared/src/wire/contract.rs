//! The contract shared with JavaScript: every name, key shape, code and default that the
//! local launcher, the tests and the benchmarks need, generated from the Rust definitions
//! into `local/contract.json`. JavaScript imports that file (through `local/contract.mjs`)
//! and never spells these facts out itself.
//!
//! `cargo test -p shared` fails when the file is stale; `UPDATE_CONTRACT=1 cargo test -p
//! shared contract` rewrites it.

use serde_json::{json, Value};

use crate::api::auth;
use crate::api::search;
use crate::api::ApiError;
use crate::storage::{images as db, manage};
use crate::tagging::error::{TagError, AI_ERROR_CODES};
use crate::tagging::outcome::Outcome;
use crate::webhook::{self, sign, EventType};
use crate::wire::config::{self, binding, queue};
use crate::wire::log_event as event;
use crate::wire::record::DeliveryState;
use crate::wire::{keys, message};
use crate::{ImageId, ImageMessage, ImageType, Status};

/// Where the generated file lives, relative to this crate.
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../local/contract.json");

/// The whole contract, as JSON.
fn contract() -> Value {
    let vars: Vec<Value> = config::all_vars()
        .into_iter()
        .map(|(name, default, doc)| json!({ "name": name, "default": default, "doc": doc }))
        .collect();
    let image_types: Vec<Value> = ImageType::ALL
        .iter()
        .map(|t| json!({ "mime": t.mime(), "ext": t.extension() }))
        .collect();
    let api_errors: Vec<Value> = ApiError::samples()
        .iter()
        .map(|e| json!({ "code": e.code(), "status": e.status() }))
        .collect();
    let tag_errors: Vec<Value> = TagError::samples()
        .iter()
        .map(|e| json!({ "code": e.code(), "retryable": e.is_retryable() }))
        .collect();
    let ai_errors: Vec<Value> = AI_ERROR_CODES
        .iter()
        .map(|c| {
            let error = TagError::from_ai_error(&format!("{}: {}", c.code, c.meaning));
            json!({
                "code": c.code,
                "meaning": c.meaning,
                "httpStatus": c.http_status,
                "kind": c.kind,
                "tagError": error.code(),
            })
        })
        .collect();
    let example = ImageMessage {
        schema_version: message::SCHEMA_VERSION,
        image_id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f")
            .unwrap_or_else(|_| unreachable!()),
        r2_key: "images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.png".into(),
        content_type: "image/png".into(),
        size: 1234,
        uploaded_at: "2026-11-29T12:00:00.000Z".into(),
    };
    // One example of each search shape, to check D1's own plans from JavaScript.
    let search_shapes: Vec<Value> = [
        "limit=50",
        "status=done",
        "tag=tabby",
        "tag=tabby&tag=tiger+cat",
    ]
    .iter()
    .filter_map(|q| search::SearchQuery::parse(q).ok())
    .map(|q| {
        let st = manage::search(&q, None);
        let params: Vec<Value> = st
            .params
            .iter()
            .map(|p| match p {
                manage::Param::Int(n) => json!(n),
                manage::Param::Text(t) => json!(t),
            })
            .collect();
        json!({ "sql": st.sql, "params": params })
    })
    .collect();
    let dashboard_statements = || -> Vec<Value> {
        let window = crate::storage::dashboard::Window::at(1_796_000_000_000);
        crate::storage::dashboard::STATEMENTS
            .iter()
            .zip(window.params())
            .map(|(sql, params)| json!({ "sql": sql, "params": params }))
            .collect()
    };
    json!({
        "comment": "Generated from crates/shared by `UPDATE_CONTRACT=1 cargo test -p shared contract`. Do not edit.",
        "bindings": {
            "imageBucket": binding::IMAGE_BUCKET,
            "imageQueue": binding::IMAGE_QUEUE,
            "notifyQueue": binding::NOTIFY_QUEUE,
            "resultsKv": binding::RESULTS_KV,
            "db": binding::DB,
            "ai": binding::AI,
            "aiPacer": binding::AI_PACER,
            "uploadLimiter": binding::UPLOAD_LIMITER,
            "liveEvents": binding::LIVE_EVENTS,
        },
        "queues": {
            "images": queue::IMAGES,
            "imagesDeadLetter": queue::IMAGES_DEAD_LETTER,
            "notifications": queue::NOTIFICATIONS,
        },
        "databaseName": config::DATABASE_NAME,
        "aiPacerClass": config::AI_PACER_CLASS,
        "liveEventsClass": config::LIVE_EVENTS_CLASS,
        "live": {
            "routes": { "events": config::live_route::EVENTS, "ticket": config::live_route::TICKET },
            "protocol": crate::api::live::PROTOCOL,
            "ticketProtocolPrefix": crate::api::live::TICKET_PROTOCOL_PREFIX,
            "ticketTtlMs": crate::api::live::TICKET_TTL_MS,
            "lastEventIdParam": crate::api::live::LAST_EVENT_ID_PARAM,
            "replayWindowMs": crate::api::live::REPLAY_WINDOW_MS,
            "replayMaxImages": crate::api::live::REPLAY_MAX_IMAGES,
            "ping": crate::api::live::PING,
            "events": crate::api::live::LiveKind::ALL.map(crate::api::live::LiveKind::as_str),
        },
        "model": config::MODEL,
        "keys": keys::templates(),
        "imageTypes": image_types,
        "message": { "schemaVersion": message::SCHEMA_VERSION, "example": example },
        "logEvents": {
            "message": event::MESSAGE,
            "reconcile": event::RECONCILE,
            "uploadAccepted": event::UPLOAD_ACCEPTED,
            "notify": event::NOTIFY,
            "uploadDeleted": event::UPLOAD_DELETED,
            "retention": event::RETENTION,
            "reconcileImage": event::RECONCILE_IMAGE,
            "reconcileNotification": event::RECONCILE_NOTIFICATION,
            "aiUsage": event::AI_USAGE,
            "uploadProblem": event::UPLOAD_PROBLEM,
            "misconfigured": event::MISCONFIGURED,
            "pacerUnavailable": event::PACER_UNAVAILABLE,
            "deferNotRecorded": event::DEFER_NOT_RECORDED,
            "resendFailed": event::RESEND_FAILED,
            "notifyEnqueueFailed": event::NOTIFY_ENQUEUE_FAILED,
            "reconcileError": event::RECONCILE_ERROR,
            "retentionError": event::RETENTION_ERROR,
            "configInvalid": event::CONFIG_INVALID,
            "contentHashFailed": event::CONTENT_HASH_FAILED,
            "livePublishFailed": event::LIVE_PUBLISH_FAILED,
            "liveSocket": event::LIVE_SOCKET,
        },
        "sql": {
            "insertQueued": db::INSERT_QUEUED,
            "markSent": db::MARK_SENT,
            "claim": db::CLAIM,
            "selectKey": db::SELECT_KEY,
            "selectImage": db::SELECT_IMAGE,
            "searchShapes": search_shapes,
            "tagCloud": manage::TAG_CLOUD,
            // The operator dashboard's statements, with the parameters of a window, to
            // check D1's own plans from JavaScript (bench/dashboard.mjs).
            "dashboard": dashboard_statements(),
        },
        "statuses": [Status::Queued, Status::Done, Status::Failed],
        "outcomes": Outcome::ALL,
        "finalOutcomes": Outcome::ALL.iter().filter(|o| o.is_final()).collect::<Vec<_>>(),
        "apiErrors": api_errors,
        "tagErrors": tag_errors,
        "aiErrors": ai_errors,
        "webhooks": {
            "events": EventType::ALL.map(EventType::as_str),
            "deliveryStates": DeliveryState::ALL.map(DeliveryState::as_str),
            "outcomes": webhook::DeliveryOutcome::ALL.map(webhook::DeliveryOutcome::as_str),
            "headers": [sign::HEADER_ID, sign::HEADER_TIMESTAMP, sign::HEADER_SIGNATURE],
            "callbackHeader": "Callback-Url",
            "maxUrlLength": webhook::url::MAX_LEN,
            "timeoutMs": webhook::retry::TIMEOUT_MS,
            "message": { "schemaVersion": webhook::NOTIFY_SCHEMA_VERSION },
        },
        "idempotency": {
            "formDigestPrefix": String::from_utf8_lossy(crate::api::multipart::FORM_DIGEST_PREFIX),
        },
        "vars": vars,
        "auth": {
            "owners": { "operator": auth::OPERATOR, "anonymous": auth::ANONYMOUS },
            "scopes": auth::Scopes::all().names(),
            "keyPrefix": auth::KEY_PREFIX,
            "keyLength": auth::KEY_LEN,
            "keyIdPrefix": auth::KEY_ID_PREFIX,
            "cacheTtlMs": auth::CACHE_TTL_MS,
        },
        "search": {
            "defaultLimit": search::DEFAULT_LIMIT,
            "maxLimit": search::MAX_LIMIT,
            "maxTags": search::MAX_TAGS,
            "tagsDefaultLimit": search::TAGS_DEFAULT_LIMIT,
            "tagsMaxLimit": search::TAGS_MAX_LIMIT,
            "cursorLength": search::CURSOR_LEN,
        },
    })
}

#[test]
fn contract_file_is_current() {
    let fresh = format!(
        "{}\n",
        serde_json::to_string_pretty(&contract()).unwrap_or_default()
    );
    let current = std::fs::read_to_string(PATH).unwrap_or_default();
    if current == fresh {
        return;
    }
    if std::env::var_os("UPDATE_CONTRACT").is_some() {
        std::fs::write(PATH, fresh).expect("write local/contract.json");
    } else {
        panic!("local/contract.json is stale: run `UPDATE_CONTRACT=1 cargo test -p shared contract` and commit it");
    }
}
