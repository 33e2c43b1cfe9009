//! What became of one queue message: logged as `outcome` on the tagger's JSON lines.

use serde::{Deserialize, Serialize};

/// The `event` field of the workers' JSON log lines.
pub mod event {
    /// The tagger: what became of one delivery of one message.
    pub const MESSAGE: &str = "tagger.message";
    /// The tagger's cron: what the reconciler did.
    pub const RECONCILE: &str = "tagger.reconcile";
    /// The upload worker: an image was accepted.
    pub const UPLOAD_ACCEPTED: &str = "upload.accepted";
    /// The upload worker: an image was deleted.
    pub const UPLOAD_DELETED: &str = "upload.deleted";
    /// The tagger's cron: what retention deleted.
    pub const RETENTION: &str = "tagger.retention";
    /// The tagger's cron: one image it re-enqueued or failed.
    pub const RECONCILE_IMAGE: &str = "tagger.reconcile.image";
    /// The tagger's cron: one webhook delivery it enqueued again.
    pub const RECONCILE_NOTIFICATION: &str = "tagger.reconcile.notification";
    /// The tagger's cron, hourly: today's Workers AI calls.
    pub const AI_USAGE: &str = "tagger.ai_usage";
    /// The upload worker: a request failed (logged with its detail; the client gets a code).
    pub const UPLOAD_PROBLEM: &str = "upload.problem";
    /// The tagger's cron: a var is set to a value it refuses (the feature stays off).
    pub const CONFIG_INVALID: &str = "tagger.config_invalid";
}

/// The outcome of one delivery of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Tagged now.
    Done,
    /// Already tagged: nothing called or written.
    Skipped,
    /// Another message of the same batch was about the same image.
    Duplicate,
    /// The image was deleted (or never recorded): acked without work.
    Gone,
    /// The image failed for good; its record says why.
    Failed,
    /// A transient error: retried after a backoff.
    Retry,
    /// Not tagged yet through no fault of the image (the AI is busy, paced, over budget, or
    /// another delivery holds it): tried again later, without limit on the count.
    Deferred,
    /// As `deferred`, but sent again as a new message because the queue's retries ran low.
    Resent,
    /// A body that cannot be acted on: kept under `poison:{messageId}` and acked.
    Poison,
}

impl Outcome {
    /// Whether the message is finished (acked) with this outcome; the others come back.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Retry | Self::Deferred)
    }

    /// Every outcome, for the generated contract.
    pub const ALL: [Outcome; 9] = [
        Self::Done,
        Self::Skipped,
        Self::Duplicate,
        Self::Gone,
        Self::Failed,
        Self::Retry,
        Self::Deferred,
        Self::Resent,
        Self::Poison,
    ];
}
