//! The webhook outbox in D1: every statement comes from [`shared::storage::outbox`]; every failure
//! is a retryable [`TagError::Storage`].

use edge::d1::{n, s, Db};
use shared::storage::outbox::{self, NotificationRow};
use shared::webhook::retry::LEASE_MS;
use shared::wire::record::DeliveryState;
use shared::TagError;
use worker::wasm_bindgen::JsValue;
use worker::Env;

/// What a claim found.
pub enum Claim {
    /// This delivery may attempt the event; the row, with the attempt counted.
    Claimed(Box<NotificationRow>),
    /// Pending, but its next attempt is due only then (ms).
    NotDue(u64),
    /// Another delivery is attempting it until then (ms).
    Leased(u64),
    /// Delivered or given up already.
    Finished,
    /// No such event (its image was deleted).
    Gone,
}

fn opt_status(status: Option<u16>) -> JsValue {
    status.map_or(JsValue::NULL, JsValue::from)
}

/// The `notifications` table.
pub struct Outbox {
    db: Db<TagError>,
}

impl Outbox {
    pub fn open(env: &Env) -> Result<Self, TagError> {
        Ok(Self { db: Db::open(env)? })
    }

    async fn run(&self, what: &str, sql: &str, params: &[JsValue]) -> Result<(), TagError> {
        self.db.run(what, sql, params).await
    }

    /// Takes the event for one attempt, or says why not.
    pub async fn claim(&self, event_id: &str, now: u64) -> Result<Claim, TagError> {
        let lease_until = now + LEASE_MS;
        let params = [s(event_id), n(now), n(lease_until)];
        let claimed: Option<NotificationRow> = self
            .db
            .first("D1 claim event", outbox::CLAIM_EVENT, &params)
            .await?;
        if let Some(row) = claimed {
            return Ok(Claim::Claimed(Box::new(row)));
        }
        let row: Option<NotificationRow> = self
            .db
            .first("D1 select event", outbox::SELECT_EVENT, &[s(event_id)])
            .await?;
        Ok(match row {
            None => Claim::Gone,
            Some(row) if row.state() != DeliveryState::Pending => Claim::Finished,
            Some(row) => match row.lease_until.filter(|&until| until > now) {
                Some(until) => Claim::Leased(until),
                None => Claim::NotDue(row.due_at.unwrap_or(now)),
            },
        })
    }

    /// Records a delivery.
    pub async fn delivered(&self, event_id: &str, now: u64, status: u16) -> Result<(), TagError> {
        let params = [s(event_id), n(now), JsValue::from(status)];
        self.run("D1 delivered", outbox::DELIVERED, &params).await
    }

    /// Records a failed attempt and when the next is due, releasing this delivery's lease.
    pub async fn retry_later(
        &self,
        event_id: &str,
        now: u64,
        status: Option<u16>,
        error: &str,
        due_at: u64,
        lease_until: Option<u64>,
    ) -> Result<(), TagError> {
        let params = [
            s(event_id),
            n(now),
            opt_status(status),
            s(error),
            n(due_at),
            lease_until.map_or(JsValue::NULL, n),
        ];
        self.run("D1 retry later", outbox::RETRY_LATER, &params)
            .await
    }

    /// Records that the delivery gave up.
    pub async fn gave_up(
        &self,
        event_id: &str,
        now: u64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), TagError> {
        let params = [s(event_id), n(now), opt_status(status), s(error)];
        self.run("D1 gave up", outbox::GAVE_UP, &params).await
    }

    /// Pending deliveries overdue since before `cutoff`, oldest first.
    pub async fn overdue(
        &self,
        now: u64,
        cutoff: u64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, TagError> {
        let params = [n(now), n(cutoff), n(u64::from(limit))];
        let sql = outbox::SELECT_OVERDUE_EVENTS;
        self.db.all("D1 select overdue events", sql, &params).await
    }

    /// Notes that an overdue delivery was enqueued again.
    pub async fn requeued(&self, event_id: &str, now: u64) -> Result<(), TagError> {
        self.run(
            "D1 requeued event",
            outbox::REQUEUED_EVENT,
            &[s(event_id), n(now)],
        )
        .await
    }
}
