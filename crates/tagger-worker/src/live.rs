//! Live updates (issue 24): the `LiveEvents` Durable Object, one per client (named by its
//! owner id), holding the client's WebSockets. The upload worker hands it each socket
//! (`GET /events`, authenticated there); both workers send it each committed transition
//! ([`edge::live::publish`]), and it sends the event to every socket it holds. Sockets are
//! accepted with the hibernation API (`state.acceptWebSocket`): an idle object leaves memory
//! while its sockets stay open, and costs no duration. A reconnect's replay is read from D1
//! ([`shared::storage::live`]).

use edge::d1::{n, s, Db};
use edge::log::{self, Level};
use edge::now_ms;
use shared::api::live::{
    self as rules, header, parse_event_id, path, published_events, replay_since, Control, PROTOCOL,
    REPLAY_MAX_IMAGES,
};
use shared::api::ApiError;
use shared::storage::images::ImageRow;
use shared::storage::live as sql;
use shared::wire::log_event;
use worker::{
    durable_object, DurableObject, Env, Request, Response, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

fn header_of(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// One client's live updates: its open sockets, hibernatable.
#[durable_object]
pub struct LiveEvents {
    state: State,
    env: Env,
    /// When this instance started (ms): a new value under the same open sockets shows the
    /// object was evicted and started again (hibernation). Sent in [`Control::Pong`].
    started: u64,
}

impl LiveEvents {
    /// Accepts a socket (hibernatable), replays what its client missed, and says it is ready.
    async fn open(&self, req: &Request) -> worker::Result<Response> {
        let Some(owner) = header_of(req, header::OWNER).filter(|o| rules::is_owner(o)) else {
            return Response::error("no owner", 400);
        };
        let last = header_of(req, header::LAST_EVENT_ID);
        let pair = WebSocketPair::new()?;
        // Accepted first, so that nothing published during the replay is lost (it may come
        // twice, or before a replayed event: clients deduplicate on the id).
        self.state.accept_web_socket(&pair.server);
        let (replayed, complete) = match self.replay(&pair.server, &owner, last.as_deref()).await {
            Ok(done) => done,
            Err(e) => {
                log::problem(Level::Warn, log_event::LIVE_SOCKET, &e.to_string());
                (0, false)
            }
        };
        pair.server
            .send_with_str(Control::Ready { replayed, complete }.to_json())?;
        log::emit(
            Level::Info,
            log_event::LIVE_SOCKET,
            &serde_json::json!({
                "action": "open", "owner": owner, "replayed": replayed, "complete": complete,
                "sockets": self.state.get_websockets().len(),
            }),
        );
        let mut res = Response::from_websocket(pair.client)?;
        if header_of(req, header::PROTOCOL).is_some() {
            res.headers_mut().set("sec-websocket-protocol", PROTOCOL)?;
        }
        Ok(res)
    }

    /// Sends the events since `last` that D1 can rebuild ([`sql::replay`]).
    async fn replay(
        &self,
        ws: &WebSocket,
        owner: &str,
        last: Option<&str>,
    ) -> Result<(u32, bool), ApiError> {
        let Some(last) = last else {
            return Ok((0, true));
        };
        let Some((image, kind)) = parse_event_id(last) else {
            return Ok((0, false));
        };
        let now = now_ms();
        let db = Db::<ApiError>::open(&self.env)?;
        let anchor: Option<ImageRow> = db
            .first(
                "D1 live anchor",
                sql::SELECT_ANCHOR,
                &[s(&image.to_string()), s(owner)],
            )
            .await?;
        let (since, complete) = replay_since(anchor.and_then(|r| sql::anchor_ms(&r, kind)), now);
        let rows: Vec<ImageRow> = db
            .all(
                "D1 live replay",
                sql::SELECT_CHANGED,
                &[s(owner), n(since), n(u64::from(REPLAY_MAX_IMAGES))],
            )
            .await?;
        let whole = rows.len() < REPLAY_MAX_IMAGES as usize;
        let events = sql::replay(&rows, since, Some(last));
        for event in &events {
            ws.send_with_str(event.to_json())
                .map_err(|e| ApiError::Internal(format!("socket send: {e}")))?;
        }
        Ok((events.len() as u32, complete && whole))
    }
}

impl DurableObject for LiveEvents {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            started: now_ms(),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        match req.path().as_str() {
            path::CONNECT => self.open(&req).await,
            path::PUBLISH => {
                // One event, or a window's events from one isolate, one per line.
                let body = req.text().await?;
                let sockets = self.state.get_websockets();
                let mut sent = 0u32;
                for event in published_events(&body) {
                    for ws in &sockets {
                        // A socket closing meanwhile refuses: the others still get it.
                        if ws.send_with_str(event).is_ok() {
                            sent += 1;
                        }
                    }
                }
                Response::from_json(&serde_json::json!({ "sent": sent }))
            }
            _ => Response::error("not found", 404),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        if matches!(&message, WebSocketIncomingMessage::String(text) if text == rules::PING) {
            let pong = Control::Pong {
                sockets: self.state.get_websockets().len() as u32,
                object_started: self.started,
            };
            ws.send_with_str(pong.to_json())?;
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        // Completes the closing handshake; the socket may be gone already.
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        let _ = ws.close(Some(1011), Some("error"));
        Ok(())
    }
}
