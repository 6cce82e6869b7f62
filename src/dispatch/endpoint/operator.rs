//! The operator's requests to an endpoint actor: its live stats, retry, recover and test sends.
//! Each one that changes a delivery goes through the ordered writer, and what it finds there
//! (not what it read earlier) decides what the queue does.

use actix::prelude::*;

use super::attempt::send;
use super::EndpointActor;
use crate::metrics::EndpointState;
use crate::model::{
    now_millis, rfc3339, Attempt, Delivery, DeliveryId, DeliveryRef, DeliveryStatus, Endpoint,
    EndpointStats, Event, EventKey, UnixMillis,
};
use crate::storage::{Requeued, StorageError};

/// The endpoint's live figures for `GET /v1/endpoints/{id}`.
#[derive(Message)]
#[rtype(result = "StatsSnapshot")]
pub struct GetStats;

#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub pending: usize,
    pub in_flight: usize,
    pub state: EndpointState,
    pub stats: EndpointStats,
    pub next_probe_at: Option<UnixMillis>,
    /// The last failed attempt's error, unless an attempt succeeded since.
    pub last_error: Option<String>,
    /// (attempts, successes) over the last hour.
    pub last_hour: (u64, u64),
    /// How long the earliest due waiting delivery has been due.
    pub oldest_pending_age_ms: i64,
}

impl Handler<GetStats> for EndpointActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let now = crate::model::now_millis();
        MessageResult(StatsSnapshot {
            pending: self.queue.total(),
            in_flight: self.sending + self.tests_in_flight,
            state: self.state(),
            stats: self.stats_snapshot().1,
            next_probe_at: self
                .circuit
                .next_probe_at
                .filter(|_| self.circuit.is_open()),
            last_error: self.last_error.clone(),
            last_hour: self.recent.last_hour(now),
            oldest_pending_age_ms: self.oldest_pending_age_ms(now),
        })
    }
}

/// `POST /v1/deliveries/{id}/retry`.
#[derive(Message)]
#[rtype(result = "Result<RetryOutcome, StorageError>")]
pub struct RetryDelivery(pub DeliveryId);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// A failed delivery is queued again with a fresh schedule.
    Requeued,
    /// A pending delivery is due now (or, in flight, will be pending again if it fails).
    BroughtForward,
    /// Succeeded or cancelled: nothing to retry.
    NotRetryable(DeliveryStatus),
    NotFound,
}

impl Handler<RetryDelivery> for EndpointActor {
    type Result = ResponseActFuture<Self, Result<RetryOutcome, StorageError>>;

    fn handle(&mut self, msg: RetryDelivery, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        let now = now_millis();
        if let Some(u) = self.unsettled.get_mut(&id) {
            u.requeue = true;
            return Box::pin(fut::ready(Ok(RetryOutcome::BroughtForward)));
        }
        if self.bring_forward_now(ctx, id, now) {
            self.cancel_timer(ctx);
            self.pump(ctx);
            return Box::pin(fut::ready(Ok(RetryOutcome::BroughtForward)));
        }
        let requeue = self.shared.store.ordered(move |o| o.requeue_one(id, now));
        Box::pin(requeue.into_actor(self).map(move |r, act, ctx| {
            let outcome = act.apply_requeued(id, r?, now);
            act.cancel_timer(ctx);
            act.pump(ctx);
            Ok(outcome)
        }))
    }
}

impl EndpointActor {
    /// A waiting delivery due at `now`, in memory and in storage; false if it is not waiting.
    pub(super) fn bring_forward_now(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        now: UnixMillis,
    ) -> bool {
        let stored = self.queue.stored_due(id);
        if !self.queue.bring_forward(id, now) {
            return false;
        }
        if let Some(from) = stored.filter(|&from| from > now) {
            self.queue.set_stored(id, now);
            self.store_moves(ctx, vec![(id, from, now)]);
        }
        true
    }

    /// What the ordered writer found and did for a retry, applied to the queue.
    fn apply_requeued(&mut self, id: DeliveryId, found: Requeued, now: UnixMillis) -> RetryOutcome {
        match found {
            Requeued::Requeued => {
                if !self.queue.in_memory(id) {
                    self.queue.requeue(id, now, now, false);
                }
                RetryOutcome::Requeued
            }
            // Pending in storage, paged out (or paged in meanwhile): due now, under the due
            // time the writer left it at.
            Requeued::BroughtForward { stored } => {
                if self.queue.in_memory(id) {
                    self.queue.bring_forward(id, now);
                    self.queue.set_stored(id, stored);
                } else {
                    self.queue.requeue(id, now, stored, true);
                }
                RetryOutcome::BroughtForward
            }
            Requeued::NotRetryable(status) => RetryOutcome::NotRetryable(status),
            Requeued::NotFound => RetryOutcome::NotFound,
        }
    }

    /// A retry asked for while an attempt was out, applied once its result is stored: the
    /// delivery is queued again now (on a fresh schedule if it had failed).
    pub(super) fn requeue_stored(&mut self, ctx: &mut Context<Self>, id: DeliveryId) {
        let now = now_millis();
        let requeue = self.shared.store.ordered(move |o| o.requeue_one(id, now));
        ctx.spawn(requeue.into_actor(self).map(move |r, act, ctx| {
            match r {
                Ok(found) => {
                    act.apply_requeued(id, found, now);
                    tracing::info!(endpoint = %act.endpoint.id, delivery = %id, "retried as asked while its attempt was out");
                }
                Err(e) => {
                    tracing::error!(endpoint = %act.endpoint.id, delivery = %id, error = %e, "cannot requeue a delivery retried while its attempt was out")
                }
            }
            act.after_change(ctx);
        }));
    }
}

