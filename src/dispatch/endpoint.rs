//! [`EndpointActor`]: one per endpoint; the only writer of that endpoint's deliveries.
//!
//! Invariants:
//! - a pending delivery known to the actor is in exactly one of `waiting` (by effective due
//!   time) and `in_flight`; `stored_due` holds the due time its `due` index entry is stored
//!   under, which the next write moves or removes;
//! - at most `max_concurrency` deliveries are in flight; a delivery stays in flight until its
//!   attempt result is written, so two writes for one delivery never race;
//! - paused: nothing starts; resume makes every waiting delivery due now (the backlog drains).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::retry::EndpointSettings;
use super::Shared;
use crate::delivery::{AttemptReport, WebhookRequest};
use crate::metrics::METRICS;
use crate::model::{
    now_millis, Attempt, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointStatus, Event,
    UnixMillis,
};
use crate::storage::StorageError;

/// How long a delivery waits after storage failed while handling it.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often the oldest-pending-age gauge is refreshed.
const AGE_REFRESH: Duration = Duration::from_secs(5);

pub struct EndpointActor {
    endpoint: Arc<Endpoint>,
    /// The endpoint id as its metrics label.
    label: String,
    settings: EndpointSettings,
    shared: Arc<Shared>,
    /// Pending deliveries not in flight, ordered by when they are due.
    waiting: BTreeSet<(UnixMillis, DeliveryId)>,
    /// Due time of each pending delivery's stored `due` entry (waiting or in flight).
    stored_due: HashMap<DeliveryId, UnixMillis>,
    in_flight: HashSet<DeliveryId>,
    /// Set by [`Delete`]: cancel what is left, then stop once nothing is in flight.
    deleting: bool,
    /// Set by [`DrainEndpoint`] at shutdown: start nothing new; wake the waiters once nothing
    /// is in flight.
    draining: bool,
    drain_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The pending wake-up for the earliest waiting delivery, and when it fires.
    timer: Option<(UnixMillis, SpawnHandle)>,
}

impl EndpointActor {
    pub fn new(
        endpoint: Arc<Endpoint>,
        shared: Arc<Shared>,
        pending: impl IntoIterator<Item = (UnixMillis, DeliveryId)>,
    ) -> EndpointActor {
        let settings = EndpointSettings::resolve(&endpoint.spec, &shared.config.delivery);
        let mut actor = EndpointActor {
            label: endpoint.id.to_string(),
            endpoint,
            settings,
            shared,
            waiting: BTreeSet::new(),
            stored_due: HashMap::new(),
            in_flight: HashSet::new(),
            deleting: false,
            draining: false,
            drain_waiters: Vec::new(),
            timer: None,
        };
        for (due, id) in pending {
            actor.add_waiting(id, due, due);
        }
        actor
    }

    fn paused(&self) -> bool {
        self.endpoint.status == EndpointStatus::Paused
    }

    fn publish_state(&self) {
        let state = if self.paused() { "paused" } else { "active" };
        METRICS.set_endpoint_state(&self.label, state);
    }

    fn add_waiting(&mut self, id: DeliveryId, due: UnixMillis, stored: UnixMillis) {
        if self.in_flight.contains(&id) || self.stored_due.contains_key(&id) {
            return;
        }
        self.stored_due.insert(id, stored);
        self.waiting.insert((due, id));
    }

    /// Starts every due delivery there is room for, then sets the timer for the next one.
    fn publish_gauges(&self) {
        METRICS
            .queue_depth
            .with_label_values(&[&self.label])
            .set(self.stored_due.len() as i64);
        METRICS
            .in_flight
            .with_label_values(&[&self.label])
            .set(self.in_flight.len() as i64);
    }

