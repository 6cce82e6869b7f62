//! The operator's requests to an endpoint actor: its live stats, recover, and test sends.
//! A child of the actor's module, so these handlers share its private state and helpers.

use actix::prelude::*;

use super::{send, EndpointActor};
use crate::model::{
    now_millis, rfc3339, Attempt, Delivery, DeliveryId, DeliveryRef, DeliveryStatus, Endpoint,
    EndpointStats, Event, EventKey, UnixMillis,
};
use crate::storage::StorageError;

/// The endpoint's live figures for `GET /v1/endpoints/{id}`.
#[derive(Message)]
#[rtype(result = "StatsSnapshot")]
pub struct GetStats;

#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub pending: usize,
    pub in_flight: usize,
    /// `active`, `paused` or `failing`.
    pub state: &'static str,
    pub stats: EndpointStats,
    pub next_probe_at: Option<UnixMillis>,
}

impl Handler<GetStats> for EndpointActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(StatsSnapshot {
            pending: self.queue.total(),
            in_flight: self.sending + self.tests_in_flight,
            state: self.state(),
            stats: self.stats.clone(),
            next_probe_at: self.next_probe_at.filter(|_| self.failing()),
        })
    }
}

/// `POST /v1/endpoints/{id}/recover`: failed deliveries created in `[since, until]` go back to
/// the queue with a fresh schedule. Answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StorageError>")]
pub struct Recover {
    pub since: UnixMillis,
    pub until: UnixMillis,
}

impl Handler<Recover> for EndpointActor {
    type Result = ResponseActFuture<Self, Result<usize, StorageError>>;

    fn handle(&mut self, msg: Recover, _: &mut Context<Self>) -> Self::Result {
        let store = self.shared.store.clone();
        let endpoint = self.endpoint.id;
        let now = now_millis();
        let requeue = async move {
            store
                .call(move |s| s.requeue_failed(endpoint, msg.since, msg.until, now))
                .await
        };
        Box::pin(requeue.into_actor(self).map(move |r, act, ctx| {
            let ids = r?;
            for id in &ids {
                act.queue.requeue(*id, now, now, false);
            }
            tracing::info!(endpoint = %act.endpoint.id, requeued = ids.len(), "recovered failed deliveries");
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
        self.tests_in_flight += 1;
        let shared = self.shared.clone();
        let settings = self.settings.clone();
        let send = {
            let (delivery, event) = (delivery.clone(), event.clone());
            async move { send(&shared, &endpoint, &settings, &delivery, &event, now).await }
        };
        Box::pin(
            send.into_actor(self)
                .then(move |report, act, ctx| {
                    let finished = now_millis();
                    act.note_attempt(&report, now, finished);
                    let attempt = report.to_attempt(1, now);
                    delivery.attempts = 1;
                    delivery.updated_at = finished;
                    delivery.status = if report.outcome.is_success() {
                        DeliveryStatus::Succeeded
                    } else {
                        DeliveryStatus::Failed
                    };
                    act.note_final(delivery.status, 1);
                    tracing::info!(
                        endpoint = %delivery.endpoint_id, delivery = %delivery.id,
                        status = attempt.status_code, error = attempt.error.as_deref().unwrap_or(""),
                        "test sent"
                    );
                    act.save_stats(ctx);
                    let store = act.shared.store.clone();
                    async move {
                        let outcome = TestOutcome {
                            delivery_id: delivery.id,
                            event_id: event.id.clone(),
                            attempt: attempt.clone(),
                        };
                        store
                            .call(move |s| s.record_test(&event, &delivery, &attempt))
                            .await
                            .map(|()| outcome)
                    }
                    .into_actor(act)
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
    let event_id = format!("evt_{}", ulid::Ulid::new());
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
    };
    (event, delivery)
}
