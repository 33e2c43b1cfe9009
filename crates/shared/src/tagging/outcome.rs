//! What became of one queue message: logged as `outcome` on the tagger's JSON lines.

use serde::{Deserialize, Serialize};

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
