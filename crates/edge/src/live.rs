//! Live updates, the sending side both workers share: after a committed transition, hand its
//! event to the client's object (`LIVE_EVENTS`, one per owner id), which sends it to the
//! client's open sockets. Best-effort: one request, bounded by
//! [`shared::api::live::PUBLISH_TIMEOUT_MS`], never retried; a failure is a `warn` line and
//! nothing else (the webhook is the reliable path, and D1 has the state).

use std::time::Duration;

use futures_util::future::{select, Either};
use shared::api::live::{path, LiveEvent, PUBLISH_TIMEOUT_MS};
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
    let sent = select(
        Box::pin(send(env, owner, event)),
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
        &serde_json::json!({ "eventId": event.id, "owner": owner, "error": error }),
    );
}

async fn send(env: &Env, owner: &str, event: &LiveEvent) -> worker::Result<()> {
    let stub = object(env, owner)?;
    let init = RequestInit {
        method: Method::Post,
        body: Some(event.to_json().into()),
        ..RequestInit::default()
    };
    let req = Request::new_with_init(&format!("https://live{}", path::PUBLISH), &init)?;
    let res = stub.fetch_with_request(req).await?;
    match res.status_code() {
        200..=299 => Ok(()),
        status => Err(format!("the live object answered {status}").into()),
    }
}
