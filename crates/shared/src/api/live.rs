//! Live updates over a WebSocket (`GET /events`), as pure functions: the events a socket
//! carries, the ticket a browser connects with, and which missed events a reconnect gets.
//!
//! - **Events** are the webhook's JSON ([`crate::webhook::Event`]: `type`, `timestamp`,
//!   `data`) plus its id (the webhook's `webhook-id`), so that one parser serves both. A
//!   socket also carries `image.queued` and `image.deleted`, which webhooks do not. Ids are
//!   derived from the image and the event, as webhook ids are: an image raises each at most
//!   once, a replay repeats the same id, and clients deduplicate on it.
//! - **Tickets**: a browser cannot set `Authorization` on a WebSocket, and a key in the URL
//!   lands in logs and history. `POST /events/ticket` (with the key) returns a ticket valid
//!   for [`TICKET_TTL_MS`], bound to the caller's owner id and signed with HMAC-SHA-256 under
//!   a key of its own ([`TICKET_KEY_LABEL`]: never the cursor key, so a cursor can never be a
//!   ticket). The browser offers it as a subprotocol (`Sec-WebSocket-Protocol:
//!   image-tagger.v1, ticket.<t>`), which is not logged as a URL is.
//! - **Replay**: a client that reconnects passes the last event id it saw; it gets the
//!   events D1 can rebuild since then, within [`REPLAY_WINDOW_MS`] and at most
//!   [`REPLAY_MAX_IMAGES`] images ([`replay_since`], `storage::live`).

use serde::{Deserialize, Serialize};

use crate::api::auth::{KeyId, ANONYMOUS, OPERATOR};
use crate::api::{constant_time_eq, ApiError};
use crate::webhook::{Event, EventData};
use crate::wire::base64;
use crate::wire::record::{status_url, Category, ErrorInfo, Label};
use crate::wire::time::format_ms;
use crate::ImageId;

/// The subprotocol the socket speaks; the server answers with it.
pub const PROTOCOL: &str = "image-tagger.v1";
/// A ticket is offered as the subprotocol `ticket.<ticket>`.
pub const TICKET_PROTOCOL_PREFIX: &str = "ticket.";
/// How long a ticket opens a socket: 60 s (it is used once, at once).
pub const TICKET_TTL_MS: u64 = 60_000;
/// The message whose HMAC under the cursor key is the ticket key: a key of its own.
pub const TICKET_KEY_LABEL: &[u8] = b"image-tagger live ticket key v1";
/// The longest ticket read (longer ones are refused unread).
pub const MAX_TICKET_LEN: usize = 128;
/// How far back a reconnect is replayed: 10 minutes.
pub const REPLAY_WINDOW_MS: u64 = 10 * 60_000;
/// The most images one replay reads from D1 (each gives one or two events).
pub const REPLAY_MAX_IMAGES: u32 = 200;
/// The query parameter of `GET /events` naming the last event a client saw.
pub const LAST_EVENT_ID_PARAM: &str = "lastEventId";
/// How long a worker waits for the client's object to take an event, in ms.
pub const PUBLISH_TIMEOUT_MS: u64 = 1000;
/// How long the upload worker holds a client's events before it sends them to the client's
/// object in one request, in ms: a burst of uploads in one isolate costs the object (a billed
/// request each, and one object serves the client's whole fleet) and the upload's CPU one
/// request instead of one per upload (issue 25).
pub const PUBLISH_COALESCE_MS: u64 = 50;
/// The most events one request to the object carries; more are sent at once.
pub const PUBLISH_MAX_EVENTS: usize = 64;
/// The text message a client may send; the object answers with a [`Control::Pong`].
pub const PING: &str = "ping";
/// Headers of the requests a worker sends the client's object (never a client's).
pub mod header {
    /// The owner id the worker authenticated.
    pub const OWNER: &str = "x-live-owner";
    /// The last event id the client saw, checked by the worker.
    pub const LAST_EVENT_ID: &str = "x-live-last-event-id";
    /// Whether the client offered [`super::PROTOCOL`] (`"1"`): the answer names it then.
    pub const PROTOCOL: &str = "x-live-protocol";
}
/// Paths of the object's internal requests.
pub mod path {
    /// Upgrade: a client's socket.
    pub const CONNECT: &str = "/connect";
    /// `POST` an event to every socket.
    pub const PUBLISH: &str = "/publish";
}

