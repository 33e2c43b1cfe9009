//! The batch's reuse decision (no paying twice, issue 23), on a fake [`Io`] whose every
//! call completes at once: a done twin's labels are used with no AI call and no pacer
//! call spent; an in-flight twin defers the message until its lease ends, with no AI call;
//! no twin calls the model.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::tagging::retry::Backoff;
use crate::wire::message::SCHEMA_VERSION;

const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
const FROM: &str = "4f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
const NOW: u64 = 1_000_000;
const LEASE_MS: u64 = 60_000;

/// What became of the message: acked, or retried after so many seconds.
#[derive(Default)]
struct Settled {
    acked: Cell<bool>,
    retried: Cell<Option<u32>>,
}

struct Msg {
    body: String,
    settled: Rc<Settled>,
}

impl Delivered for Msg {
    fn id(&self) -> String {
        "m1".into()
    }
    fn attempt(&self) -> u32 {
        1
    }
    fn body(&self) -> String {
        self.body.clone()
    }
    fn ack(&self) {
        self.settled.acked.set(true)
    }
    fn retry(&self, delay_seconds: u32) {
        self.settled.retried.set(Some(delay_seconds))
    }
}

#[derive(Default)]
struct Seen {
    ai_calls: u32,
    done: Option<Classified>,
    deferred_until: Option<u64>,
    settled_unused: u32,
    twin_asked: Option<String>,
}

struct Fake {
    twin: Twin,
    hash: Option<String>,
    budget: ByteBudget,
    seen: RefCell<Seen>,
}

fn id() -> ImageId {
    ImageId::parse(ID).unwrap()
}

fn record(id: &ImageId, classified: &Classified) -> TagRecord {
    TagRecord {
        image_id: *id,
        status: Status::Done,
        tags: classified.tags(),
        categories: classified.categories(),
        labels: classified.labels.clone(),
        model: classified.model.clone(),
        min_score: classified.min_score,
        processed_at: format_ms(NOW),
        uploaded_at: format_ms(NOW),
        content_type: "image/png".into(),
        size: 10,
        error: None,
        attempts: Some(1),
        reused_from: classified.reused_from.map(Box::new),
        notification: None,
    }
}

impl Io for Fake {
    type Message = Msg;
    type Input = ();