    /// Delivery ids are ULIDs stamped at creation, so the smallest pending one is the oldest.
    fn publish_oldest_age(&self) {
        let age = self.stored_due.keys().min().map_or(0, |id| {
            (now_millis() - id.0.timestamp_ms() as i64).max(0) / 1000
        });
        METRICS
            .oldest_pending_age
            .with_label_values(&[&self.label])
            .set(age);
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.publish_gauges();
        if self.draining && self.in_flight.is_empty() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        if self.paused() || self.deleting || self.draining {
            self.cancel_timer(ctx);
            return;
        }
        let now = now_millis();
        while self.in_flight.len() < self.settings.max_concurrency {
            match self.waiting.first() {
                Some(&(due, id)) if due <= now => {
                    self.waiting.pop_first();
                    self.start_attempt(ctx, id);
                }
                _ => break,
            }
        }
        if self.in_flight.len() >= self.settings.max_concurrency {
            // A finishing attempt pumps again; no timer needed until then.
            self.cancel_timer(ctx);
            return;
        }
        match self.waiting.first() {
            Some(&(due, _)) => {
                if self.timer.is_some_and(|(at, _)| at <= due) {
                    return;
                }
                self.cancel_timer(ctx);
                let wait = Duration::from_millis((due - now).max(0) as u64);
                let handle = ctx.run_later(wait, |act, ctx| {
                    act.timer = None;
                    act.pump(ctx);
                });
                self.timer = Some((due, handle));
            }
            None => self.cancel_timer(ctx),
        }
    }

    fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
    }

    fn start_attempt(&mut self, ctx: &mut Context<Self>, id: DeliveryId) {
        self.in_flight.insert(id);
        let shared = self.shared.clone();
        let endpoint = self.endpoint.clone();
        let settings = self.settings.clone();
        let attempt = async move {
            let loaded = shared.store.call(move |s| s.load_for_attempt(id)).await;
            let (delivery, event) = match loaded {
                Ok(Some((d, e))) if d.status == DeliveryStatus::Pending => (d, e),
                Ok(_) => return AttemptResult::Gone,
                Err(e) => return AttemptResult::StorageFailed(e),
            };
            let at = now_millis();
            let report = send(&shared, &endpoint, &settings, &delivery, &event, at).await;
            AttemptResult::Sent {
                delivery,
                report: Box::new(report),
                at,
            }
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |result, act, ctx| act.attempt_finished(ctx, id, result)),
        );
    }

    fn attempt_finished(&mut self, ctx: &mut Context<Self>, id: DeliveryId, result: AttemptResult) {
        let (mut delivery, report, at) = match result {
            AttemptResult::Sent {
                delivery,
                report,
                at,
            } => (delivery, report, at),
            AttemptResult::Gone => {
                self.forget(id);
                return self.after_change(ctx);
            }
            AttemptResult::StorageFailed(e) => {
                tracing::error!(delivery = %id, error = %e, "cannot load delivery; will retry");
                self.in_flight.remove(&id);
                let stored = self.stored_due.remove(&id).unwrap_or_else(now_millis);
                let retry_at = now_millis() + STORAGE_RETRY.as_millis() as i64;
                self.add_waiting(id, retry_at, stored);
                return self.after_change(ctx);
            }
        };
        let now = now_millis();
        let n = delivery.attempts + 1;
        METRICS
            .attempts
            .with_label_values(&[&self.label, report.outcome.result_label()])
            .inc();
        METRICS
            .attempt_duration
            .with_label_values(&[&self.label])
            .observe(report.duration.as_secs_f64());
        let attempt = Attempt {
            n,
            at,
            status_code: report.outcome.status_code(),
            duration_ms: report.duration.as_millis() as u64,
            error: report.outcome.error(),
            response_body: report.response_body.clone(),
        };
        delivery.attempts = n;
        delivery.updated_at = now;
        if report.outcome.is_success() {
            delivery.status = DeliveryStatus::Succeeded;
            delivery.next_attempt_at = None;
        } else if self.deleting {
            delivery.status = DeliveryStatus::Cancelled;
            delivery.next_attempt_at = None;
        } else {
            match self.settings.schedule.next_delay(delivery.retries_used) {
                Some(delay) => {
                    let delay = report.retry_after.map_or(delay, |ra| ra.max(delay));
                    delivery.retries_used += 1;
                    delivery.next_attempt_at = Some(now + delay.as_millis() as i64);
                }
                None => {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.next_attempt_at = None;
                }
            }
        }
        let outcome = match delivery.status {
            DeliveryStatus::Succeeded => Some("succeeded"),
            DeliveryStatus::Failed => Some("failed"),
            DeliveryStatus::Cancelled => Some("cancelled"),
            DeliveryStatus::Pending => None,
        };
        if let Some(outcome) = outcome {
            METRICS
                .deliveries
                .with_label_values(&[&self.label, outcome])
                .inc();
        }
        match delivery.status {
            DeliveryStatus::Succeeded => tracing::debug!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                ms = attempt.duration_ms, "delivered"
            ),
            DeliveryStatus::Failed => tracing::warn!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error = attempt.error.as_deref().unwrap_or(""), "delivery failed; schedule exhausted"
            ),
            _ => tracing::info!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error = attempt.error.as_deref().unwrap_or(""),
                retry_in_ms = delivery.next_attempt_at.map(|t| t - now),
                "attempt failed"
            ),
        }
        let old_due = self.stored_due.get(&id).copied();
        let store = self.shared.store.clone();
        let write = {
            let delivery = delivery.clone();
            async move {
                store
                    .call(move |s| s.update_delivery(&delivery, Some(&attempt), old_due))
                    .await
            }
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            // On a failed write the stored state still says pending at the old due time, so a
            // restart retries it; in this process it goes on as computed.
            let stored = match &written {
                Ok(()) => delivery.next_attempt_at,
                Err(e) => {
                    tracing::error!(delivery = %id, error = %e, "cannot store attempt result");
                    old_due
                }
            };
            act.forget(id);
            if let (DeliveryStatus::Pending, Some(next)) =
                (delivery.status, delivery.next_attempt_at)
            {
                act.add_waiting(id, next, stored.unwrap_or(next));
            }
            act.after_change(ctx);
        }));
    }

    fn forget(&mut self, id: DeliveryId) {
        self.in_flight.remove(&id);
        self.stored_due.remove(&id);
    }

    fn after_change(&mut self, ctx: &mut Context<Self>) {
        if self.deleting {
            self.cancel_waiting(ctx);
            if self.in_flight.is_empty() && self.waiting.is_empty() {
                ctx.stop();
            }
        } else {
            self.pump(ctx);
        }
    }

    /// Cancels every waiting delivery (the endpoint is being deleted).
    fn cancel_waiting(&mut self, ctx: &mut Context<Self>) {
        if self.waiting.is_empty() {
            return;
        }
        let entries: Vec<(DeliveryId, Option<UnixMillis>)> = std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(_, id)| (id, self.stored_due.get(&id).copied()))
            .collect();
        // Held as in flight until written, so the actor outlives its last write.
        for (id, _) in &entries {
            self.in_flight.insert(*id);
        }
        let store = self.shared.store.clone();
        let write = async move {
            let ids: Vec<DeliveryId> = entries.iter().map(|(id, _)| *id).collect();
            store
                .call(move |s| s.cancel_deliveries(&entries))
                .await
                .map(|cancelled| (ids, cancelled))
        };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            match written {
                Ok((ids, cancelled)) => {
                    tracing::info!(endpoint = %act.endpoint.id, cancelled, "cancelled pending deliveries");
                    METRICS
                        .deliveries
                        .with_label_values(&[&act.label, "cancelled"])
                        .inc_by(cancelled as u64);
                    for id in ids {
                        act.forget(id);
                    }
                }
                Err(e) => {
                    // Left pending in storage: recovery cancels deliveries of deleted endpoints.
                    tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot cancel deliveries");
                    act.in_flight.clear();
                    act.stored_due.clear();
                }
            }
            if act.in_flight.is_empty() {
                ctx.stop();
            }
        }));
    }
}

enum AttemptResult {
    Sent {
        delivery: Delivery,
        report: Box<AttemptReport>,
        at: UnixMillis,
    },
    /// No longer pending (cancelled, finished, or pruned) when its turn came.
    Gone,
    StorageFailed(StorageError),
}

async fn send(
    shared: &Shared,
    endpoint: &Endpoint,
    settings: &EndpointSettings,
    delivery: &Delivery,
    event: &Event,
    at: UnixMillis,
) -> AttemptReport {
    let body = bytes::Bytes::copy_from_slice(event.payload.get().as_bytes());
    shared
        .sender
        .send(WebhookRequest {
            url: &endpoint.spec.url,
            signature_header: &settings.signature_header,
            secrets: endpoint.signing_secrets(at).collect(),
            event_id: &delivery.event_id,
            event_type: &delivery.event_type,
            attempt: delivery.attempts + 1,
            body,
            static_headers: endpoint.spec.headers.as_ref(),
            timeout: settings.timeout,
            timestamp: at / 1000,
        })
        .await
}

