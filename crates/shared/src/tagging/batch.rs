//! One batch of queue messages, the consumer's whole orchestration: decode each message on
//! its own, fold duplicates, ask the pacer for AI calls, tag what it grants (concurrently,
//! within a byte budget), stop at a wall (a busy, spent or misconfigured AI), settle with the
//! pacer, and defer, retry, re-send or fail the rest. Every decision about retrying comes
//! from [`decide`].
//!
//! Its I/O goes through [`Io`]: the tagger worker implements it with its bindings, the
//! simulation (`tests/sim`) with its models and a virtual clock. Both run this one
//! [`consume`].

use std::cell::Cell;

use futures_util::stream::{self, StreamExt};

use crate::image::format::ImageType;
use crate::tagging::error::{Class, TagError};
use crate::tagging::labels::{Classified, Label};
use crate::tagging::memory::ByteBudget;
use crate::tagging::outcome::Outcome;
use crate::tagging::pacer::{Ask, Denial, Grant};
use crate::tagging::retry::{
    decide, group, jitter_seed, Delivery, Group, Policy, QueueKind, Verdict, MAX_DELAY_SECONDS,
};
use crate::wire::config::MODEL;
use crate::wire::id::ImageId;
use crate::wire::keys::object_key;
use crate::wire::message::ImageMessage;
use crate::wire::record::{Status, TagRecord};
use crate::wire::time::{format_ms, parse_ms};

/// One delivery of one queue message.
pub trait Delivered {
    /// The queue's message id.
    fn id(&self) -> String;
    /// The delivery attempt, from 1.
    fn attempt(&self) -> u32;
    /// The body as JSON text.
    fn body(&self) -> String;
    /// Marks the message done.
    fn ack(&self);
    /// Marks the message for another delivery after `delay_seconds`.
    fn retry(&self, delay_seconds: u32);
}

/// What a batch needs of an image it claimed.
#[derive(Clone, Debug)]
pub struct ClaimedImage {
    pub r2_key: String,
    /// Bytes of the original.
    pub size: u64,
    pub uploaded_at_ms: u64,
}

/// Where an image stands in D1, as far as a batch asks.
#[derive(Clone, Copy, Debug)]
pub struct ImageState {
    pub status: Status,
    /// The end of a delivery's lease on it, if one was taken.
    pub lease_until: Option<u64>,
    pub uploaded_at_ms: u64,
}

/// What a claim found.
#[derive(Clone, Debug)]
pub enum Claim {
    /// This delivery holds the image until its lease ends.
    Claimed {
        image: ClaimedImage,
        lease_until: u64,
    },
    /// Already finished; its record, if the row makes one.
    Done(Option<Box<TagRecord>>),
    /// Another delivery holds it until then.
    Leased(u64),
    /// No such image: deleted, or never recorded.
    Gone,
}

/// What became of one delivery, for the log line of the message it is passed with.
#[derive(Clone, Debug)]
pub struct Line {
    pub image_id: Option<ImageId>,
    pub outcome: Outcome,
    pub error: Option<TagError>,
    pub delay_seconds: Option<u32>,
    /// When its work started, in ms since the epoch (for the line's duration).
    pub started_ms: u64,
}

/// Events that are not a message's outcome, for the log.
#[derive(Clone, Copy, Debug)]
pub enum Note<'a> {
    /// The pacer could not be asked; calls go out unpaced.
    PacerUnavailable(&'a str),
    /// The next attempt of an image could not be recorded in D1.
    DeferNotRecorded(&'a ImageId, &'a TagError),
    /// A re-send failed; the message is retried instead.
    ResendFailed(&'a ImageId, &'a TagError),
}