/// The events a socket carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiveKind {
    /// `image.queued`: the upload was accepted (after its `202`).
    Queued,
    /// `image.tagged`: done, as the webhook.
    Tagged,
    /// `image.failed`: failed, as the webhook.
    Failed,
    /// `image.deleted`: `DELETE /images/{id}`.
    Deleted,
}

impl LiveKind {
    pub const ALL: [Self; 4] = [Self::Queued, Self::Tagged, Self::Failed, Self::Deleted];

    /// The event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "image.queued",
            Self::Tagged => "image.tagged",
            Self::Failed => "image.failed",
            Self::Deleted => "image.deleted",
        }
    }

    /// The `data.status` it reports.
    pub fn status(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Tagged => "done",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Tagged => "tagged",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }

    /// Whether the image's status after it is final for the socket (a terminal event
    /// supersedes `queued`, whatever order they arrive in).
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued)
    }
}

/// The id of an image's event: `msg_` + the image id's hex + the kind. For `image.tagged`
/// and `image.failed` it is the webhook's `webhook-id` ([`crate::webhook::event_id`]).
pub fn event_id(image_id: &ImageId, kind: LiveKind) -> String {
    let hex: String = image_id.to_string().chars().filter(|c| *c != '-').collect();
    format!("msg_{hex}_{}", kind.suffix())
}

/// The image and kind an [`event_id`] names, or `None` for anything else.
pub fn parse_event_id(id: &str) -> Option<(ImageId, LiveKind)> {
    let rest = id.strip_prefix("msg_")?;
    let (hex, suffix) = rest.split_once('_')?;
    let kind = LiveKind::ALL.into_iter().find(|k| k.suffix() == suffix)?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let image_id = ImageId::parse(&uuid).ok()?;
    // Canonical only: the id must be the one this image's event has.
    (event_id(&image_id, kind) == id).then_some((image_id, kind))
}

/// One event on a socket: the webhook's body and its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// The event id (for `image.tagged` and `image.failed`, the webhook's).
    pub id: String,
    /// `image.queued`, `image.tagged`, `image.failed` or `image.deleted`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened (RFC 3339), as the webhook's.
    pub timestamp: String,
    pub data: LiveData,
}

/// What an event says about its image: the webhook's `data`, with `status` also `queued`
/// or `deleted`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveData {
    pub image_id: ImageId,
    /// `queued`, `done`, `failed` or `deleted`.
    pub status: String,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<Category>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Label>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub status_url: String,
}

impl LiveEvent {
    /// `image.queued` of an upload recorded at `at_ms`.
    pub fn queued(image_id: ImageId, at_ms: u64) -> Self {
        Self::bare(image_id, LiveKind::Queued, at_ms)
    }

    /// `image.deleted`, at `at_ms`.
    pub fn deleted(image_id: ImageId, at_ms: u64) -> Self {
        Self::bare(image_id, LiveKind::Deleted, at_ms)
    }

    fn bare(image_id: ImageId, kind: LiveKind, at_ms: u64) -> Self {
        Self {
            id: event_id(&image_id, kind),
            event_type: kind.as_str().into(),
            timestamp: format_ms(at_ms),
            data: LiveData {
                image_id,
                status: kind.status().into(),
                tags: Vec::new(),
                categories: None,
                labels: None,
                error: None,
                status_url: status_url(&image_id),
            },
        }
    }

    /// The socket's copy of a webhook event (`image.tagged` or `image.failed`).
    pub fn from_webhook(event: Event) -> Self {
        let kind = match event.data.status {
            crate::Status::Done => LiveKind::Tagged,
            crate::Status::Failed => LiveKind::Failed,
            crate::Status::Queued => LiveKind::Queued,
        };
        let EventData {
            image_id,
            tags,
            categories,
            labels,
            error,
            status_url,
            ..
        } = event.data;
        Self {
            id: event_id(&image_id, kind),
            event_type: event.event_type,
            timestamp: event.timestamp,
            data: LiveData {
                image_id,
                status: kind.status().into(),
                tags,
                categories,
                labels,
                error,
                status_url,
            },
        }
    }

