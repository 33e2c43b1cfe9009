//! What the tagger stores in KV and the upload worker reports.

use serde::{Deserialize, Serialize};

use crate::labels::{confident, Label};
use crate::{ImageId, ImageMessage, TagError};

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

/// The tag record of one image: the value of [`crate::keys::record_key`] in KV.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub image_id: ImageId,
    pub status: Status,
    /// Labels scoring above `minScore`, best first.
    pub tags: Vec<Label>,
    /// Every label the model returned.
    pub labels: Vec<Label>,
    pub model: String,
    /// The threshold `tags` was filtered with.
    pub min_score: f64,
    /// RFC 3339.
    pub processed_at: String,
    pub r2_key: String,
    /// Why a `failed` image failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Delivery attempts it took, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

impl TagRecord {
    /// The record of a successful classification.
    pub fn done(
        msg: &ImageMessage,
        model: &str,
        labels: Vec<Label>,
        min_score: f64,
        attempts: u32,
        processed_at: String,
    ) -> Self {
        Self {
            image_id: msg.image_id,
            status: Status::Done,
            tags: confident(&labels, min_score),
            labels,
            model: model.into(),
            min_score,
            processed_at,
            r2_key: msg.r2_key.clone(),
            error: None,
            attempts: Some(attempts),
        }
    }

    /// The record of an image that will never be tagged.
    pub fn failed(
        msg: &ImageMessage,
        model: &str,
        min_score: f64,
        error: &TagError,
        attempts: Option<u32>,
        processed_at: String,
    ) -> Self {
        Self {
            image_id: msg.image_id,
            status: Status::Failed,
            tags: Vec::new(),
            labels: Vec::new(),
            model: model.into(),
            min_score,
            processed_at,
            r2_key: msg.r2_key.clone(),
            error: Some(error.info()),
            attempts,
        }
    }
}

/// `GET /images/{id}` for an image stored but not yet tagged.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedView {
    pub image_id: ImageId,
    pub status: Status,
}

impl QueuedView {
    /// The view of a queued image.
    pub fn new(image_id: ImageId) -> Self {
        Self {
            image_id,
            status: Status::Queued,
        }
    }
}

/// `GET /images/{id}/tags` once the image is done.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagsView<'a> {
    pub image_id: ImageId,
    pub tags: &'a [Label],
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
    pub fn new(message_id: &str, queue: &str, error: &TagError, body: &str, now: String) -> Self {
        let mut end = body.len().min(Self::MAX_BODY);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            message_id: message_id.into(),
            queue: queue.into(),
            error: error.info(),
            body: body[..end].into(),
            received_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::SCHEMA_VERSION;

    fn msg() -> ImageMessage {
        ImageMessage {
            schema_version: SCHEMA_VERSION,
            image_id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap(),
            r2_key: "images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.jpg".into(),
            content_type: "image/jpeg".into(),
            size: 10,
            uploaded_at: "2026-11-28T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn done_record_keeps_all_labels_and_filters_tags() {
        let labels = vec![
            Label {
                label: "TABBY".into(),
                score: 0.9,
            },
            Label {
                label: "TIGER CAT".into(),
                score: 0.8,
            },
        ];
        let r = TagRecord::done(&msg(), "m", labels.clone(), 0.8, 1, "t".into());
        assert_eq!(r.tags, labels[..1]);
        assert_eq!(r.labels, labels);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "done");
        assert_eq!(json["minScore"], 0.8);
        assert!(json.get("error").is_none());
        assert_eq!(serde_json::from_value::<TagRecord>(json).unwrap(), r);
    }

    #[test]
    fn failed_record_carries_the_reason() {
        let r = TagRecord::failed(
            &msg(),
            "m",
            0.8,
            &TagError::ObjectMissing,
            Some(1),
            "t".into(),
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "failed");
        assert_eq!(json["error"]["code"], "object_missing");
        assert_eq!(json["attempts"], 1);
    }

    #[test]
    fn poison_body_is_truncated_on_a_char_boundary() {
        let body = "é".repeat(PoisonRecord::MAX_BODY);
        let r = PoisonRecord::new(
            "m1",
            "q",
            &TagError::MalformedMessage("x".into()),
            &body,
            "t".into(),
        );
        assert!(r.body.len() <= PoisonRecord::MAX_BODY);
        assert!(r.body.chars().all(|c| c == 'é'));
    }
}
