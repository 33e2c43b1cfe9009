//! Webhooks: telling a client when its image is done.
//!
//! An upload may name a callback URL (the `Callback-Url` header, else the `WEBHOOK_URL`
//! var), checked by [`url`] and stored with the image. When the tagger records an image as
//! done or failed, the same D1 batch records the event in the `notifications` table (the
//! outbox, [`crate::storage::outbox`]), so that no crash between the two can lose it. The tagger then
//! enqueues a [`NotifyMessage`] on `notification-queue`; its consumer signs the event
//! ([`sign`]) and posts it, and [`retry::decide`] says what to do with the answer. The
//! reconciler re-enqueues deliveries whose message was lost.
//!
//! Delivery is at least once: receivers deduplicate on `webhook-id`.

pub mod retry;
pub mod sign;
pub mod url;

use serde::{Deserialize, Serialize};

use crate::wire::record::{status_url, Category, ErrorInfo, Label};
use crate::wire::time::format_ms;
use crate::{ImageId, Status};

/// The events a receiver gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `image.tagged`: the image is done.
    Tagged,
    /// `image.failed`: the image failed for good (a later redrive may still tag it).
    Failed,
}

impl EventType {
    pub const ALL: [Self; 2] = [Self::Tagged, Self::Failed];

    /// The `type` of the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tagged => "image.tagged",
            Self::Failed => "image.failed",
        }
    }

    /// Parses a stored `type`.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// The event a transition into `status` raises.
    pub fn for_status(status: Status) -> Option<Self> {
        match status {
            Status::Done => Some(Self::Tagged),
            Status::Failed => Some(Self::Failed),
            Status::Queued => None,
        }
    }

    /// The image status the event reports.
    pub fn status(self) -> Status {
        match self {
            Self::Tagged => Status::Done,
            Self::Failed => Status::Failed,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Tagged => "tagged",
            Self::Failed => "failed",
        }
    }
}

/// The `webhook-id` of an image's event: `msg_` + the image id's hex + the event's kind.
///
/// An image raises each event at most once (`done` is final, and a failed image that fails
/// again raises nothing new), so the id is derived rather than drawn: the same on every
/// retry, unique across events, and a second insert of the same event is a no-op.
pub fn event_id(image_id: &ImageId, event: EventType) -> String {
    let hex: String = image_id.to_string().chars().filter(|c| *c != '-').collect();
    format!("msg_{hex}_{}", event.suffix())
}

/// Whether a string has the shape of an [`event_id`] (checked before it names a row).
pub fn is_event_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with("msg_")
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The body of a webhook, signed and sent as is on every attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `image.tagged` or `image.failed`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the image was recorded as done or failed (RFC 3339).
    pub timestamp: String,
    pub data: EventData,
}

/// What an event says about its image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    pub image_id: ImageId,
    /// `done` or `failed`.
    pub status: Status,
    /// The tags (empty for a failed image).
    pub tags: Vec<String>,
    /// `image.tagged`: the categories above the threshold, with their scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<Category>>,
    /// `image.tagged`: every label with its score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<Label>>,
    /// `image.failed`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// `/images/{imageId}`, relative to the API's origin, as in the upload's answer.
    pub status_url: String,
}

impl Event {
    /// `image.tagged`, at `now_ms`, with the image's categories.
    pub fn tagged(
        image_id: ImageId,
        tags: Vec<String>,
        categories: Vec<Category>,
        labels: Vec<Label>,
        now_ms: u64,
    ) -> Self {
        let mut event = Self::new(
            EventType::Tagged,
            image_id,
            tags,
            Some(labels),
            None,
            now_ms,
        );
        event.data.categories = Some(categories);
        event
    }

    /// `image.failed`, at `now_ms`.
    pub fn failed(image_id: ImageId, error: ErrorInfo, now_ms: u64) -> Self {
        Self::new(
            EventType::Failed,
            image_id,
            Vec::new(),
            None,
            Some(error),
            now_ms,
        )
    }