    /// The JSON text sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The body of a request that hands events to the client's object: their JSON texts, one
/// per line (compact JSON never holds a raw newline: serde escapes it in strings). One
/// event's body is its JSON text.
pub fn publish_body(events: &[String]) -> String {
    events.join("\n")
}

/// The events of a [`publish_body`], in order.
pub fn published_events(body: &str) -> impl Iterator<Item = &str> {
    body.split('\n').filter(|line| !line.is_empty())
}

/// Messages of the socket's own, beside events (their `type`s start with `live.`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Control {
    /// Sent once when a socket opens, after its replay: from here on every event comes.
    #[serde(rename = "live.ready")]
    Ready {
        /// Events replayed from D1 before this.
        replayed: u32,
        /// `false` when the replay may have left events out (the last event id was
        /// unknown or older than the window, or the window held more than the limit): a
        /// client then reloads its list.
        complete: bool,
    },
    /// The answer to [`PING`]: how many sockets the object holds, and since when it has been
    /// in memory (its start time in ms; a new value means the object was evicted and
    /// started again, while the sockets stayed open: hibernation).
    #[serde(rename = "live.pong")]
    #[serde(rename_all = "camelCase")]
    Pong { sockets: u32, object_started: u64 },
}

impl Control {
    /// The JSON text sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where a replay starts, and whether it can be complete: `anchor_ms` is when the last event
/// the client saw happened (`None` when D1 no longer knows it: its image was deleted, or
/// the id is of another owner's image). Events at `since` or later are sent (except the
/// anchor itself); the result is complete only if the anchor is known and within the window.
pub fn replay_since(anchor_ms: Option<u64>, now_ms: u64) -> (u64, bool) {
    let floor = now_ms.saturating_sub(REPLAY_WINDOW_MS);
    match anchor_ms {
        Some(at) if at >= floor => (at, true),
        _ => (floor, false),
    }
}

/// The subprotocols a client offered (`Sec-WebSocket-Protocol`): whether it offered
/// [`PROTOCOL`], and the ticket it offered, if any.
pub fn offered(header: Option<&str>) -> (bool, Option<&str>) {
    let mut speaks = false;
    let mut ticket = None;
    for p in header.unwrap_or_default().split(',').map(str::trim) {
        if p == PROTOCOL {
            speaks = true;
        } else if let Some(t) = p.strip_prefix(TICKET_PROTOCOL_PREFIX) {
            ticket = Some(t);
        }
    }
    (speaks, ticket)
}

/// Which ticket key signs tickets, as [`crate::api::search::CursorKey`] chose the cursor key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketKey {
    /// Derived from a secret (`CURSOR_SECRET` or `API_TOKEN`): tickets for every owner.
    Secret,
    /// The open API's public key: anyone could forge a ticket, so only the anonymous
    /// client's are accepted (it is everyone's anyway).
    Public,
}

impl TicketKey {
    /// Whether a ticket for `owner` may be issued and accepted under this key.
    pub fn allows(self, owner: &str) -> bool {
        self == Self::Secret || owner == ANONYMOUS
    }
}

/// Whether a string is an owner id: a key id, `operator` or `anonymous`.
pub fn is_owner(owner: &str) -> bool {
    owner == OPERATOR || owner == ANONYMOUS || KeyId::parse(owner).is_some()
}

/// The signed part of a ticket: `v1.<owner>.<expires ms>`.
pub fn ticket_payload(owner: &str, expires_ms: u64) -> String {
    format!("v1.{owner}.{expires_ms}")
}

/// The ticket: its payload and the payload's MAC (base64url).
pub fn ticket(owner: &str, expires_ms: u64, mac: &[u8]) -> String {
    format!(
        "{}.{}",
        ticket_payload(owner, expires_ms),
        base64::url_encode(mac)
    )
}

/// A ticket, read but not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketClaim<'a> {
    /// What the MAC covers.
    pub payload: &'a str,
    pub owner: &'a str,
    pub expires_ms: u64,
    pub mac: Vec<u8>,
}

/// Reads a ticket's parts: `401 invalid_ticket` if it is not one.
pub fn parse_ticket(text: &str) -> Result<TicketClaim<'_>, ApiError> {
    if text.len() > MAX_TICKET_LEN {
        return Err(ApiError::InvalidTicket);
    }
    let (payload, mac) = text.rsplit_once('.').ok_or(ApiError::InvalidTicket)?;
    let mut parts = payload.split('.');
    let (Some("v1"), Some(owner), Some(expires), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::InvalidTicket);
    };
    let expires_ms = match expires.bytes().all(|b| b.is_ascii_digit()) && expires.len() <= 15 {
        true => expires.parse().map_err(|_| ApiError::InvalidTicket)?,
        false => return Err(ApiError::InvalidTicket),
    };
    let mac = base64::url_decode(mac).ok_or(ApiError::InvalidTicket)?;
    if !is_owner(owner) || mac.len() != 32 {
        return Err(ApiError::InvalidTicket);
    }
    Ok(TicketClaim {
        payload,
        owner,
        expires_ms,
        mac,
    })
}