    fn now_ms(&self) -> u64 {
        NOW
    }
    async fn sleep_ms(&self, _ms: u64) {}
    async fn claim(&self, _id: &ImageId, now_ms: u64, lease_ms: u64) -> Result<Claim, TagError> {
        Ok(Claim::Claimed {
            image: ClaimedImage {
                r2_key: format!("images/{ID}.png"),
                size: 10,
                uploaded_at_ms: NOW,
            },
            lease_until: now_ms + lease_ms,
        })
    }
    async fn image(&self, _id: &ImageId) -> Result<Option<ImageState>, TagError> {
        Ok(None)
    }
    async fn mark_done(
        &self,
        id: &ImageId,
        classified: &Classified,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        self.seen.borrow_mut().done = Some(classified.clone());
        Ok(Some(record(id, classified)))
    }
    async fn mark_failed(
        &self,
        _id: &ImageId,
        _error: &TagError,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<Option<TagRecord>, TagError> {
        panic!("nothing fails here")
    }
    async fn defer(
        &self,
        _id: &ImageId,
        due_ms: u64,
        _now_ms: u64,
        _lease: Option<u64>,
    ) -> Result<(), TagError> {
        self.seen.borrow_mut().deferred_until = Some(due_ms);
        Ok(())
    }
    async fn published(&self, _id: &ImageId) -> Result<Option<TagRecord>, TagError> {
        Ok(None)
    }
    async fn publish(&self, _record: &TagRecord) -> Result<(), TagError> {
        Ok(())
    }
    async fn unpublish(&self, _id: &ImageId) -> Result<(), TagError> {
        Ok(())
    }
    async fn keep_poison(
        &self,
        _message_id: &str,
        _error: &TagError,
        _body: &str,
        _now: String,
    ) -> Result<(), TagError> {
        panic!("nothing is poison here")
    }
    async fn notify(&self, _record: &TagRecord) {}
    fn budget(&self) -> &ByteBudget {
        &self.budget
    }
    async fn prepare(&self, _r2_key: &str) -> Result<(), TagError> {
        Ok(())
    }
    async fn classify(&self, _input: &()) -> Result<Vec<Label>, TagError> {
        self.seen.borrow_mut().ai_calls += 1;
        Ok(vec![Label {
            label: "tabby".into(),
            score: 0.9,
        }])
    }
    async fn pacer(&self, ask: Ask) -> Result<Grant, String> {
        let n = match ask {
            Ask::Acquire { n } => n,
            Ask::Settle { unused, .. } => {
                self.seen.borrow_mut().settled_unused += unused;
                0
            }
            _ => 0,
        };
        Ok(Grant {
            granted: n,
            start_at_ms: vec![NOW; n as usize],
            not_before_ms: Vec::new(),
            denial: None,
            used_today: 0,
        })
    }
    async fn resend(&self, _body: &ImageMessage, _delay_seconds: u32) -> Result<(), TagError> {
        Ok(())
    }
    fn log(&self, _message: &Msg, _line: Line) {}
    fn note(&self, _note: Note<'_>) {}

    fn content_hash(&self, _input: &()) -> Option<String> {
        self.hash.clone()
    }
    async fn twin(&self, _id: &ImageId, hash: &str, _now_ms: u64) -> Result<Twin, TagError> {
        self.seen.borrow_mut().twin_asked = Some(hash.into());
        Ok(self.twin.clone())
    }
}

/// Runs a future whose every await completes at once.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the batch waited on something")
}

/// One message through [`consume`] with `twin` as the look-up's answer.
fn batch(twin: Twin, hash: Option<&str>) -> (Seen, Rc<Settled>) {
    let io = Fake {
        twin,
        hash: hash.map(Into::into),
        budget: ByteBudget::new(1 << 30),
        seen: RefCell::default(),
    };
    let message = ImageMessage {
        schema_version: SCHEMA_VERSION,
        image_id: id(),
        r2_key: format!("images/{ID}.png"),
        content_type: "image/png".into(),
        size: 10,
        uploaded_at: format_ms(NOW),
    };
    let settled = Rc::new(Settled::default());
    let msg = Msg {
        body: serde_json::to_string(&message).unwrap(),
        settled: settled.clone(),
    };
    let settings = Settings {
        policy: Policy {
            backoff: Backoff {
                base_seconds: 10,
                max_seconds: 600,
            },
            max_retries: 100,
            give_up_after_ms: 24 * 3600 * 1000,
        },
        concurrency: 4,
        lease_ms: LEASE_MS,
        min_score: 0.8,
        daily_budget: false,
    };
    run(consume(&io, QueueKind::Images, vec![msg], &settings));
    (io.seen.into_inner(), settled)
}

#[test]
fn a_done_twin_lends_its_labels_without_a_call() {
    let labels = vec![Label {
        label: "tabby".into(),
        score: 0.95,
    }];
    let twin = Twin::Done {
        from: ImageId::parse(FROM).unwrap(),
        labels: labels.clone(),
        model: "m".into(),
    };
    let (seen, settled) = batch(twin, Some("abc"));
    assert_eq!(seen.ai_calls, 0);
    assert_eq!(seen.twin_asked.as_deref(), Some("abc"));
    let done = seen.done.expect("done");
    assert_eq!(done.labels, labels);
    assert_eq!(
        done.reused_from.map(|i| i.to_string()).as_deref(),
        Some(FROM)
    );
    assert_eq!(done.tags(), ["tabby"]);
    assert_eq!(seen.settled_unused, 1, "the pacer's call was not spent");
    assert!(settled.acked.get());
}

#[test]
fn an_in_flight_twin_is_waited_for_without_a_call() {
    let until = NOW + 30_000;
    let (seen, settled) = batch(Twin::InFlight(until), Some("abc"));
    assert_eq!(seen.ai_calls, 0);
    assert!(seen.done.is_none());
    assert_eq!(seen.deferred_until, Some(until));
    assert_eq!(settled.retried.get(), Some(30), "back when its lease ends");
    assert!(!settled.acked.get());
}

#[test]
fn no_twin_or_no_hash_calls_the_model() {
    for (twin, hash) in [(Twin::None, Some("abc")), (Twin::InFlight(NOW + 1), None)] {
        let (seen, settled) = batch(twin, hash);
        assert_eq!(seen.ai_calls, 1);
        let done = seen.done.expect("done");
        assert_eq!(done.reused_from, None);
        assert_eq!(seen.twin_asked.is_some(), hash.is_some());
        assert!(settled.acked.get());
    }
}