/// The batch's I/O. Single-threaded (a Workers isolate, or the simulation's executor), so
/// the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Io {
    type Message: Delivered;
    /// An image prepared for the model.
    type Input;

    /// The clock, in ms since the epoch.
    fn now_ms(&self) -> u64;
    /// Waits `ms` milliseconds.
    async fn sleep_ms(&self, ms: u64);

    /// D1: takes the image's lease for this delivery, or says why not.
    async fn claim(&self, id: &ImageId, now_ms: u64, lease_ms: u64) -> Result<Claim, TagError>;
    /// D1: where the image stands, if it still has a row.
    async fn image(&self, id: &ImageId) -> Result<Option<ImageState>, TagError>;
    /// D1: records the labels; the record if this delivery made the transition (another
    /// delivery's live lease refuses it; `lease` is the end of this delivery's own).
    async fn mark_done(
        &self,
        id: &ImageId,
        classified: &Classified,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError>;
    /// D1: records a permanent failure; the record if this delivery made the transition
    /// (as for [`Io::mark_done`]).
    async fn mark_failed(
        &self,
        id: &ImageId,
        error: &TagError,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError>;
    /// D1: records when the image is next due, releasing `lease`.
    async fn defer(
        &self,
        id: &ImageId,
        due_ms: u64,
        now_ms: u64,
        lease: Option<u64>,
    ) -> Result<(), TagError>;
    /// KV: the published record.
    async fn published(&self, id: &ImageId) -> Result<Option<TagRecord>, TagError>;
    /// KV: publishes a record.
    async fn publish(&self, record: &TagRecord) -> Result<(), TagError>;
    /// KV: removes a record.
    async fn unpublish(&self, id: &ImageId) -> Result<(), TagError>;
    /// KV: keeps a message that cannot be acted on (`now` in RFC 3339).
    async fn keep_poison(
        &self,
        message_id: &str,
        error: &TagError,
        body: &str,
        now: String,
    ) -> Result<(), TagError>;
    /// Enqueues the webhook of a finished image (never fails: the reconciler catches up).
    async fn notify(&self, record: &TagRecord);

    /// The byte budget of images being read and prepared: the isolate's, shared with every
    /// batch running in it.
    fn budget(&self) -> &ByteBudget;
    /// R2 read and preparation for the model (under [`Io::budget`]).
    async fn prepare(&self, r2_key: &str) -> Result<Self::Input, TagError>;
    /// The AI call.
    async fn classify(&self, input: &Self::Input) -> Result<Vec<Label>, TagError>;
    /// The fleet's pacer; an error when it cannot be asked.
    async fn pacer(&self, ask: Ask) -> Result<Grant, String>;
    /// Sends a message again as a new one, after `delay_seconds`.
    async fn resend(&self, body: &ImageMessage, delay_seconds: u32) -> Result<(), TagError>;

    /// Logs what became of one delivery.
    fn log(&self, message: &Self::Message, line: Line);
    /// Logs an event that is not a message's outcome.
    fn note(&self, note: Note<'_>);

    /// The content hash of a prepared image (SHA-256 of its stored bytes, lower-case hex),
    /// if it was computed. None (the default) turns reuse off.
    fn content_hash(&self, _input: &Self::Input) -> Option<String> {
        None
    }
    /// D1: records the image's content hash (under this delivery's lease) and looks for
    /// another image of the same owner with the same bytes, in one transaction
    /// ([`crate::storage::dedupe`]). The default finds none.
    async fn twin(&self, _id: &ImageId, _hash: &str, _now_ms: u64) -> Result<Twin, TagError> {
        Ok(Twin::None)
    }
}

/// An earlier image of the same owner with the same bytes (no paying twice, issue 23).
#[derive(Clone, Debug, PartialEq)]
pub enum Twin {
    /// None: the model is called.
    None,
    /// Done: its labels are reused, with no AI call.
    Done {
        from: ImageId,
        labels: Vec<Label>,
        model: String,
    },
    /// Being tagged by a delivery that looked before this one did, until then: wait for it.
    InFlight(u64),
}

/// The settings a batch reads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: Policy,
    /// Jobs of one batch at once.
    pub concurrency: usize,
    pub lease_ms: u64,
    pub min_score: f64,
    /// Whether a daily AI budget is set (a `Tomorrow` denial is then ours, not Workers AI's).
    pub daily_budget: bool,
}

/// Bytes an image of `size` bytes may hold while it is prepared: the file itself and the
/// decoder's working set, which bounded decoding keeps near the size of the downscaled
/// output whatever the photo's resolution.
pub fn working_bytes(size: u64) -> u64 {
    size + 1024 * 1024
}

/// The messages of one batch about one image: the first is worked on, the others follow it.
type Job<M> = Group<ImageId, (M, ImageMessage)>;

/// Handles a batch from the image queue or its dead letter queue. Never fails: every
/// message is acked or retried on its own.
pub async fn consume<I: Io>(
    io: &I,
    kind: QueueKind,
    messages: Vec<I::Message>,
    settings: &Settings,
) {
    let ctx = Ctx {
        io,
        settings,
        kind,
        wall: Cell::new(None),
    };
    let mut decoded = Vec::new();
    for message in messages {
        let body = message.body();
        let checked = ImageMessage::decode(&body)
            .map_err(TagError::from)
            .and_then(|m| check_key(&m).map(|()| m));
        match checked {
            Ok(m) => decoded.push((m.image_id, (message, m))),
            // It decodes, but names a key its image does not have.
            Err(e @ TagError::MalformedMessage(_)) if ImageMessage::decode(&body).is_ok() => {
                ctx.poison(&message, &body, e).await
            }
            Err(e) => ctx.undecodable(&message, &body, e).await,
        }
    }
    let jobs = group(decoded);
    match kind {
        QueueKind::DeadLetter => {
            stream::iter(jobs)
                .for_each_concurrent(settings.concurrency, |job| ctx.dead_letter(job))
                .await
        }
        QueueKind::Images => ctx.tag_all(jobs).await,
    }
}

/// Why the rest of a batch stops calling the model.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wall {
    /// The AI refused a call as busy.
    Busy,
    /// Workers AI's daily allocation is used up.
    Quota,
    /// The AI refuses this account or model.
    Misconfigured,
}

