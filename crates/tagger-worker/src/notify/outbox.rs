//! The webhook outbox in D1: every statement comes from [`shared::storage::outbox`]; every failure
//! is a retryable [`TagError::Storage`].

use shared::storage::outbox::{self, NotificationRow};
use shared::webhook::retry::LEASE_MS;
use shared::wire::config::binding;
use shared::wire::record::DeliveryState;
use shared::TagError;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env};

use crate::store::OrStorage;

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

fn n(value: u64) -> JsValue {
    JsValue::from_f64(value as f64)
}

fn s(value: &str) -> JsValue {
    JsValue::from_str(value)
}

fn opt_status(status: Option<u16>) -> JsValue {
    status.map_or(JsValue::NULL, JsValue::from)
}

/// The `notifications` table.
pub struct Outbox {
    db: D1Database,
}

impl Outbox {
    pub fn open(env: &Env) -> Result<Self, TagError> {
        Ok(Self {
            db: env.d1(binding::DB).or_storage("DB binding")?,
        })
    }

    fn statement(&self, sql: &str, params: &[JsValue]) -> Result<D1PreparedStatement, TagError> {
        self.db.prepare(sql).bind(params).or_storage("D1 bind")
    }

    async fn run(&self, what: &str, sql: &str, params: &[JsValue]) -> Result<(), TagError> {
        self.statement(sql, params)?
            .run()
            .await
            .or_storage(what)
            .map(|_| ())
    }

    /// Takes the event for one attempt, or says why not.
    pub async fn claim(&self, event_id: &str, now: u64) -> Result<Claim, TagError> {
        let lease_until = now + LEASE_MS;
        let claimed = self
            .statement(outbox::CLAIM_EVENT, &[s(event_id), n(now), n(lease_until)])?
            .first::<NotificationRow>(None)
            .await
            .or_storage("D1 claim event")?;
        if let Some(row) = claimed {
            return Ok(Claim::Claimed(Box::new(row)));
        }
        let row = self
            .statement(outbox::SELECT_EVENT, &[s(event_id)])?
            .first::<NotificationRow>(None)
            .await
            .or_storage("D1 select event")?;
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
        self.statement(
            outbox::SELECT_OVERDUE_EVENTS,
            &[n(now), n(cutoff), n(u64::from(limit))],
        )?
        .all()
        .await
        .and_then(|r| r.results::<NotificationRow>())
        .or_storage("D1 select overdue events")
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
