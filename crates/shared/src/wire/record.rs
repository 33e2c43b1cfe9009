//! What the tagger stores in KV and the upload worker reports.

use serde::{Deserialize, Serialize};

use crate::wire::id::ImageId;

/// Where an image is in the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored and enqueued, not yet tagged.
    Queued,
    /// Tagged.
    Done,
    /// Will never be tagged; the record says why.
    Failed,
}

/// A machine-readable reason, as reported to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// The record of a finished image: the value of [`crate::wire::keys::record_key`] in KV (the
/// fast read path), and the body of `GET /images/{id}` once it is done or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub image_id: ImageId,
    pub status: Status,
    /// Names of the labels scoring above `minScore`, best first.
    pub tags: Vec<String>,
    /// The categories scoring above `minScore` (the sum of their labels' scores), best
    /// first (`tagging::categories`). Empty in records written before categories.
    #[serde(default)]
    pub categories: Vec<Category>,
    /// Every label the model returned, with its score.
    pub labels: Vec<Label>,
    pub model: String,
    /// The threshold `tags` was filtered with.
    pub min_score: f64,
    /// RFC 3339.
    pub processed_at: String,
    /// RFC 3339.
    pub uploaded_at: String,
    /// The sniffed MIME type of the upload.
    pub content_type: String,
    /// Size of the upload in bytes.
    pub size: u64,
    /// Why a `failed` image failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Deliveries that worked on it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Done with the labels of this earlier image of the same owner, whose stored bytes are
    /// the same: no AI call was made for this one. (Boxed: a record stays small to move.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<Box<ImageId>>,
    /// The webhook delivery of the image's latest event, for an image with a callback. In
    /// KV only a marker (see [`NotificationView`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Box<NotificationView>>,
}

impl TagRecord {
    /// Whether the record is final (it always is, unless written by a foreign build).
    pub fn is_terminal(&self) -> bool {
        self.status != Status::Queued
    }
}

/// `GET /images/{id}` for an image stored but not yet tagged.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedView {
    pub image_id: ImageId,
    pub status: Status,
    /// RFC 3339, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_at: Option<String>,
    /// Deliveries that worked on it so far, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// When the next attempt is expected (RFC 3339), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// `GET /images/{id}/tags` once the image is done.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagsView<'a> {
    pub image_id: ImageId,
    pub tags: &'a [String],
}

/// Kept in KV for a queue message that could not be decoded, so that it is never lost in
/// silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoisonRecord {
    pub message_id: String,
    /// The queue it arrived on.
    pub queue: String,
    pub error: ErrorInfo,
    /// The body as received, cut to [`PoisonRecord::MAX_BODY`] bytes.
    pub body: String,
    pub received_at: String,
}

impl PoisonRecord {
    /// How much of a poison body is kept.
    pub const MAX_BODY: usize = 4096;

    /// Builds the record, truncating the body on a character boundary.
    pub fn new(message_id: &str, queue: &str, error: ErrorInfo, body: &str, now: String) -> Self {
        let mut end = body.len().min(Self::MAX_BODY);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            message_id: message_id.into(),
            queue: queue.into(),
            error,
            body: body[..end].into(),
            received_at: now,
        }
    }
}

/// One classification: an ImageNet class name and its probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub label: String,
    pub score: f64,
}

/// A category of an image (`crate::tagging::categories`), with the sum of the scores of the
/// image's labels under it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub name: String,
    pub score: f64,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; attempts go on.
    Pending,
    /// A `2xx` answer was received.
    Delivered,
    /// Given up: a final answer, or the retry horizon passed. The image itself is unaffected.
    Failed,
}

impl DeliveryState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored state; anything unknown reads as pending.
    pub fn parse(value: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .unwrap_or(Self::Pending)
    }
}

/// The `notification` of `GET /images/{id}`: the delivery of the image's latest event.
///
/// In a tag record kept in KV it is only a marker, `{"state": "pending"}`, saying that the
/// image has a callback: the upload worker then reads the live record from D1. Images
/// without a callback keep the KV fast path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    /// The `webhook-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// `image.tagged` or `image.failed`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub state: DeliveryState,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The HTTP status of the last answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// What went wrong last: the status and the start of the answer, or the network error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    /// Pending: when the next attempt is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Delivered: when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

impl NotificationView {
    /// The marker a tag record in KV carries for an image with a callback.
    pub fn marker() -> Self {
        Self {
            event_id: None,
            event_type: None,
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            last_attempt_at: None,
            next_attempt_at: None,
            delivered_at: None,
        }
    }
}

/// Path of an image's status resource, also sent as `Location`.
pub fn status_url(id: &ImageId) -> String {
    format!("/images/{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(label: &str, score: f64) -> Label {
        Label {
            label: label.into(),
            score,
        }
    }

    #[test]
    fn records_are_camel_case_json_with_string_tags() {
        let r = TagRecord {
            image_id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap(),
            status: Status::Done,
            tags: vec!["TABBY".into()],
            categories: vec![Category {
                name: "cat".into(),
                score: 0.9,
            }],
            labels: vec![label("TABBY", 0.9)],
            model: "m".into(),
            min_score: 0.8,
            processed_at: "t".into(),
            uploaded_at: "u".into(),
            content_type: "image/png".into(),
            size: 3,
            error: None,
            attempts: Some(1),
            reused_from: None,
            notification: None,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["tags"], serde_json::json!(["TABBY"]));
        assert_eq!(json["minScore"], 0.8);
        assert_eq!(
            json["categories"],
            serde_json::json!([{"name": "cat", "score": 0.9}])
        );
        assert!(json.get("error").is_none());
        assert_eq!(
            serde_json::from_value::<TagRecord>(json.clone()).unwrap(),
            r
        );
        // A record written before categories reads with none.
        let mut old = json;
        old.as_object_mut().unwrap().remove("categories");
        let old: TagRecord = serde_json::from_value(old).unwrap();
        assert!(old.categories.is_empty());
    }

    #[test]
    fn poison_body_is_truncated_on_a_char_boundary() {
        let body = "é".repeat(PoisonRecord::MAX_BODY);
        let r = PoisonRecord::new(
            "m1",
            "q",
            ErrorInfo {
                code: "malformed_message".into(),
                message: "x".into(),
            },
            &body,
            "t".into(),
        );
        assert!(r.body.len() <= PoisonRecord::MAX_BODY);
        assert!(r.body.chars().all(|c| c == 'é'));
    }
}