impl Actor for EndpointActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.publish_state();
        self.publish_oldest_age();
        ctx.run_interval(AGE_REFRESH, |act, _| act.publish_oldest_age());
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.deleting {
            METRICS.forget_endpoint(&self.label);
        }
    }
}

/// New deliveries for this endpoint, just stored by ingest: (due, id).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<(UnixMillis, DeliveryId)>);

impl Handler<Enqueue> for EndpointActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        for (due, id) in msg.0 {
            self.add_waiting(id, due, due);
        }
        self.after_change(ctx);
    }
}

/// The endpoint's stored record changed (settings, pause/resume, secrets).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Arc<Endpoint>);

impl Handler<Reconfigure> for EndpointActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, ctx: &mut Context<Self>) {
        let resumed = self.paused() && msg.0.status == EndpointStatus::Active;
        self.settings = EndpointSettings::resolve(&msg.0.spec, &self.shared.config.delivery);
        self.endpoint = msg.0;
        self.publish_state();
        if resumed {
            let now = now_millis();
            self.waiting = std::mem::take(&mut self.waiting)
                .into_iter()
                .map(|(due, id)| (due.min(now), id))
                .collect();
            tracing::info!(endpoint = %self.endpoint.id, backlog = self.waiting.len(), "resumed");
        }
        self.cancel_timer(ctx);
        self.pump(ctx);
    }
}

/// The endpoint was deleted: cancel its pending deliveries, then stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Delete;

impl Handler<Delete> for EndpointActor {
    type Result = ();

    fn handle(&mut self, _: Delete, ctx: &mut Context<Self>) {
        self.deleting = true;
        self.cancel_timer(ctx);
        self.after_change(ctx);
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
    /// A pending delivery is due now.
    BroughtForward,
    /// Succeeded or cancelled: nothing to retry.
    NotRetryable(DeliveryStatus),
    NotFound,
}

impl Handler<RetryDelivery> for EndpointActor {
    type Result = ResponseActFuture<Self, Result<RetryOutcome, StorageError>>;

    fn handle(&mut self, msg: RetryDelivery, _: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        let now = now_millis();
        if self.in_flight.contains(&id) {
            return Box::pin(fut::ready(Ok(RetryOutcome::BroughtForward)));
        }
        if self.stored_due.contains_key(&id) {
            self.waiting.retain(|(_, d)| *d != id);
            self.waiting.insert((now, id));
            return Box::pin(fut::ready(Ok(RetryOutcome::BroughtForward)).map(
                |r, act: &mut Self, ctx| {
                    act.cancel_timer(ctx);
                    act.pump(ctx);
                    r
                },
            ));
        }
        let store = self.shared.store.clone();
        let requeue = async move {
            store
                .call(move |s| {
                    let Some(mut d) = s.get_delivery(id)? else {
                        return Ok((RetryOutcome::NotFound, None));
                    };
                    match d.status {
                        DeliveryStatus::Failed => {
                            d.status = DeliveryStatus::Pending;
                            d.retries_used = 0;
                            d.next_attempt_at = Some(now);
                            d.updated_at = now;
                            s.update_delivery(&d, None, None)?;
                            Ok((RetryOutcome::Requeued, Some(now)))
                        }
                        // Pending in storage but not queued here: queue it under its stored due.
                        DeliveryStatus::Pending => {
                            Ok((RetryOutcome::BroughtForward, d.next_attempt_at))
                        }
                        other => Ok((RetryOutcome::NotRetryable(other), None)),
                    }
                })
                .await
        };
        Box::pin(requeue.into_actor(self).map(move |r, act, ctx| {
            let (outcome, stored) = r?;
            if let Some(stored) = stored {
                act.add_waiting(id, now, stored);
                act.pump(ctx);
            }
            Ok(outcome)
        }))
    }
}

/// Shutdown: start no new attempts; answer once nothing is in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainEndpoint;

impl Handler<DrainEndpoint> for EndpointActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainEndpoint, ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drain_waiters.push(tx);
        self.pump(ctx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