/// A message to be tried again, once the batch knows when.
struct Later<M> {
    job: Job<M>,
    error: TagError,
    not_before: Option<u64>,
    /// The lease this delivery holds, to release.
    lease: Option<u64>,
    uploaded_at: Option<u64>,
    /// Stopped by a wall: its time comes from the pacer after the batch.
    wall: Option<Wall>,
    started: u64,
}

/// What became of one job in the first phase.
struct Worked<M> {
    later: Option<Later<M>>,
    /// Whether it spent one of the pacer's calls.
    called: bool,
}

impl<M> Worked<M> {
    fn finished(called: bool) -> Self {
        Self {
            later: None,
            called,
        }
    }
}

/// Why classifying stopped.
enum Step {
    /// The batch hit a wall before this image's call.
    Stopped(Wall),
    /// An error, and whether the AI was called.
    Failed(TagError, bool),
    /// An image with the same bytes is being tagged until then: wait for its labels.
    Wait(u64),
}

struct Ctx<'a, I> {
    io: &'a I,
    settings: &'a Settings,
    kind: QueueKind,
    wall: Cell<Option<Wall>>,
}

impl<I: Io> Ctx<'_, I> {
    fn log(
        &self,
        message: &I::Message,
        id: Option<ImageId>,
        started: u64,
        outcome: Outcome,
        error: Option<&TagError>,
        delay_seconds: Option<u32>,
    ) {
        self.io.log(
            message,
            Line {
                image_id: id,
                outcome,
                error: error.cloned(),
                delay_seconds,
                started_ms: started,
            },
        );
    }

    /// Acks every message of a job, logging `outcome` for the first and `duplicate` for the
    /// others.
    fn ack(&self, job: &Job<I::Message>, outcome: Outcome, error: Option<&TagError>, started: u64) {
        let (first, _) = &job.first;
        first.ack();
        self.log(first, Some(job.key), started, outcome, error, None);
        self.ack_duplicates(job, started);
    }

    fn ack_duplicates(&self, job: &Job<I::Message>, started: u64) {
        for (message, _) in &job.duplicates {
            message.ack();
            self.log(
                message,
                Some(job.key),
                started,
                Outcome::Duplicate,
                None,
                None,
            );
        }
    }

    /// A body this build cannot decode.
    async fn undecodable(&self, message: &I::Message, body: &str, error: TagError) {
        let started = self.io.now_ms();
        let id = ImageMessage::sniff_image_id(body);
        // A newer producer's message waits for the newer tagger, up to the queue's retries.
        if let (TagError::NewerSchema(_), QueueKind::Images) = (&error, self.kind) {
            let delivery = self.delivery(message, None);
            if let Verdict::Again {
                delay_seconds,
                outcome,
                ..
            } = decide(error.clone(), None, &delivery, &self.settings.policy)
            {
                message.retry(delay_seconds);
                self.log(
                    message,
                    id,
                    started,
                    outcome,
                    Some(&error),
                    Some(delay_seconds),
                );
                return;
            }
        }
        // An image it names gets a failed record, so that its status never stays queued.
        let error = match error {
            TagError::NewerSchema(v) => TagError::UnsupportedSchema(v),
            other => other,
        };
        let recorded = match id {
            Some(id) => self.record_failure(&id, &error, None).await,
            None => Ok(None),
        };
        let now = format_ms(self.io.now_ms());
        let kept = self.io.keep_poison(&message.id(), &error, body, now).await;
        match recorded.and_then(|record| kept.map(|()| record)) {
            Ok(record) => {
                message.ack();
                // Failed if it failed an image waiting for it; otherwise only kept, as poison.
                let outcome = if record.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Poison
                };
                self.log(message, id, started, outcome, Some(&error), None);
            }
            Err(storage) => self.retry_storage(message, id, started, &storage),
        }
    }

    /// Records a permanent failure in D1 and, if this delivery made the transition, in KV.
    /// `lease` is the end of this delivery's lease, if it holds one: another delivery's live
    /// lease refuses the transition.
    async fn record_failure(
        &self,
        id: &ImageId,
        error: &TagError,
        lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        let record = self
            .io
            .mark_failed(id, error, self.io.now_ms(), lease)
            .await?;
        if let Some(record) = &record {
            self.io.publish(record).await?;
            self.io.notify(record).await;
        }
        Ok(record)
    }

    fn delivery(&self, message: &I::Message, uploaded_at: Option<u64>) -> Delivery {
        Delivery {
            queue: self.kind,
            attempt: message.attempt(),
            now_ms: self.io.now_ms(),
            uploaded_at_ms: uploaded_at,
            seed: jitter_seed(&message.id(), message.attempt()),
        }
    }

    /// The dead letter queue: the image queue gave up on this message (a tagger that kept
    /// crashing on it). Record the image as failed, unless it was tagged after all, or
    /// another delivery is tagging it now (then this one comes back after its lease).
    async fn dead_letter(&self, job: Job<I::Message>) {
        let started = self.io.now_ms();
        match self
            .record_failure(&job.key, &TagError::RetriesExhausted, None)
            .await
        {
            Ok(Some(_)) => self.ack(
                &job,
                Outcome::Failed,
                Some(&TagError::RetriesExhausted),
                started,
            ),
            Ok(None) => {
                let now = self.io.now_ms();
                let outcome = match self.io.image(&job.key).await {
                    Ok(None) => Outcome::Gone,
                    Ok(Some(image))
                        if image.status != Status::Done
                            && image.lease_until.is_some_and(|until| until > now) =>
                    {
                        return self
                            .again(Later {
                                job,
                                error: TagError::Leased,
                                not_before: image.lease_until,
                                lease: None,
                                uploaded_at: Some(image.uploaded_at_ms),
                                wall: None,
                                started,
                            })
                            .await;
                    }
                    _ => Outcome::Skipped,
                };
                self.ack(&job, outcome, None, started)
            }
            Err(e) => {
                let uploaded = parse_ms(&job.first.1.uploaded_at);
                self.again(Later {
                    job,
                    error: e,
                    not_before: None,
                    lease: None,
                    uploaded_at: uploaded,
                    wall: None,
                    started,
                })
                .await
            }
        }
    }

    /// The image queue: pace, tag, defer.
    async fn tag_all(&self, jobs: Vec<Job<I::Message>>) {
        let started = self.io.now_ms();
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len() as u32;
        let grant = self.io.pacer(Ask::Acquire { n }).await;
        let grant = grant.unwrap_or_else(|e| {
            // Pacing protects the AI; without it, calls still go out and a busy AI still
            // defers them. Never stall the pipeline on the pacer.
            self.io.note(Note::PacerUnavailable(&e));
            Grant {
                granted: n,
                start_at_ms: Vec::new(),
                not_before_ms: Vec::new(),
                denial: None,
                used_today: 0,
            }
        });
        let denial_error = match grant.denial {
            Some(Denial::Tomorrow) if self.settings.daily_budget => TagError::BudgetSpent,
            Some(Denial::Tomorrow) => TagError::AiQuota("the daily allocation is used up".into()),
            Some(Denial::Cooling) => TagError::AiBusy("fleet-wide back-off after a refusal".into()),
            Some(Denial::Paced) | None => TagError::Paced,
        };
        let mut slots = grant.not_before_ms.into_iter();
        let mut starts = grant.start_at_ms.into_iter();
        let mut denied = Vec::new();
        let mut granted = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            if (i as u32) < grant.granted {
                granted.push((job, starts.next()));
            } else {
                let uploaded_at = parse_ms(&job.first.1.uploaded_at);
                denied.push(Later {
                    job,
                    error: denial_error.clone(),
                    not_before: slots.next(),
                    lease: None,
                    uploaded_at,
                    wall: None,
                    started,
                });
            }
        }
        let worked: Vec<Worked<I::Message>> = stream::iter(granted)
            .map(|(job, start_at)| self.tag(job, start_at))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let unused = worked.iter().filter(|w| !w.called).count() as u32;
        // Calls the AI answered, whatever the answer, except a refusal.
        let refused =
            |l: &Later<I::Message>| l.wall.is_some() || l.error.class() == Class::Misconfigured;
        let answered = worked
            .iter()
            .filter(|w| w.called && !w.later.as_ref().is_some_and(refused))
            .count() as u32;
        let mut later: Vec<Later<I::Message>> =
            worked.into_iter().filter_map(|w| w.later).collect();
        if unused > 0 || answered > 0 {
            let _ = self.io.pacer(Ask::Settle { unused, answered }).await;
        }
        self.schedule_walled(&mut later).await;
        later.extend(denied);
        stream::iter(later)
            .for_each_concurrent(self.settings.concurrency, |l| self.again(l))
            .await;
    }

    /// Gives the messages stopped by a wall their slots from the pacer: after the fleet-wide
    /// back-off for a busy AI, tomorrow for a spent allocation.
    async fn schedule_walled(&self, later: &mut [Later<I::Message>]) {
        for wall in [Wall::Busy, Wall::Quota] {
            let walled: Vec<&mut Later<I::Message>> =
                later.iter_mut().filter(|l| l.wall == Some(wall)).collect();
            if walled.is_empty() {
                continue;
            }
            let n = walled.len() as u32;
            let ask = match wall {
                Wall::Busy => Ask::Refused { n },
                _ => Ask::Quota { n },
            };
            if let Ok(grant) = self.io.pacer(ask).await {
                for (l, slot) in walled.into_iter().zip(grant.not_before_ms) {
                    l.not_before = Some(slot);
                }
            }
        }
    }

    /// A storage write failed: the message comes back after its attempt's backoff.
    fn retry_storage(
        &self,
        message: &I::Message,
        id: Option<ImageId>,
        started: u64,
        error: &TagError,
    ) {
        let delay = self
            .settings
            .policy
            .backoff
            .delay_seconds(message.attempt(), 0);
        message.retry(delay);
        self.log(message, id, started, Outcome::Retry, Some(error), None);
    }

    /// Keeps a message that cannot be acted on in KV and acks it, without any work.
    async fn poison(&self, message: &I::Message, body: &str, error: TagError) {
        let started = self.io.now_ms();
        let id = ImageMessage::sniff_image_id(body);
        let now = format_ms(self.io.now_ms());
        match self.io.keep_poison(&message.id(), &error, body, now).await {
            Ok(()) => {
                message.ack();
                self.log(message, id, started, Outcome::Poison, Some(&error), None);
            }
            Err(storage) => self.retry_storage(message, id, started, &storage),
        }
    }

    /// Tags one image this batch has a call for, starting the call at `start_at` (the
    /// pacer's schedule) or at once.
    async fn tag(&self, job: Job<I::Message>, start_at: Option<u64>) -> Worked<I::Message> {
        let started = self.io.now_ms();
        let now = started;
        let later = |job, error, not_before, lease, uploaded_at, wall| Later {
            job,
            error,
            not_before,
            lease,
            uploaded_at,
            wall,
            started,
        };
        let uploaded = parse_ms(&job.first.1.uploaded_at);
        let (image, lease) = match self.io.claim(&job.key, now, self.settings.lease_ms).await {
            Err(e) => {
                return Worked {
                    later: Some(later(job, e, None, None, uploaded, None)),
                    called: false,
                }
            }
            Ok(Claim::Gone) => {
                // Deleted: nothing to tag, and no record may stay behind.
                if let Err(e) = self.io.unpublish(&job.key).await {
                    return Worked {
                        later: Some(later(job, e, None, None, uploaded, None)),
                        called: false,
                    };
                }
                self.ack(&job, Outcome::Gone, None, started);
                return Worked::finished(false);
            }
            Ok(Claim::Done(record)) => {
                // Done elsewhere; make sure the fast read path has it too.
                let outcome = match self.republish(&job.key, record).await {
                    Ok(()) => Outcome::Skipped,
                    Err(e) => {
                        return Worked {
                            later: Some(later(job, e, None, None, uploaded, None)),
                            called: false,
                        }
                    }
                };
                self.ack(&job, outcome, None, started);
                return Worked::finished(false);
            }
            Ok(Claim::Leased(until)) => {
                return Worked {
                    later: Some(later(
                        job,
                        TagError::Leased,
                        Some(until),
                        None,
                        uploaded,
                        None,
                    )),
                    called: false,
                }
            }
            Ok(Claim::Claimed { image, lease_until }) => (image, lease_until),
        };
        let uploaded = Some(image.uploaded_at_ms);
        if image.r2_key != job.first.1.r2_key {
            let error =
                TagError::MalformedMessage("r2Key does not match the image's record".into());
            let _ = self.io.defer(&job.key, now, now, Some(lease)).await;
            let (message, _) = &job.first;
            self.poison(message, &message.body(), error).await;
            self.ack_duplicates(&job, started);
            return Worked::finished(false);
        }
        let step = self.classify(&job.key, &image, start_at).await;
        let (result, called) = match step {
            Err(Step::Stopped(wall)) => {
                let error = match wall {
                    Wall::Busy => TagError::AiBusy(
                        "not called: the AI refused another call of this batch".into(),
                    ),
                    Wall::Quota => {
                        TagError::AiQuota("not called: the daily allocation is used up".into())
                    }
                    Wall::Misconfigured => TagError::AiMisconfigured(
                        "not called: the AI refused this account or model".into(),
                    ),
                };
                return Worked {
                    later: Some(later(job, error, None, Some(lease), uploaded, Some(wall))),
                    called: false,
                };
            }
            Err(Step::Wait(until)) => {
                return Worked {
                    later: Some(later(
                        job,
                        TagError::Leased,
                        Some(until),
                        Some(lease),
                        uploaded,
                        None,
                    )),
                    called: false,
                }
            }
            Err(Step::Failed(error, called)) => (Err(error), called),
            Ok(classified) => {
                let called = classified.reused_from.is_none();
                (Ok(classified), called)
            }
        };
        let error = match result {
            Ok(classified) => match self.finish(&job.key, &classified, lease).await {
                Ok(outcome) => {
                    self.ack(&job, outcome, None, started);
                    return Worked::finished(called);
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        let wall = match error.class() {
            Class::Busy => Some(Wall::Busy),
            Class::Scheduled => Some(Wall::Quota),
            Class::Misconfigured => Some(Wall::Misconfigured),
            _ => None,
        };
        if let Some(w) = wall {
            self.wall.set(Some(w));
        }
        if error.class() == Class::Permanent {
            match self.record_failure(&job.key, &error, Some(lease)).await {
                Ok(_) => {
                    self.ack(&job, Outcome::Failed, Some(&error), started);
                    return Worked::finished(called);
                }
                Err(storage) => {
                    return Worked {
                        later: Some(later(job, storage, None, Some(lease), uploaded, None)),
                        called,
                    }
                }
            }
        }
        Worked {
            later: Some(later(
                job,
                error,
                None,
                Some(lease),
                uploaded,
                wall.filter(|w| *w != Wall::Misconfigured),
            )),
            called,
        }
    }

    /// Reads and prepares an image, waits for its call's start, and classifies it unless the
    /// batch has hit a wall meanwhile.
    async fn classify(
        &self,
        id: &ImageId,
        image: &ClaimedImage,
        start_at: Option<u64>,
    ) -> Result<Classified, Step> {
        // The byte budget covers reading and shrinking the image; what is sent to the model
        // is small (at most 256 KiB, or a JPEG of the input edge), so the call runs outside it.
        let input = {
            let _permit = self.io.budget().acquire(working_bytes(image.size)).await;
            self.io
                .prepare(&image.r2_key)
                .await
                .map_err(|e| Step::Failed(e, false))?
        };
        // The same bytes of the same owner: reuse a done image's labels, or wait for the
        // delivery tagging them, rather than pay for a call.
        if let Some(hash) = self.io.content_hash(&input) {
            let twin = self.io.twin(id, &hash, self.io.now_ms()).await;
            match twin.map_err(|e| Step::Failed(e, false))? {
                Twin::None => {}
                Twin::InFlight(until) => return Err(Step::Wait(until)),
                Twin::Done {
                    from,
                    labels,
                    model,
                } => {
                    return Ok(Classified {
                        labels,
                        model,
                        min_score: self.settings.min_score,
                        reused_from: Some(from),
                    })
                }
            }
        }
        if let Some(wait) = start_at
            .and_then(|at| at.checked_sub(self.io.now_ms()))
            .filter(|&ms| ms > 0)
        {
            self.io.sleep_ms(wait).await;
        }
        if let Some(wall) = self.wall.get() {
            return Err(Step::Stopped(wall));
        }
        let labels = self
            .io
            .classify(&input)
            .await
            .map_err(|e| Step::Failed(e, true))?;
        Ok(Classified {
            labels,
            model: MODEL.into(),
            min_score: self.settings.min_score,
            reused_from: None,
        })
    }

    /// Records a classification in D1, then KV, under this delivery's lease.
    async fn finish(
        &self,
        id: &ImageId,
        classified: &Classified,
        lease: u64,
    ) -> Result<Outcome, TagError> {
        match self
            .io
            .mark_done(id, classified, self.io.now_ms(), Some(lease))
            .await?
        {
            Some(record) => {
                self.io.publish(&record).await?;
                self.io.notify(&record).await;
                Ok(Outcome::Done)
            }
            // Done by another delivery meanwhile, or taken over by one after this lease ran
            // out, or deleted.
            None => Ok(match self.io.image(id).await? {
                None => Outcome::Gone,
                Some(_) => Outcome::Skipped,
            }),
        }
    }

    /// Writes a done image's record to KV unless KV holds it with the same status: KV has
    /// none (a failed KV write earlier), or an older one (`failed`, before a redrive).
    async fn republish(
        &self,
        id: &ImageId,
        record: Option<Box<TagRecord>>,
    ) -> Result<(), TagError> {
        if self
            .io
            .published(id)
            .await?
            .is_some_and(|r| r.status == Status::Done)
        {
            return Ok(());
        }
        match record {
            Some(record) => self.io.publish(&record).await,
            None => Ok(()),
        }
    }

    /// Applies the policy to a message that could not be finished: fail the image, or try
    /// again later (retry, or send anew when the queue's retries run low).
    async fn again(&self, later: Later<I::Message>) {
        let Later {
            job,
            error,
            not_before,
            lease,
            uploaded_at,
            started,
            ..
        } = later;
        let (message, body) = &job.first;
        let delivery = self.delivery(message, uploaded_at);
        let verdict = decide(error.clone(), not_before, &delivery, &self.settings.policy);
        let (delay_seconds, resend, outcome) = match verdict {
            Verdict::Fail(failure) => {
                match self.record_failure(&job.key, &failure, lease).await {
                    Ok(_) => self.ack(&job, Outcome::Failed, Some(&failure), started),
                    Err(storage) => {
                        let delay = self
                            .settings
                            .policy
                            .backoff
                            .delay_seconds(message.attempt(), delivery.seed);
                        message.retry(delay);
                        self.log(
                            message,
                            Some(job.key),
                            started,
                            Outcome::Retry,
                            Some(&storage),
                            None,
                        );
                        self.ack_duplicates(&job, started);
                    }
                }
                return;
            }
            Verdict::Again {
                delay_seconds,
                resend,
                outcome,
            } => (delay_seconds, resend, outcome),
        };
        // When it will really be tried: a wait longer than the longest queue delay comes back
        // early and waits again, so it is due at the end of the wait.
        let planned = delivery.now_ms + u64::from(delay_seconds) * 1000;
        let due = match not_before {
            Some(at) if delay_seconds == MAX_DELAY_SECONDS && at > planned => at,
            _ => planned,
        };
        if let Err(e) = self.io.defer(&job.key, due, delivery.now_ms, lease).await {
            self.io.note(Note::DeferNotRecorded(&job.key, &e));
        }
        let outcome = if resend {
            match self.io.resend(body, delay_seconds).await {
                Ok(()) => {
                    message.ack();
                    outcome
                }
                Err(e) => {
                    self.io.note(Note::ResendFailed(&job.key, &e));
                    message.retry(delay_seconds);
                    Outcome::Deferred
                }
            }
        } else {
            message.retry(delay_seconds);
            outcome
        };
        self.log(
            message,
            Some(job.key),
            started,
            outcome,
            Some(&error),
            Some(delay_seconds),
        );
        self.ack_duplicates(&job, started);
    }
}

/// A message's R2 key must be the one its image id and type name: a message carries no
/// authority its bytes do not back.
fn check_key(message: &ImageMessage) -> Result<(), TagError> {
    let expected = ImageType::from_mime(&message.content_type)
        .map(|t| object_key(&message.image_id, t.extension()));
    if expected.as_deref() == Some(message.r2_key.as_str()) {
        Ok(())
    } else {
        Err(TagError::MalformedMessage(format!(
            "r2Key {:?} is not the key of image {} ({})",
            message.r2_key, message.image_id, message.content_type
        )))
    }
}

#[cfg(test)]
#[path = "batch_dedupe_tests.rs"]
mod dedupe_tests;
