//! Live updates, the sending side both workers share: after a committed transition, hand its
//! event to the client's object (`LIVE_EVENTS`, one per owner id), which sends it to the
//! client's open sockets. Best-effort: one request, bounded by
//! [`shared::api::live::PUBLISH_TIMEOUT_MS`], never retried; a failure is a `warn` line and
//! nothing else (the webhook is the reliable path, and D1 has the state).
//!
//! [`publish_soon`] holds an isolate's events for one client for
//! [`PUBLISH_COALESCE_MS`] and sends them in one request: the upload worker's way, so that a
//! burst of uploads costs one request to the client's object, not one each.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{select, Either};
use shared::api::live::{
    path, publish_body, LiveEvent, PUBLISH_COALESCE_MS, PUBLISH_MAX_EVENTS, PUBLISH_TIMEOUT_MS,
};
use shared::wire::config::binding;
use shared::wire::log_event;
use worker::{Delay, Env, Method, Request, RequestInit, Stub};

use crate::log::{self, Level};

/// The object of `owner`'s live updates.
pub fn object(env: &Env, owner: &str) -> worker::Result<Stub> {
    env.durable_object(binding::LIVE_EVENTS)?.get_by_name(owner)
}

/// Sends `event` to `owner`'s sockets; never fails, waits at most the publish timeout.
pub async fn publish(env: &Env, owner: &str, event: &LiveEvent) {
    publish_all(env, owner, std::slice::from_ref(event)).await;
}

/// Sends `events` (one owner's) to `owner`'s sockets in one request; never fails, waits at
/// most the publish timeout.
pub async fn publish_all(env: &Env, owner: &str, events: &[LiveEvent]) {
    let Some(first) = events.first() else {
        return;
    };
    let lines: Vec<String> = events.iter().map(LiveEvent::to_json).collect();
    deliver(env, owner, &first.id, lines.len(), publish_body(&lines)).await;
}

thread_local! {
    /// Events waiting in this isolate for their client's next request, by owner id.
    static PENDING: RefCell<HashMap<String, Vec<String>>> = RefCell::new(HashMap::new());
}

/// Sends `event` to `owner`'s sockets within [`PUBLISH_COALESCE_MS`], together with the
/// events this isolate publishes for `owner` meanwhile (at most [`PUBLISH_MAX_EVENTS`] per
/// request). The first event's call waits out the window and sends them all; the others
/// return at once. Run it after the response (`waitUntil`); it never fails.
pub async fn publish_soon(env: &Env, owner: &str, event: &LiveEvent) {
    let waiting = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        let events = pending.entry(owner.to_string()).or_default();
        events.push(event.to_json());
        events.len()
    });
    if waiting == 1 {
        // The window's first event: the call that sends them all.
        Delay::from(Duration::from_millis(PUBLISH_COALESCE_MS)).await;
    } else if waiting < PUBLISH_MAX_EVENTS {
        return;
    }
    // (A full window is sent at once; the first call's wait then finds what came after it,
    // or nothing.)
    let Some(events) = PENDING.with(|pending| pending.borrow_mut().remove(owner)) else {
        return;
    };
    deliver(env, owner, &event.id, events.len(), publish_body(&events)).await;
}

/// Hands `body` (`events` events: [`publish_body`]) to `owner`'s object, bounded by the
/// publish timeout; a failure is a `warn` line naming `event_id`, the caller's.
async fn deliver(env: &Env, owner: &str, event_id: &str, events: usize, body: String) {
    let sent = select(
        Box::pin(send(env, owner, body)),
        Box::pin(Delay::from(Duration::from_millis(PUBLISH_TIMEOUT_MS))),
    )
    .await;
    let error = match sent {
        Either::Left((Ok(()), _)) => return,
        Either::Left((Err(e), _)) => e.to_string(),
        Either::Right(_) => format!("no answer within {PUBLISH_TIMEOUT_MS} ms"),
    };
    log::emit(
        Level::Warn,
        log_event::LIVE_PUBLISH_FAILED,
        &serde_json::json!({
            "eventId": event_id, "events": events, "owner": owner, "error": error,
        }),
    );
}

async fn send(env: &Env, owner: &str, body: String) -> worker::Result<()> {
    let stub = object(env, owner)?;
    let init = RequestInit {
        method: Method::Post,
        body: Some(body.into()),
        ..RequestInit::default()
    };
    let req = Request::new_with_init(&format!("https://live{}", path::PUBLISH), &init)?;
    let res = stub.fetch_with_request(req).await?;
    match res.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("the live object answered {status}").into()),
    }
}