impl TicketClaim<'_> {
    /// The owner the ticket opens, if `expected_mac` (the MAC of [`Self::payload`] under
    /// `key`) matches, it has not expired at `now_ms`, and `key` allows its owner.
    pub fn verify(
        &self,
        expected_mac: &[u8],
        key: TicketKey,
        now_ms: u64,
    ) -> Result<&str, ApiError> {
        let genuine = constant_time_eq(&self.mac, expected_mac);
        if !genuine || now_ms > self.expires_ms || !key.allows(self.owner) {
            return Err(ApiError::InvalidTicket);
        }
        Ok(self.owner)
    }
}

/// The body of `POST /events/ticket`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedTicket {
    pub ticket: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The subprotocols to offer: `[PROTOCOL, "ticket.<ticket>"]`.
    pub protocols: [String; 2],
    /// Where to connect, relative to the API's origin.
    pub url: &'static str,
}

impl IssuedTicket {
    pub fn new(ticket: String, expires_ms: u64) -> Self {
        let protocol = format!("{TICKET_PROTOCOL_PREFIX}{ticket}");
        Self {
            ticket,
            expires_at: format_ms(expires_ms),
            protocols: [PROTOCOL.into(), protocol],
            url: "/events",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::{self, EventType};

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    const KEY: &str = "key_0123456789abcdef0123";

    fn id() -> ImageId {
        ImageId::parse(ID).unwrap()
    }

    #[test]
    fn a_publish_body_gives_back_its_events_even_with_newlines_in_their_text() {
        let mut tagged = LiveEvent::queued(id(), 1);
        tagged.data.tags = vec!["line one\nline two".into(), "\n".into()];
        let events = [
            LiveEvent::queued(id(), 1_700_000_000_000).to_json(),
            tagged.to_json(),
            LiveEvent::deleted(id(), 1_700_000_000_001).to_json(),
        ];
        let body = publish_body(&events);
        let back: Vec<&str> = published_events(&body).collect();
        assert_eq!(back, events.iter().map(String::as_str).collect::<Vec<_>>());
        let parsed: LiveEvent = serde_json::from_str(back[1]).unwrap();
        assert_eq!(parsed, tagged);
        // One event's body is the event itself: an older worker's publish still reads.
        assert_eq!(publish_body(&events[..1]), events[0]);
        assert_eq!(published_events(&events[0]).count(), 1);
        assert_eq!(published_events("").count(), 0);
    }

    #[test]
    fn ids_are_the_webhooks_and_parse_back() {
        assert_eq!(
            event_id(&id(), LiveKind::Tagged),
            webhook::event_id(&id(), EventType::Tagged)
        );
        assert_eq!(
            event_id(&id(), LiveKind::Failed),
            webhook::event_id(&id(), EventType::Failed)
        );
        for kind in LiveKind::ALL {
            let e = event_id(&id(), kind);
            assert!(webhook::is_event_id(&e), "{e}");
            assert_eq!(parse_event_id(&e), Some((id(), kind)));
        }
        for bad in [
            "",
            "msg_",
            "msg_3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f",
            "msg_3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f_done",
            "msg_3F2B8C1E9D4A4B7E8C2D1A2B3C4D5E6F_queued",
            "msg_3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6_queued",
            "msg_3f2b8c1e9d4a1b7e8c2d1a2b3c4d5e6f_queued",
            "msg_zz2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f_queued",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    /// A socket's `image.tagged` is the webhook's body plus its id: one parser serves both.
    #[test]
    fn events_are_the_webhooks_json_with_an_id() {
        let tagged = Event::tagged(
            id(),
            vec!["TABBY".into()],
            vec![Category {
                name: "cat".into(),
                score: 0.9,
            }],
            vec![Label {
                label: "TABBY".into(),
                score: 0.9,
            }],
            1_764_417_600_000,
        );
        let failed = Event::failed(
            id(),
            ErrorInfo {
                code: "invalid_image".into(),
                message: "no".into(),
            },
            5,
        );
        for (event, kind) in [(tagged, LiveKind::Tagged), (failed, LiveKind::Failed)] {
            let hook: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
            let live = LiveEvent::from_webhook(event);
            let mut json: serde_json::Value = serde_json::from_str(&live.to_json()).unwrap();
            assert_eq!(json["id"], event_id(&id(), kind));
            json.as_object_mut().unwrap().remove("id");
            assert_eq!(json, hook);
        }
        let queued: serde_json::Value =
            serde_json::from_str(&LiveEvent::queued(id(), 0).to_json()).unwrap();
        assert_eq!(
            queued,
            serde_json::json!({
                "id": "msg_3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f_queued",
                "type": "image.queued",
                "timestamp": "1970-01-01T00:00:00.000Z",
                "data": { "imageId": ID, "status": "queued", "tags": [],
                          "statusUrl": format!("/images/{ID}") }
            })
        );
        let deleted = LiveEvent::deleted(id(), 0);
        assert_eq!(deleted.event_type, "image.deleted");
        assert_eq!(deleted.data.status, "deleted");
        let back: LiveEvent = serde_json::from_str(&deleted.to_json()).unwrap();
        assert_eq!(back, deleted);
    }

    #[test]
    fn control_messages() {
        assert_eq!(
            Control::Ready {
                replayed: 2,
                complete: true
            }
            .to_json(),
            r#"{"type":"live.ready","replayed":2,"complete":true}"#
        );
        assert_eq!(
            Control::Pong {
                sockets: 3,
                object_started: 9
            }
            .to_json(),
            r#"{"type":"live.pong","sockets":3,"objectStarted":9}"#
        );
    }

    #[test]
    fn the_replay_window() {
        let now = 100 * REPLAY_WINDOW_MS;
        assert_eq!(replay_since(Some(now - 5), now), (now - 5, true));
        assert_eq!(
            replay_since(Some(now - REPLAY_WINDOW_MS), now),
            (now - REPLAY_WINDOW_MS, true)
        );
        assert_eq!(
            replay_since(Some(now - REPLAY_WINDOW_MS - 1), now),
            (now - REPLAY_WINDOW_MS, false)
        );
        assert_eq!(replay_since(None, now), (now - REPLAY_WINDOW_MS, false));
        assert_eq!(replay_since(None, 5), (0, false));
    }

    #[test]
    fn offered_protocols() {
        assert_eq!(offered(None), (false, None));
        assert_eq!(offered(Some(PROTOCOL)), (true, None));
        assert_eq!(
            offered(Some("image-tagger.v1, ticket.v1.anonymous.5.abc")),
            (true, Some("v1.anonymous.5.abc"))
        );
        assert_eq!(offered(Some("chat,ticket.x")), (false, Some("x")));
    }

    #[test]
    fn tickets_round_trip_and_refuse_tampering() {
        let mac = [7u8; 32];
        let t = ticket(KEY, 1000, &mac);
        // Every character is a valid subprotocol token character.
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        let claim = parse_ticket(&t).unwrap();
        assert_eq!(claim.payload, ticket_payload(KEY, 1000));
        assert_eq!(claim.verify(&mac, TicketKey::Secret, 1000), Ok(KEY));
        // Expired, forged, or a client's under the public key.
        let expired = claim.verify(&mac, TicketKey::Secret, 1001);
        assert_eq!(expired, Err(ApiError::InvalidTicket));
        assert_eq!(
            claim.verify(&[8u8; 32], TicketKey::Secret, 0),
            Err(ApiError::InvalidTicket)
        );
        assert_eq!(
            claim.verify(&mac, TicketKey::Public, 0),
            Err(ApiError::InvalidTicket)
        );
        let anon = ticket(ANONYMOUS, 1000, &mac);
        assert_eq!(
            parse_ticket(&anon)
                .unwrap()
                .verify(&mac, TicketKey::Public, 0),
            Ok(ANONYMOUS)
        );
        for bad in [
            String::new(),
            "v1.anonymous.5".into(),
            format!("v2.{KEY}.5.{}", base64::url_encode(&mac)),
            format!("v1.key_x.5.{}", base64::url_encode(&mac)),
            format!("v1.{KEY}.-5.{}", base64::url_encode(&mac)),
            format!("v1.{KEY}.5.{}", base64::url_encode(&mac[..16])),
            format!("v1.{KEY}.5.x.{}", base64::url_encode(&mac)),
            format!("v1.{KEY}.{}.{}", "9".repeat(20), base64::url_encode(&mac)),
            "a".repeat(MAX_TICKET_LEN + 1),
        ] {
            assert_eq!(parse_ticket(&bad), Err(ApiError::InvalidTicket), "{bad}");
        }
    }

    #[test]
    fn issued_tickets_name_their_protocols() {
        let issued = IssuedTicket::new("v1.anonymous.5.abc".into(), 5);
        assert_eq!(
            issued.protocols,
            [PROTOCOL.to_string(), "ticket.v1.anonymous.5.abc".into()]
        );
        assert!(is_owner(OPERATOR) && is_owner(KEY) && !is_owner("key_"));
    }
}
