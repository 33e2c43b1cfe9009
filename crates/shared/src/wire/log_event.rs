//! The `event` field of both workers' JSON log lines: every event name, in one place.

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
/// The tagger: what became of one message of `notification-queue`.
pub const NOTIFY: &str = "tagger.notify";
/// The tagger's cron: a var is set to a value it refuses (the feature stays off).
pub const CONFIG_INVALID: &str = "tagger.config_invalid";
