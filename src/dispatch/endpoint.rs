//! [`EndpointActor`]: one per endpoint; the only writer of that endpoint's deliveries.
//!
//! Invariants:
//! - a pending delivery known to the actor is in exactly one of `waiting` (by effective due
//!   time) and `in_flight`; `stored_due` holds the due time its `due` index entry is stored
//!   under, which the next write moves or removes;
//! - at most `max_concurrency` deliveries are in flight; a delivery stays in flight until its
//!   attempt result is written, so two writes for one delivery never race;
//! - paused: nothing starts; resume makes every waiting delivery due now (the backlog drains);
//! - failing (circuit open, see [`circuit`]): nothing starts but one probe at a time, once
//!   attempts started before the circuit opened are back. Deliveries waiting meanwhile are
//!   held, not attempted, so they keep their retry budget; a probe is a real attempt and
//!   follows its delivery's schedule. The first success closes the circuit;
//! - test sends are outside the queue: they never wait, never count against `max_concurrency`
//!   and are stored only once they have their outcome.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::circuit;
use super::retry::EndpointSettings;
use super::Shared;
use crate::delivery::{AttemptReport, WebhookRequest};
use crate::metrics::METRICS;
use crate::model::{
    now_millis, rfc3339, Attempt, Delivery, DeliveryId, DeliveryRef, DeliveryStatus, Endpoint,
    EndpointStats, EndpointStatus, Event, EventKey, UnixMillis,
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
    in_flight: HashMap<DeliveryId, AttemptKind>,
    /// Test sends awaiting their outcome; shutdown waits for them too.
    tests_in_flight: usize,
    /// Counts, last outcomes and circuit state.
    stats: EndpointStats,
    /// One stats write at a time, so the last one stored is the newest; changes made while
    /// one is out are written together when it returns.
    stats_writing: bool,
    stats_dirty: bool,
    /// While failing: the earliest time the next probe may start.
    next_probe_at: Option<UnixMillis>,
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
        stats: EndpointStats,
        pending: impl IntoIterator<Item = (UnixMillis, DeliveryId)>,
    ) -> EndpointActor {
        let settings = EndpointSettings::resolve(&endpoint.spec, &shared.config.delivery);
        // A restart keeps a failing endpoint failing: its next probe comes after the interval
        // it had earned, not a burst of the whole queue.
        let next_probe_at = stats.failing_since.map(|since| {
            let now = now_millis();
            let open_for = Duration::from_millis((now - since).max(0) as u64);
            now + circuit::probe_interval(stats.failed_probes, open_for).as_millis() as i64
        });
        let mut actor = EndpointActor {
            label: endpoint.id.to_string(),
            endpoint,
            settings,
            shared,
            waiting: BTreeSet::new(),
            stored_due: HashMap::new(),
            in_flight: HashMap::new(),
            tests_in_flight: 0,
            stats,
            stats_writing: false,
            stats_dirty: false,
            next_probe_at,
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

    fn failing(&self) -> bool {
        self.stats.failing_since.is_some()
    }

    /// `paused` (the operator's choice) shows over `failing` (the receiver's state).
    fn state(&self) -> &'static str {
        if self.paused() {
            "paused"
        } else if self.failing() {
            "failing"
        } else {
            "active"
        }
    }

    fn publish_state(&self) {
        METRICS.set_endpoint_state(&self.label, self.state());
    }

    fn add_waiting(&mut self, id: DeliveryId, due: UnixMillis, stored: UnixMillis) {
        if self.in_flight.contains_key(&id) || self.stored_due.contains_key(&id) {
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
        if self.draining
            && self.in_flight.is_empty()
            && self.tests_in_flight == 0
            && !self.stats_writing
        {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        if self.paused() || self.deleting || self.draining {
            self.cancel_timer(ctx);
            return;
        }
        let now = now_millis();
        if let Some(probe_at) = self.next_probe_at.filter(|_| self.failing()) {
            // One probe at a time; a finishing attempt pumps again.
            if !self.in_flight.is_empty() {
                self.cancel_timer(ctx);
                return;
            }
            match self.waiting.first() {
                Some(&(due, id)) if due.max(probe_at) <= now => {
                    self.waiting.pop_first();
                    self.cancel_timer(ctx);
                    self.start_attempt(ctx, id, AttemptKind::Probe);
                }
                Some(&(due, _)) => self.wake_at(ctx, due.max(probe_at), now),
                None => self.cancel_timer(ctx),
            }
            return;
        }
        while self.in_flight.len() < self.settings.max_concurrency {
            match self.waiting.first() {
                Some(&(due, id)) if due <= now => {
                    self.waiting.pop_first();
                    self.start_attempt(ctx, id, AttemptKind::Scheduled);
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
            Some(&(due, _)) => self.wake_at(ctx, due, now),
            None => self.cancel_timer(ctx),
        }
    }

    /// Makes sure the actor pumps again at `at` (or earlier).
    fn wake_at(&mut self, ctx: &mut Context<Self>, at: UnixMillis, now: UnixMillis) {
        if self.timer.is_some_and(|(t, _)| t <= at) {
            return;
        }
        self.cancel_timer(ctx);
        let wait = Duration::from_millis((at - now).max(0) as u64);
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.pump(ctx);
        });
        self.timer = Some((at, handle));
    }

    fn cancel_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
    }

    fn start_attempt(&mut self, ctx: &mut Context<Self>, id: DeliveryId, kind: AttemptKind) {
        self.in_flight.insert(id, kind);
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
        let kind = self
            .in_flight
            .get(&id)
            .copied()
            .unwrap_or(AttemptKind::Scheduled);
        let now = now_millis();
        let n = delivery.attempts + 1;
        self.note_attempt(&report, at, now);
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
        let probe_failed =
            kind == AttemptKind::Probe && self.failing() && !report.outcome.is_success();
        if probe_failed {
            self.stats.failed_probes = self.stats.failed_probes.saturating_add(1);
            let wait = self.next_probe_wait(now);
            let wait = report.retry_after.map_or(wait, |ra| ra.max(wait));
            self.next_probe_at = Some(now + wait.as_millis() as i64);
        }
        self.note_final(delivery.status, 1);
        match delivery.status {
            DeliveryStatus::Succeeded => tracing::debug!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                ms = attempt.duration_ms, "delivered"
            ),
            DeliveryStatus::Failed => tracing::warn!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error = attempt.error.as_deref().unwrap_or(""), "delivery failed; schedule exhausted"
            ),
            _ if probe_failed => tracing::debug!(
                delivery = %id, endpoint = %delivery.endpoint_id, attempt = n,
                error = attempt.error.as_deref().unwrap_or(""),
                next_probe_in_ms = self.next_probe_at.map(|t| t - now),
                "probe failed; endpoint still failing"
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
        self.save_stats(ctx);
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

    /// Counts one attempt in the metrics and stats; opens the circuit after
    /// [`circuit::OPEN_AFTER`] failures in a row and closes it on a success.
    fn note_attempt(&mut self, report: &AttemptReport, at: UnixMillis, now: UnixMillis) {
        METRICS
            .attempts
            .with_label_values(&[&self.label, report.outcome.result_label()])
            .inc();
        METRICS
            .attempt_duration
            .with_label_values(&[&self.label])
            .observe(report.duration.as_secs_f64());
        let stats = &mut self.stats;
        if report.outcome.is_success() {
            stats.consecutive_failures = 0;
            stats.last_success_at = Some(at);
            if let Some(since) = stats.failing_since.take() {
                stats.failed_probes = 0;
                self.next_probe_at = None;
                tracing::info!(
                    endpoint = %self.endpoint.id, failing_for_s = (now - since) / 1000,
                    backlog = self.waiting.len(), "endpoint recovered; draining its queue"
                );
                self.publish_state();
            }
            return;
        }
        stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
        stats.last_failure_at = Some(at);
        if stats.failing_since.is_none() && stats.consecutive_failures >= circuit::OPEN_AFTER {
            stats.failing_since = Some(now);
            stats.failed_probes = 0;
            self.next_probe_at = Some(now + self.next_probe_wait(now).as_millis() as i64);
            tracing::warn!(
                endpoint = %self.endpoint.id,
                consecutive_failures = self.stats.consecutive_failures,
                error = report.outcome.error().unwrap_or_default(),
                "endpoint failing; holding its queue and probing it"
            );
            self.publish_state();
        }
    }

    /// The wait before the next probe, given the probes that failed so far.
    fn next_probe_wait(&self, now: UnixMillis) -> Duration {
        let since = self.stats.failing_since.unwrap_or(now);
        let open_for = Duration::from_millis((now - since).max(0) as u64);
        circuit::probe_interval(self.stats.failed_probes, open_for)
    }

    /// Stores the stats as they are now, after any write already under way.
    fn save_stats(&mut self, ctx: &mut Context<Self>) {
        if self.deleting {
            return;
        }
        self.stats_dirty = true;
        if self.stats_writing {
            return;
        }
        self.stats_writing = true;
        self.stats_dirty = false;
        let (store, id, stats) = (
            self.shared.store.clone(),
            self.endpoint.id,
            self.stats.clone(),
        );
        let write = async move { store.call(move |s| s.put_stats(id, &stats)).await };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            act.stats_writing = false;
            if let Err(e) = written {
                tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot store endpoint stats");
            }
            if act.stats_dirty {
                act.save_stats(ctx);
            } else if act.draining {
                act.pump(ctx);
            }
        }));
    }

    /// Counts deliveries that reached a final status.
    fn note_final(&mut self, status: DeliveryStatus, count: u64) {
        let outcome = match status {
            DeliveryStatus::Succeeded => {
                self.stats.succeeded += count;
                "succeeded"
            }
            DeliveryStatus::Failed => {
                self.stats.failed += count;
                "failed"
            }
            DeliveryStatus::Cancelled => "cancelled",
            DeliveryStatus::Pending => return,
        };
        METRICS
            .deliveries
            .with_label_values(&[&self.label, outcome])
            .inc_by(count);
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
            self.in_flight.insert(*id, AttemptKind::Scheduled);
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
                    act.note_final(DeliveryStatus::Cancelled, cancelled as u64);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptKind {
    /// A delivery whose turn came.
    Scheduled,
    /// The single request that tests a failing endpoint.
    Probe,
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
        if self.in_flight.contains_key(&id) {
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
            pending: self.stored_due.len(),
            in_flight: self.in_flight.len() + self.tests_in_flight,
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
                act.add_waiting(*id, now, now);
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
                    let attempt = Attempt {
                        n: 1,
                        at: now,
                        status_code: report.outcome.status_code(),
                        duration_ms: report.duration.as_millis() as u64,
                        error: report.outcome.error(),
                        response_body: report.response_body.clone(),
                    };
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
