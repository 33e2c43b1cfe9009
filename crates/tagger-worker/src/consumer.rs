//! One batch of queue messages: decode each message on its own, fold duplicates, ask the
//! pacer for AI calls, tag what it grants (concurrently, within a byte budget), and defer
//! the rest. Every decision about retrying comes from [`shared::tagging::retry::decide`]; this file
//! only does the I/O around it.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;

use futures_util::stream::{self, StreamExt};
use shared::tagging::error::Class;
use shared::tagging::labels::Classified;
use shared::tagging::outcome::Outcome;
use shared::tagging::pacer::{Denial, Grant};
use shared::tagging::retry::{
    decide, group, jitter_seed, Delivery, Group, QueueKind, Verdict, MAX_DELAY_SECONDS,
};
use shared::wire::config::{binding, queue};
use shared::wire::keys::object_key;
use shared::wire::record::TagRecord;
use shared::{ImageId, ImageMessage, ImageType, Status, TagError};
use worker::js_sys::{Date, Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{Env, MessageBuilder, QueueContentType};

use crate::classify;
use crate::log::MessageLine;
use crate::pacer::PacerClient;
use crate::queue_api::{QueueBatch, QueueMessage};
use crate::r2;
use crate::settings::Settings;
use crate::store::{Claim, OrStorage, Store};
use shared::tagging::memory::ByteBudget;

fn now_ms() -> u64 {
    Date::now() as u64
}

/// The messages of one batch about one image: the first is worked on, the others follow it.
type Job = Group<ImageId, (QueueMessage, ImageMessage)>;

/// Handles a batch from the image queue or its dead letter queue (and hands one from the
/// notification queue to [`crate::notify`]). Never fails: every message is acked or retried
/// on its own.
pub async fn consume(batch: QueueBatch, env: &Env) {
    let name = batch.queue();
    // A staging deployment's queues carry its suffix (`image-processing-queue-staging`).
    let kind = match queue::of_deployed(&name) {
        Some(queue::IMAGES) => QueueKind::Images,
        Some(queue::IMAGES_DEAD_LETTER) => QueueKind::DeadLetter,
        Some(queue::NOTIFICATIONS) => return crate::notify::consume(batch, env).await,
        _ => {
            worker::console_error!("tagger: no handler for queue {name}; retrying its batch");
            batch.messages().iter().for_each(|m| m.retry_after(60));
            return;
        }
    };
    let settings = Settings::get(env);
    let store = match Store::open(env) {
        Ok(store) => store,
        Err(e) => {
            worker::console_error!("tagger misconfigured: {e}");
            batch.messages().iter().for_each(|m| m.retry_after(60));
            return;
        }
    };
    let ctx = Ctx {
        env,
        settings: &settings,
        store,
        queue: &name,
        kind,
        wall: Cell::new(None),
        budget: isolate_budget(settings.bytes_in_flight),
    };
    let mut decoded = Vec::new();
    for message in batch.messages() {
        let body = message.body_json();
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
struct Later {
    job: Job,
    error: TagError,
    not_before: Option<u64>,
    /// The lease this delivery holds, to release.
    lease: Option<u64>,
    uploaded_at: Option<u64>,
    /// Stopped by a wall: its time comes from the pacer after the batch.
    wall: Option<Wall>,
    started: f64,
}

/// What became of one job in the first phase.
struct Worked {
    later: Option<Later>,
    /// Whether it spent one of the pacer's calls.
    called: bool,
}

impl Worked {
    fn finished(called: bool) -> Self {
        Self {
            later: None,
            called,
        }
    }
}

struct Ctx<'a> {
    env: &'a Env,
    settings: &'a Settings,
    store: Store,
    queue: &'a str,
    kind: QueueKind,
    wall: Cell<Option<Wall>>,
    /// The isolate's byte budget, shared with every other batch running in it.
    budget: Rc<ByteBudget>,
}

impl Ctx<'_> {
    /// Logs the outcome of a message (and acks or retries nothing itself).
    fn log(&self, message: &QueueMessage, id: Option<ImageId>, started: f64) -> MessageLine<'_> {
        let mut line = MessageLine::new(self.queue, message.id(), message.attempt(), started);
        line.image_id = id;
        line
    }

    /// Acks every message of a job, logging `outcome` for the first and `duplicate` for the
    /// others.
    fn ack(&self, job: &Job, outcome: Outcome, error: Option<&TagError>, started: f64) {
        let (first, _) = &job.first;
        first.ack_quietly();
        self.log(first, Some(job.key), started)
            .outcome(outcome, error)
            .emit();
        self.ack_duplicates(job, started);
    }

    fn ack_duplicates(&self, job: &Job, started: f64) {
        for (message, _) in &job.duplicates {
            message.ack_quietly();
            self.log(message, Some(job.key), started)
                .outcome(Outcome::Duplicate, None)
                .emit();
        }
    }

    /// A body this build cannot decode.
    async fn undecodable(&self, message: &QueueMessage, body: &str, error: TagError) {
        let started = Date::now();
        let id = ImageMessage::sniff_image_id(body);
        let line = self.log(message, id, started);
        // A newer producer's message waits for the newer tagger, up to the queue's retries.
        if let (TagError::NewerSchema(_), QueueKind::Images) = (&error, self.kind) {
            let delivery = self.delivery(message, None);
            if let Verdict::Again {
                delay_seconds,
                outcome,
                ..
            } = decide(error.clone(), None, &delivery, &self.settings.policy)
            {
                message.retry_after(delay_seconds);
                let mut line = line.outcome(outcome, Some(&error));
                line.delay_seconds = Some(delay_seconds);
                line.emit();
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
        let now = shared::wire::time::format_ms(now_ms());
        let kept = self
            .store
            .keep_poison(&message.id(), self.queue, &error, body, now)
            .await;
        match recorded.and_then(|record| kept.map(|()| record)) {
            Ok(record) => {
                message.ack_quietly();
                // Failed if it failed an image waiting for it; otherwise only kept, as poison.
                let outcome = if record.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Poison
                };
                line.outcome(outcome, Some(&error)).emit();
            }
            Err(storage) => self.retry_storage(message, line, &storage),
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
        let record = self.store.mark_failed(id, error, now_ms(), lease).await?;
        if let Some(record) = &record {
            self.store.publish(record).await?;
            crate::notify::enqueue(self.env, record).await;
        }
        Ok(record)
    }

    fn delivery(&self, message: &QueueMessage, uploaded_at: Option<u64>) -> Delivery {
        Delivery {
            queue: self.kind,
            attempt: message.attempt(),
            now_ms: now_ms(),
            uploaded_at_ms: uploaded_at,
            seed: jitter_seed(&message.id(), message.attempt()),
        }
    }

    /// The dead letter queue: the image queue gave up on this message (a tagger that kept
    /// crashing on it). Record the image as failed, unless it was tagged after all, or
    /// another delivery is tagging it now (then this one comes back after its lease).
    async fn dead_letter(&self, job: Job) {
        let started = Date::now();
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
                let now = now_ms();
                let outcome = match self.store.image(&job.key).await {
                    Ok(None) => Outcome::Gone,
                    Ok(Some(row))
                        if row.status() != Status::Done
                            && row.lease_until.is_some_and(|until| until > now) =>
                    {
                        return self
                            .again(Later {
                                job,
                                error: TagError::Leased,
                                not_before: row.lease_until,
                                lease: None,
                                uploaded_at: Some(row.uploaded_at),
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
                let uploaded = shared::wire::time::parse_ms(&job.first.1.uploaded_at);
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
    async fn tag_all(&self, jobs: Vec<Job>) {
        let started = Date::now();
        let valid = jobs;
        if valid.is_empty() {
            return;
        }
        let pacer = PacerClient::open(self.env);
        let n = valid.len() as u32;
        let grant = match &pacer {
            Ok(pacer) => pacer.acquire(n).await,
            Err(e) => Err(e.to_string().into()),
        };
        let grant = grant.unwrap_or_else(|e| {
            // Pacing protects the AI; without it, calls still go out and a busy AI still
            // defers them. Never stall the pipeline on the pacer.
            worker::console_warn!("tagger: AI pacer unavailable ({e}); calling without it");
            Grant {
                granted: n,
                start_at_ms: Vec::new(),
                not_before_ms: Vec::new(),
                denial: None,
                used_today: 0,
            }
        });
        let denial_error = match grant.denial {
            Some(Denial::Tomorrow) if self.settings.pacer.daily_budget.is_some() => {
                TagError::BudgetSpent
            }
            Some(Denial::Tomorrow) => TagError::AiQuota("the daily allocation is used up".into()),
            Some(Denial::Cooling) => TagError::AiBusy("fleet-wide back-off after a refusal".into()),
            Some(Denial::Paced) | None => TagError::Paced,
        };
        let mut slots = grant.not_before_ms.into_iter();
        let mut starts = grant.start_at_ms.into_iter();
        let mut denied = Vec::new();
        let mut granted = Vec::new();
        for (i, job) in valid.into_iter().enumerate() {
            if (i as u32) < grant.granted {
                granted.push((job, starts.next()));
            } else {
                let uploaded_at = shared::wire::time::parse_ms(&job.first.1.uploaded_at);
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
        let worked: Vec<Worked> = stream::iter(granted)
            .map(|(job, start_at)| self.tag(job, start_at))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        let unused = worked.iter().filter(|w| !w.called).count() as u32;
        // Calls the AI answered, whatever the answer, except a refusal.
        let refused = |l: &Later| l.wall.is_some() || l.error.class() == Class::Misconfigured;
        let answered = worked
            .iter()
            .filter(|w| w.called && !w.later.as_ref().is_some_and(refused))
            .count() as u32;
        let mut later: Vec<Later> = worked.into_iter().filter_map(|w| w.later).collect();
        if let Ok(pacer) = &pacer {
            if unused > 0 || answered > 0 {
                let _ = pacer.settle(unused, answered).await;
            }
            self.schedule_walled(pacer, &mut later).await;
        }
        later.extend(denied);
        stream::iter(later)
            .for_each_concurrent(self.settings.concurrency, |l| self.again(l))
            .await;
    }

    /// Gives the messages stopped by a wall their slots from the pacer: after the fleet-wide
    /// back-off for a busy AI, tomorrow for a spent allocation.
    async fn schedule_walled(&self, pacer: &PacerClient, later: &mut [Later]) {
        for wall in [Wall::Busy, Wall::Quota] {
            let walled: Vec<&mut Later> =
                later.iter_mut().filter(|l| l.wall == Some(wall)).collect();
            if walled.is_empty() {
                continue;
            }
            let n = walled.len() as u32;
            let grant = match wall {
                Wall::Busy => pacer.refused(n).await,
                _ => pacer.quota(n).await,
            };
            if let Ok(grant) = grant {
                for (l, slot) in walled.into_iter().zip(grant.not_before_ms) {
                    l.not_before = Some(slot);
                }
            }
        }
    }

    /// A storage write failed: the message comes back after its attempt's backoff.
    fn retry_storage(&self, message: &QueueMessage, line: MessageLine<'_>, error: &TagError) {
        let delay = self
            .settings
            .policy
            .backoff
            .delay_seconds(message.attempt(), 0);
        message.retry_after(delay);
        line.outcome(Outcome::Retry, Some(error)).emit();
    }

    /// Keeps a message that cannot be acted on in KV and acks it, without any work.
    async fn poison(&self, message: &QueueMessage, body: &str, error: TagError) {
        let started = Date::now();
        let id = ImageMessage::sniff_image_id(body);
        let now = shared::wire::time::format_ms(now_ms());
        let line = self.log(message, id, started);
        match self
            .store
            .keep_poison(&message.id(), self.queue, &error, body, now)
            .await
        {
            Ok(()) => {
                message.ack_quietly();
                line.outcome(Outcome::Poison, Some(&error)).emit();
            }
            Err(storage) => self.retry_storage(message, line, &storage),
        }
    }

    /// Tags one image this batch has a call for, starting the call at `start_at` (the
    /// pacer's schedule) or at once.
    async fn tag(&self, job: Job, start_at: Option<u64>) -> Worked {
        let started = Date::now();
        let now = now_ms();
        let later = |job, error, not_before, lease, uploaded_at, wall| Later {
            job,
            error,
            not_before,
            lease,
            uploaded_at,
            wall,
            started,
        };
        let uploaded = shared::wire::time::parse_ms(&job.first.1.uploaded_at);
        let (row, lease) = match self
            .store
            .claim(&job.key, now, self.settings.lease_ms)
            .await
        {
            Err(e) => {
                return Worked {
                    later: Some(later(job, e, None, None, uploaded, None)),
                    called: false,
                }
            }
            Ok(Claim::Gone) => {
                // Deleted: nothing to tag, and no record may stay behind.
                if let Err(e) = self.store.unpublish(&job.key).await {
                    return Worked {
                        later: Some(later(job, e, None, None, uploaded, None)),
                        called: false,
                    };
                }
                self.ack(&job, Outcome::Gone, None, started);
                return Worked::finished(false);
            }
            Ok(Claim::Done(row)) => {
                // Done elsewhere; make sure the fast read path has it too.
                let outcome = match self.republish(&job.key, &row).await {
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
            Ok(Claim::Claimed { row, lease_until }) => (row, lease_until),
        };
        let uploaded = Some(row.uploaded_at);
        if row.r2_key != job.first.1.r2_key {
            let error =
                TagError::MalformedMessage("r2Key does not match the image's record".into());
            let _ = self.store.defer(&job.key, now, now, Some(lease)).await;
            let (message, _) = &job.first;
            self.poison(message, &message.body_json(), error).await;
            self.ack_duplicates(&job, started);
            return Worked::finished(false);
        }
        let step = self.classify(&row, start_at).await;
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
            Err(Step::Failed(error, called)) => (Err(error), called),
            Ok(classified) => (Ok(classified), true),
        };
        let error = match result {
            Ok(classified) => match self.finish(&job.key, &classified, lease).await {
                Ok(outcome) => {
                    self.ack(&job, outcome, None, started);
                    return Worked::finished(true);
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

    /// Reads and normalises an image, waits for its call's start, and classifies it unless
    /// the batch has hit a wall meanwhile.
    async fn classify(
        &self,
        row: &shared::storage::images::ImageRow,
        start_at: Option<u64>,
    ) -> Result<Classified, Step> {
        // The byte budget covers reading and shrinking the image; what is sent to the model
        // is small (at most 256 KiB, or a JPEG of the input edge), so the call runs outside it.
        let input = {
            let _permit = self.budget.acquire(classify::working_bytes(row.size)).await;
            let bytes = r2::read(self.env, &row.r2_key)
                .await
                .map_err(|e| Step::Failed(e, false))?;
            classify::prepare(bytes, self.settings).map_err(|e| Step::Failed(e, false))?
        };
        if let Some(wait) = start_at
            .and_then(|at| at.checked_sub(now_ms()))
            .filter(|&ms| ms > 0)
        {
            worker::Delay::from(std::time::Duration::from_millis(wait)).await;
        }
        if let Some(wall) = self.wall.get() {
            return Err(Step::Stopped(wall));
        }
        let labels = classify::run(self.env, &input)
            .await
            .map_err(|e| Step::Failed(e, true))?;
        Ok(Classified {
            labels,
            model: shared::wire::config::MODEL.into(),
            min_score: self.settings.min_score,
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
            .store
            .mark_done(id, classified, now_ms(), Some(lease))
            .await?
        {
            Some(record) => {
                self.store.publish(&record).await?;
                crate::notify::enqueue(self.env, &record).await;
                Ok(Outcome::Done)
            }
            // Done by another delivery meanwhile, or taken over by one after this lease ran
            // out, or deleted.
            None => Ok(match self.store.image(id).await? {
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
        row: &shared::storage::images::ImageRow,
    ) -> Result<(), TagError> {
        if self
            .store
            .published(id)
            .await?
            .is_some_and(|r| r.status == row.status())
        {
            return Ok(());
        }
        match row.view() {
            Some(shared::storage::images::View::Finished(record)) => {
                self.store.publish(&record).await
            }
            _ => Ok(()),
        }
    }

    /// Applies the policy to a message that could not be finished: fail the image, or try
    /// again later (retry, or send anew when the queue's retries run low).
    async fn again(&self, later: Later) {
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
                        message.retry_after(delay);
                        self.log(message, Some(job.key), started)
                            .outcome(Outcome::Retry, Some(&storage))
                            .emit();
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
        if let Err(e) = self
            .store
            .defer(&job.key, due, delivery.now_ms, lease)
            .await
        {
            worker::console_warn!(
                "tagger: could not record the next attempt of {}: {e}",
                job.key
            );
        }
        let outcome = if resend {
            match self.resend(body, delay_seconds).await {
                Ok(()) => {
                    message.ack_quietly();
                    outcome
                }
                Err(e) => {
                    worker::console_warn!(
                        "tagger: resend of {} failed ({e}); retrying instead",
                        job.key
                    );
                    message.retry_after(delay_seconds);
                    Outcome::Deferred
                }
            }
        } else {
            message.retry_after(delay_seconds);
            outcome
        };
        let mut line = self
            .log(message, Some(job.key), started)
            .outcome(outcome, Some(&error));
        line.delay_seconds = Some(delay_seconds);
        line.emit();
        self.ack_duplicates(&job, started);
    }

    /// Sends a message again as a new one, after `delay_seconds`.
    async fn resend(&self, body: &ImageMessage, delay_seconds: u32) -> Result<(), TagError> {
        self.env
            .queue(binding::IMAGE_QUEUE)
            .or_storage("IMAGE_QUEUE binding")?
            .send(
                MessageBuilder::new(body)
                    .content_type(QueueContentType::Json)
                    .delay_seconds(delay_seconds)
                    .build(),
            )
            .await
            .or_storage("queue resend")
    }
}

/// Why classifying stopped.
enum Step {
    /// The batch hit a wall before this image's call.
    Stopped(Wall),
    /// An error, and whether the AI was called.
    Failed(TagError, bool),
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

impl QueueMessage {
    /// Acks; the runtime only fails this for a message already settled.
    pub fn ack_quietly(&self) {
        let _ = self.ack();
    }

    /// Retries after `delay_seconds`.
    pub fn retry_after(&self, delay_seconds: u32) {
        let options = Object::new();
        let _ = Reflect::set(
            &options,
            &"delaySeconds".into(),
            &JsValue::from(delay_seconds),
        );
        let _ = self.retry(&options);
    }
}

thread_local! {
    /// The byte budget of this isolate: memory is limited per isolate, and batches that run
    /// in one isolate at once share it (`BYTES_IN_FLIGHT` never changes within one).
    static BUDGET: OnceCell<Rc<ByteBudget>> = const { OnceCell::new() };
}

/// The isolate's one byte budget, made with `limit` bytes on first use.
fn isolate_budget(limit: u64) -> Rc<ByteBudget> {
    BUDGET.with(|cell| cell.get_or_init(|| Rc::new(ByteBudget::new(limit))).clone())
}
