//! What the tagger stores in KV and the upload worker reports.

use serde::{Deserialize, Serialize};

use crate::categories::{categorise, Category};
use crate::labels::{confident, Label};
use crate::{ImageId, TagError};

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

/// The record of a finished image: the value of [`crate::keys::record_key`] in KV (the
/// fast read path), and the body of `GET /images/{id}` once it is done or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub image_id: ImageId,
    pub status: Status,
    /// Names of the labels scoring above `minScore`, best first.
    pub tags: Vec<String>,
    /// The categories scoring above `minScore` (the sum of their labels' scores), best
    /// first; see [`crate::categories`]. Empty in records written before categories.
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
    /// The webhook delivery of the image's latest event, for an image with a callback. In
    /// KV only a marker (see [`crate::webhook::NotificationView`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Box<crate::webhook::NotificationView>>,
}

impl TagRecord {
    /// Whether the record is final (it always is, unless written by a foreign build).
    pub fn is_terminal(&self) -> bool {
        self.status != Status::Queued
    }
}

/// What the tagger learned about an image, to build its record from.
#[derive(Clone, Debug, PartialEq)]
pub struct Classified {
    pub labels: Vec<Label>,
    pub model: String,
    pub min_score: f64,
}

impl Classified {
    /// The tag names: labels strictly above `min_score`, best first.
    pub fn tags(&self) -> Vec<String> {
        confident(&self.labels, self.min_score)
            .into_iter()
            .map(|l| l.label)
            .collect()
    }

    /// The categories scoring strictly above `min_score`, best first.
    pub fn categories(&self) -> Vec<Category> {
        categorise(&self.labels, self.min_score)
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

    fn label(label: &str, score: f64) -> Label {
        Label {
            label: label.into(),
            score,
        }
    }

    #[test]
    fn tags_are_the_confident_label_names_best_first() {
        let c = Classified {
            labels: vec![
                label("TIGER CAT", 0.81),
                label("TABBY", 0.9),
                label("LYNX", 0.8),
            ],
            model: "m".into(),
            min_score: 0.8,
        };
        assert_eq!(c.tags(), ["TABBY", "TIGER CAT"]);
        let cat = c.categories().into_iter().find(|c| c.name == "cat");
        assert_eq!(cat.map(|c| c.score), Some(1.0), "2.51, capped");
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
            &TagError::MalformedMessage("x".into()),
            &body,
            "t".into(),
        );
        assert!(r.body.len() <= PoisonRecord::MAX_BODY);
        assert!(r.body.chars().all(|c| c == 'é'));
    }
}
