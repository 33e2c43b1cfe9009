//! Live updates (issue 24), the front door: `POST /events/ticket` and `GET /events`. The
//! socket itself is held by the client's `LiveEvents` Durable Object (one per owner id,
//! in the tagger worker: the upload worker binds it by `script_name`, as it binds the AI
//! pacer, so neither worker needs the other deployed first). The rules (events, tickets) are
//! [`shared::api::live`]; this module does the I/O.

use std::cell::RefCell;

use edge::now_ms;
use edge::OrUnavailable;
use shared::api::auth::{Need, Scope};
use shared::api::live::{
    self as rules, header, offered, parse_event_id, parse_ticket, path, IssuedTicket, TicketKey,
    LAST_EVENT_ID_PARAM, TICKET_KEY_LABEL, TICKET_TTL_MS,
};
use shared::api::ApiError;
use worker::wasm_bindgen::JsValue;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use crate::cursor_mac::{hmac, hmac_key, raw_key};
use crate::http;
use crate::settings::Settings;

thread_local! {
    static TICKET_KEY: RefCell<Option<(JsValue, TicketKey)>> = const { RefCell::new(None) };
}

/// The ticket key of this isolate: `HMAC(cursor key, TICKET_KEY_LABEL)`, never the cursor
/// key itself.
async fn ticket_key(settings: &Settings) -> Result<(JsValue, TicketKey), ApiError> {
    if let Some(key) = TICKET_KEY.with(|k| k.borrow().clone()) {
        return Ok(key);
    }
    let (raw, public) = raw_key(settings).await?;
    let derived = hmac(&hmac_key(&raw).await?, TICKET_KEY_LABEL).await?;
    let kind = match public {
        true => TicketKey::Public,
        false => TicketKey::Secret,
    };
    let key = (hmac_key(&derived).await?, kind);
    TICKET_KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
    Ok(key)
}

/// `POST /events/ticket`: a ticket for the caller's own updates, valid for 60 s.
pub async fn ticket(owner: &str, settings: &Settings) -> Result<Response, ApiError> {
    let (key, kind) = ticket_key(settings).await?;
    if !kind.allows(owner) {
        // An open API's key is public: a client key's ticket could be forged under it.
        return Err(ApiError::Unauthorized);
    }
    let expires = now_ms() + TICKET_TTL_MS;
    let mac = hmac(&key, rules::ticket_payload(owner, expires).as_bytes()).await?;
    let issued = IssuedTicket::new(rules::ticket(owner, expires, &mac), expires);
    Ok(http::json(200, &issued, Headers::new()))
}

fn header_of(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// `GET /events`: authenticates (a ticket offered as a subprotocol, else the API's own
/// way: `Authorization`, or an anonymous caller where allowed), then hands the upgrade to
/// the caller's object. Refused before any upgrade: `426` without `Upgrade: websocket`,
/// `401` for a bad ticket or credential, `400` for a malformed `lastEventId`.
pub async fn connect(req: &Request, env: &Env, settings: &Settings) -> Result<Response, ApiError> {
    let upgrade = header_of(req, "upgrade").unwrap_or_default();
    if !upgrade.trim().eq_ignore_ascii_case("websocket") {
        return Err(ApiError::UpgradeRequired);
    }
    let protocols = header_of(req, "sec-websocket-protocol");
    let (speaks, ticket) = offered(protocols.as_deref());
    let owner = match ticket {
        Some(ticket) => {
            let claim = parse_ticket(ticket)?;
            let (key, kind) = ticket_key(settings).await?;
            let expected = hmac(&key, claim.payload.as_bytes()).await?;
            claim.verify(&expected, kind, now_ms())?.to_string()
        }
        None => {
            let caller = crate::auth::authenticate(req, env, settings).await?;
            caller.allow(Need::Scope(Scope::ImagesRead))?;
            caller.owner().to_string()
        }
    };
    let url = req
        .url()
        .map_err(|e| ApiError::Internal(format!("request url: {e}")))?;
    let mut last = None;
    for (name, value) in url.query_pairs() {
        if name != LAST_EVENT_ID_PARAM || last.is_some() {
            return Err(ApiError::InvalidQuery(format!(
                "GET /events takes one parameter, {LAST_EVENT_ID_PARAM}"
            )));
        }
        if parse_event_id(&value).is_none() {
            return Err(ApiError::InvalidQuery(format!(
                "{LAST_EVENT_ID_PARAM} is not an event id"
            )));
        }
        last = Some(value.into_owned());
    }
    let headers = Headers::new();
    let set = |name: &str, value: &str| {
        headers
            .set(name, value)
            .map_err(|e| ApiError::Internal(format!("header {name}: {e}")))
    };
    set("upgrade", "websocket")?;
    set(header::OWNER, &owner)?;
    if let Some(last) = &last {
        set(header::LAST_EVENT_ID, last)?;
    }
    if speaks {
        set(header::PROTOCOL, "1")?;
    }
    let init = RequestInit {
        method: Method::Get,
        headers,
        ..RequestInit::default()
    };
    let inner = Request::new_with_init(&format!("https://live{}", path::CONNECT), &init)
        .map_err(|e| ApiError::Internal(format!("live request: {e}")))?;
    edge::live::object(env, &owner)
        .map_err(|e| ApiError::Internal(format!("LIVE_EVENTS binding: {e}")))?
        .fetch_with_request(inner)
        .await
        .or_unavailable("live object")
}
