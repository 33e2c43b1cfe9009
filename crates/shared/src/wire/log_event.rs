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
/// The tagger cannot work (a binding missing, a queue it has no handler for): its batch is
/// retried. Level `error`.
pub const MISCONFIGURED: &str = "tagger.misconfigured";
/// The AI pacer (Durable Object) did not answer: AI calls go out unpaced, or the hourly
/// usage line is skipped. Level `warn`.
pub const PACER_UNAVAILABLE: &str = "tagger.pacer_unavailable";
/// The tagger could not record an image's next attempt in D1 (the reconciler's cutoff
/// covers it). Level `warn`.
pub const DEFER_NOT_RECORDED: &str = "tagger.defer_not_recorded";
/// A long wait's message could not be sent again: it is retried instead. Level `warn`.
pub const RESEND_FAILED: &str = "tagger.resend_failed";
/// A webhook's delivery could not be enqueued after its transition: the reconciler will.
/// Level `warn`.
pub const NOTIFY_ENQUEUE_FAILED: &str = "tagger.notify_enqueue_failed";
/// One step of the reconciler failed; the run goes on. Level `error`.
pub const RECONCILE_ERROR: &str = "tagger.reconcile.error";
/// Retention could not delete something; the next run tries again. Level `error`.
pub const RETENTION_ERROR: &str = "tagger.retention.error";
/// The tagger's cron: a var is set to a value it refuses (the feature stays off).
pub const CONFIG_INVALID: &str = "tagger.config_invalid";
/// The tagger could not compute an image's content hash (WebCrypto failed): that image is
/// tagged without looking for a same-bytes twin. Level `warn`.
pub const CONTENT_HASH_FAILED: &str = "tagger.content_hash_failed";
/// Either worker: a live update could not be handed to the client's object (it did not
/// answer in time, or failed). The socket is best-effort; the webhook and `GET /images/{id}`
/// still tell. Level `warn`.
pub const LIVE_PUBLISH_FAILED: &str = "live.publish_failed";
/// The upload worker's live-updates object: a socket opened (with its replay) or closed.
pub const LIVE_SOCKET: &str = "live.socket";