/// `POST /v1/endpoints/{id}/recover`: failed deliveries created in `[since, until]` go back to
/// the queue with a fresh schedule. Answers how many. Deliveries of that window whose attempt
/// is out are pending again on a fresh schedule if it fails.
#[derive(Message)]
#[rtype(result = "Result<usize, StorageError>")]
pub struct Recover {
    pub since: UnixMillis,
    pub until: UnixMillis,
    /// Which final statuses are recovered: `failed`, `expired`.
    pub statuses: Vec<DeliveryStatus>,
}

impl Handler<Recover> for EndpointActor {
    type Result = ResponseActFuture<Self, Result<usize, StorageError>>;

    fn handle(&mut self, msg: Recover, _: &mut Context<Self>) -> Self::Result {
        let endpoint = self.endpoint.id;
        let now = now_millis();
        let in_window =
            |id: &DeliveryId| (msg.since..=msg.until).contains(&(id.0.timestamp_ms() as i64));
        for (id, u) in self.unsettled.iter_mut() {
            if in_window(id) {
                u.requeue = true;
            }
        }
        let requeue = self
            .shared
            .store
            .ordered(move |o| o.requeue_failed(endpoint, msg.since, msg.until, &msg.statuses, now));
        Box::pin(requeue.into_actor(self).map(move |r, act, ctx| {
            let ids = r?;
            for id in &ids {
                if !act.queue.in_memory(*id) {
                    act.queue.requeue(*id, now, now, false);
                }
            }
            tracing::debug!(endpoint = %act.endpoint.id, requeued = ids.len(), "recovered failed deliveries");
            act.after_change(ctx);
            Ok(ids.len())
        }))
    }
}

/// `POST /v1/endpoints/{id}/test`: one request now, even when paused or failing.
#[derive(Message)]
#[rtype(result = "Result<TestOutcome, StorageError>")]
pub struct SendTest {
    pub event_type: String,
}

#[derive(Debug, Clone)]
pub struct TestOutcome {
    pub delivery_id: DeliveryId,
    pub event_id: String,
    pub attempt: Attempt,
}

impl Handler<SendTest> for EndpointActor {
    type Result = ResponseActFuture<Self, Result<TestOutcome, StorageError>>;

    fn handle(&mut self, msg: SendTest, _: &mut Context<Self>) -> Self::Result {
        let now = now_millis();
        let endpoint = self.endpoint.clone();
        let (event, mut delivery) = test_event(&endpoint, msg.event_type, now);
        // It goes out now whatever the rate limit says, and counts against it.
        if let Some(b) = self.bucket.as_mut() {
            b.charge(now);
        }
        self.tests_in_flight += 1;
        let shared = self.shared.clone();
        let settings = self.settings.clone();
        let transport = self.transport.clone();
        let send = {
            let (delivery, event) = (delivery.clone(), event.clone());
            async move {
                send(
                    &shared, &transport, &endpoint, &settings, &delivery, &event, now,
                )
                .await
            }
        };
        Box::pin(
            send.into_actor(self)
                .then(move |report, act, ctx| {
                    let finished = now_millis();
                    act.note_attempt(&report, false, now, finished);
                    let attempt = report.to_attempt(1, now);
                    act.publish_attempt(&delivery, &attempt, report.outcome.result_label());
                    delivery.attempts = 1;
                    delivery.updated_at = finished;
                    delivery.status = if report.outcome.is_success() {
                        DeliveryStatus::Succeeded
                    } else {
                        DeliveryStatus::Failed
                    };
                    act.note_final(delivery.status, 1);
                    tracing::debug!(
                        endpoint = %delivery.endpoint_id, delivery = %delivery.id,
                        status = attempt.status_code, error = attempt.error.as_deref().unwrap_or(""),
                        "test sent"
                    );
                    act.save_stats(ctx);
                    let outcome = TestOutcome {
                        delivery_id: delivery.id,
                        event_id: event.id.clone(),
                        attempt: attempt.clone(),
                    };
                    act.shared
                        .store
                        .ordered(move |o| o.record_test(&event, &delivery, &attempt))
                        .into_actor(act)
                        .map(move |r, _, _| r.map(|()| outcome))
                })
                .map(|r, act, ctx| {
                    act.tests_in_flight -= 1;
                    act.after_change(ctx);
                    r
                }),
        )
    }
}

/// The event and delivery of a test send: API.md's test payload, to this endpoint only.
fn test_event(endpoint: &Endpoint, event_type: String, now: UnixMillis) -> (Event, Delivery) {
    let key = EventKey::new();
    let id = DeliveryId::new();
    let event_id = format!("evt_{}", crate::model::new_ulid());
    let mut payload = serde_json::Map::new();
    payload.insert("event".into(), event_type.clone().into());
    payload.insert("type".into(), event_type.clone().into());
    payload.insert("test".into(), true.into());
    payload.insert("endpoint_id".into(), endpoint.id.to_string().into());
    payload.insert("timestamp".into(), rfc3339(now).into());
    let body = crate::canonical::object_to_string(&payload);
    let payload =
        serde_json::value::RawValue::from_string(body).expect("canonical JSON is valid JSON");
    let event = Event {
        key,
        id: event_id.clone(),
        tenant: endpoint.spec.tenant.clone(),
        event_type: event_type.clone(),
        received_at: now,
        deliveries: vec![DeliveryRef {
            id,
            endpoint_id: endpoint.id,
        }],
        payload,
    };
    let delivery = Delivery {
        id,
        endpoint_id: endpoint.id,
        event_key: key,
        event_id,
        event_type,
        tenant: endpoint.spec.tenant.clone(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        retries_used: 0,
        next_attempt_at: None,
        created_at: now,
        updated_at: now,
        expires_at: None,
        ordering: None,
        test: true,
        attempt_log: Vec::new(),
    };
    (event, delivery)
}