    fn new(
        event: EventType,
        image_id: ImageId,
        tags: Vec<String>,
        labels: Option<Vec<Label>>,
        error: Option<ErrorInfo>,
        now_ms: u64,
    ) -> Self {
        Self {
            event_type: event.as_str().into(),
            timestamp: format_ms(now_ms),
            data: EventData {
                image_id,
                status: event.status(),
                tags,
                categories: None,
                labels,
                error,
                status_url: status_url(&image_id),
            },
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The schema version of [`NotifyMessage`].
pub const NOTIFY_SCHEMA_VERSION: u32 = 1;

/// A message on `notification-queue`: deliver this event. Everything else is in its row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyMessage {
    pub schema_version: u32,
    pub event_id: String,
}

impl NotifyMessage {
    pub fn new(event_id: String) -> Self {
        Self {
            schema_version: NOTIFY_SCHEMA_VERSION,
            event_id,
        }
    }

    /// Decodes a body, refusing unknown versions and ids of the wrong shape.
    pub fn decode(json: &str) -> Result<Self, String> {
        let message: Self = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if message.schema_version != NOTIFY_SCHEMA_VERSION {
            return Err(format!(
                "unsupported schema version {} (this build understands {NOTIFY_SCHEMA_VERSION})",
                message.schema_version
            ));
        }
        if !is_event_id(&message.event_id) {
            return Err("eventId is not an event id".into());
        }
        Ok(message)
    }
}

/// What became of one message of `notification-queue`, as the tagger logs it (the
/// `outcome` of a `tagger.notify` line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOutcome {
    /// A `2xx` answer.
    Delivered,
    /// Not delivered; tried again after `delaySeconds`.
    Retry,
    /// Given up: recorded as failed.
    Failed,
    /// Not due yet, or another delivery holds it: the message comes back later.
    Deferred,
    /// Delivered or given up already: the message was a duplicate.
    Skipped,
    /// No such event (its image was deleted).
    Gone,
    /// A body this build cannot decode: kept in KV.
    Poison,
}

impl DeliveryOutcome {
    pub const ALL: [Self; 7] = [
        Self::Delivered,
        Self::Retry,
        Self::Failed,
        Self::Deferred,
        Self::Skipped,
        Self::Gone,
        Self::Poison,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Deferred => "deferred",
            Self::Skipped => "skipped",
            Self::Gone => "gone",
            Self::Poison => "poison",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::{DeliveryState, NotificationView};

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";

    #[test]
    fn event_ids_are_derived_and_distinct() {
        let id = ImageId::parse(ID).unwrap();
        let tagged = event_id(&id, EventType::Tagged);
        assert_eq!(tagged, "msg_3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f_tagged");
        assert_ne!(tagged, event_id(&id, EventType::Failed));
        assert!(is_event_id(&tagged));
        assert!(
            !tagged.contains('.'),
            "the id is part of the signed content"
        );
        for bad in ["", "msg_a.b", "x_1", "msg_ü", &"msg_1".repeat(20)] {
            assert!(!is_event_id(bad), "{bad}");
        }
    }

    #[test]
    fn payloads() {
        let id = ImageId::parse(ID).unwrap();
        let label = Label {
            label: "TABBY".into(),
            score: 0.9,
        };
        let cat = Category {
            name: "cat".into(),
            score: 0.9,
        };
        let tagged = Event::tagged(
            id,
            vec!["TABBY".into()],
            vec![cat],
            vec![label],
            1_764_417_600_000,
        );
        let json: serde_json::Value = serde_json::from_str(&tagged.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "image.tagged",
                "timestamp": "2025-11-29T12:00:00.000Z",
                "data": {
                    "imageId": ID, "status": "done", "tags": ["TABBY"],
                    "categories": [{"name": "cat", "score": 0.9}],
                    "labels": [{"label": "TABBY", "score": 0.9}],
                    "statusUrl": format!("/images/{ID}"),
                }
            })
        );
        let failed = Event::failed(
            id,
            ErrorInfo {
                code: "invalid_image".into(),
                message: "no".into(),
            },
            0,
        );
        let json: serde_json::Value = serde_json::from_str(&failed.to_json()).unwrap();
        assert_eq!(json["type"], "image.failed");
        assert_eq!(json["data"]["status"], "failed");
        assert_eq!(json["data"]["tags"], serde_json::json!([]));
        assert_eq!(json["data"]["error"]["code"], "invalid_image");
        assert!(json["data"].get("labels").is_none());
        assert_eq!(EventType::parse("image.failed"), Some(EventType::Failed));
        assert_eq!(EventType::for_status(Status::Queued), None);
    }

    #[test]
    fn notify_messages() {
        let id = ImageId::parse(ID).unwrap();
        let m = NotifyMessage::new(event_id(&id, EventType::Tagged));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(NotifyMessage::decode(&json), Ok(m));
        assert!(NotifyMessage::decode(r#"{"schemaVersion":2,"eventId":"msg_1"}"#).is_err());
        assert!(NotifyMessage::decode(r#"{"schemaVersion":1,"eventId":"../x"}"#).is_err());
        assert!(NotifyMessage::decode("nope").is_err());
    }

    #[test]
    fn the_marker_is_small() {
        assert_eq!(
            serde_json::to_string(&NotificationView::marker()).unwrap(),
            r#"{"state":"pending","attempts":0}"#
        );
        assert_eq!(DeliveryState::parse("delivered"), DeliveryState::Delivered);
        assert_eq!(DeliveryState::parse("??"), DeliveryState::Pending);
        for o in DeliveryOutcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
