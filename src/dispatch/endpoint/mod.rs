//! [`EndpointActor`]: one per endpoint; the only writer of that endpoint's deliveries.
//!
//! Invariants:
//! - the [`PendingQueue`] holds the endpoint's pending deliveries (a window of them in memory,
//!   the rest paged out in storage); one in memory is either waiting there or `unsettled`;
//! - at most `max_concurrency` attempts are out to the receiver at once. A delivery stays
//!   unsettled from its start until its attempt result is written, so it is never started twice
//!   and two writes for one delivery never race; its request slot is free as soon as the
//!   response is in, so storing results never holds the receiver's concurrency back;
//! - paused: nothing starts; resume makes every waiting delivery due now (the backlog drains);
//! - failing (circuit open, see [`circuit`]): nothing starts but one probe at a time, once
//!   attempts started before the circuit opened are back. Deliveries waiting meanwhile are
//!   held, not attempted, so they keep their retry budget; a probe is a real attempt and
//!   follows its delivery's schedule. The first success closes the circuit;
//! - test sends are outside the queue: they never wait, never count against `max_concurrency`
//!   and are stored only once they have their outcome.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use super::circuit;
use super::queue::PendingQueue;
use super::retry::EndpointSettings;
use super::Shared;
use crate::delivery::{AttemptReport, WebhookRequest};
use crate::metrics::EndpointMetrics;
use crate::model::{
    now_millis, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointStats, EndpointStatus,
    Event, UnixMillis,
};
use crate::storage::{DeliveryUpdate, Loaded, StorageError};

mod operator;
pub use operator::{GetStats, Recover, SendTest, StatsSnapshot, TestOutcome};

/// How long a delivery waits after storage failed while handling it.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often the oldest-pending-age gauge is refreshed.
const AGE_REFRESH: Duration = Duration::from_secs(5);
/// Most records read ahead in one storage call.
const READ_AHEAD: usize = 256;

pub struct EndpointActor {
    endpoint: Arc<Endpoint>,
    metrics: EndpointMetrics,
    settings: EndpointSettings,
    shared: Arc<Shared>,
    queue: PendingQueue,
    /// Started and not yet settled: their attempt is out or its result is being stored.
    unsettled: FxHashMap<DeliveryId, AttemptKind>,
    /// Requests out to the receiver (≤ `max_concurrency`); a slot is free again once the
    /// response is in, while its result is still being stored.
    sending: usize,
    /// A read-ahead of waiting deliveries' records is under way.
    reading_ahead: bool,
    /// Test sends awaiting their outcome; shutdown waits for them too.
    tests_in_flight: usize,
    /// Counts, last outcomes and circuit state.
    stats: EndpointStats,
    /// Stats-only writes not yet stored; shutdown waits for them. The results writer takes
    /// writes in the order they are queued, so each stores the stats newer than the last.
    stats_writes: usize,
    /// While failing: the earliest time the next probe may start.
    next_probe_at: Option<UnixMillis>,
    /// Set by [`Delete`]: cancel what is left, then stop once nothing is in flight.
    deleting: bool,
    /// The cancellation of everything not in flight is being written.
    cancelling: bool,
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
        queue: PendingQueue,
    ) -> EndpointActor {
        let settings = EndpointSettings::resolve(&endpoint.spec, &shared.config.delivery);
        // A restart keeps a failing endpoint failing: its next probe comes after the interval
        // it had earned, not a burst of the whole queue.
        let next_probe_at = stats.failing_since.map(|since| {
            let now = now_millis();
            let open_for = Duration::from_millis((now - since).max(0) as u64);
            now + circuit::probe_interval(stats.failed_probes, open_for).as_millis() as i64
        });
        let actor = EndpointActor {
            metrics: EndpointMetrics::new(&endpoint.id.to_string()),
            endpoint,
            settings,
            shared,
            queue,
            unsettled: FxHashMap::default(),
            sending: 0,
            reading_ahead: false,
            tests_in_flight: 0,
            stats,
            stats_writes: 0,
            next_probe_at,
            deleting: false,
            cancelling: false,
            draining: false,
            drain_waiters: Vec::new(),
            timer: None,
        };
        // Its series exist from the moment the endpoint does, not from whenever the actor's
        // thread first runs it: a scrape right after a create sees the endpoint.
        actor.publish_state();
        actor.publish_gauges();
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
        self.metrics.set_state(self.state());
    }

    fn publish_gauges(&self) {
        self.metrics.queue_depth.set(self.queue.total() as i64);
        self.metrics.in_flight.set(self.sending as i64);
    }

    /// Delivery ids are ULIDs stamped at creation, so the smallest pending one is the oldest.
    /// Of a paged backlog only the in-memory window (the earliest due) is looked at.
    fn publish_oldest_age(&self) {
        let age = self.queue.oldest().map_or(0, |id| {
            (now_millis() - id.0.timestamp_ms() as i64).max(0) / 1000
        });
        self.metrics.oldest_pending_age.set(age);
    }

    /// Starts every due delivery there is room for (one probe while failing), reads ahead and
    /// pages in what the next ones need, then sets the timer for the next due time.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.publish_gauges();
        if self.draining
            && self.unsettled.is_empty()
            && self.tests_in_flight == 0
            && self.stats_writes == 0
        {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        if self.paused() || self.deleting || self.draining {
            self.cancel_timer(ctx);
            return;
        }
        self.page_in(ctx);
        let now = now_millis();
        let (mut room, not_before, kind) = match self.next_probe_at.filter(|_| self.failing()) {
            Some(at) => (usize::from(self.sending == 0), at, AttemptKind::Probe),
            None => (
                self.settings.max_concurrency.saturating_sub(self.sending),
                UnixMillis::MIN,
                AttemptKind::Scheduled,
            ),
        };
        while room > 0 {
            match self.queue.first() {
                Some((due, _)) if due.max(not_before) <= now => match self.queue.start_first() {
                    Some((id, loaded)) => {
                        self.start_attempt(ctx, id, loaded, kind);
                        room -= 1;
                    }
                    None => {
                        self.read_ahead(ctx, now);
                        break;
                    }
                },
                _ => break,
            }
        }
        // Read the next ones while these are out, unless enough are read already.
        if room == 0
            && self.queue.waiting_len() > 0
            && self.queue.loaded_len() < self.read_ahead_limit()
        {
            self.read_ahead(ctx, now);
        }
        match self.queue.first() {
            // No room: a finishing attempt pumps again.
            _ if room == 0 => self.cancel_timer(ctx),
            // Due but not read yet: the read-ahead pumps when it lands.
            Some((due, _)) if due.max(not_before) <= now => self.cancel_timer(ctx),
            Some((due, _)) => self.wake_at(ctx, due.max(not_before), now),
            None => self.cancel_timer(ctx),
        }
    }

    fn read_ahead_limit(&self) -> usize {
        (2 * self.settings.max_concurrency).clamp(16, READ_AHEAD)
    }

    /// Reads the records of the next due deliveries in one storage call.
    fn read_ahead(&mut self, ctx: &mut Context<Self>, now: UnixMillis) {
        if self.reading_ahead {
            return;
        }
        let ids = self.queue.to_read_ahead(now, self.read_ahead_limit());
        if ids.is_empty() {
            return;
        }
        self.reading_ahead = true;
        let store = self.shared.store.clone();
        let read = async move {
            let found = {
                let ids = ids.clone();
                store.call(move |s| s.load_for_attempts(&ids)).await
            };
            (ids, found)
        };
        ctx.spawn(read.into_actor(self).map(|(ids, found), act, ctx| {
            act.reading_ahead = false;
            match found {
                Ok(found) => {
                    for (id, loaded) in ids.into_iter().zip(found) {
                        match loaded {
                            Some(l) if l.0.status == DeliveryStatus::Pending => {
                                act.queue.put_loaded(id, l)
                            }
                            // Finished or pruned behind the queue's back (a deleted
                            // endpoint's orphans): nothing to send.
                            _ if act.queue.is_waiting(id) => act.queue.remove(id),
                            _ => {}
                        }
                    }
                    act.after_change(ctx);
                }
                Err(e) => {
                    tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot read deliveries; will retry");
                    ctx.run_later(STORAGE_RETRY, |act, ctx| act.pump(ctx));
                }
            }
        }));
    }

    /// Refills the in-memory window from storage when it runs low.
    fn page_in(&mut self, ctx: &mut Context<Self>) {
        let Some(from) = self.queue.page_wanted() else {
            return;
        };
        self.queue.paging_started();
        let (store, endpoint) = (self.shared.store.clone(), self.endpoint.id);
        let read = async move {
            store
                .call(move |s| s.due_page(endpoint, Some(from), super::queue::PAGE))
                .await
        };
        ctx.spawn(read.into_actor(self).map(|page, act, ctx| {
            match page {
                Ok((entries, complete)) => {
                    let unsettled = &act.unsettled;
                    let entries = entries
                        .into_iter()
                        .filter(|(_, id)| !unsettled.contains_key(id))
                        .collect();
                    act.queue.page_read(entries, complete);
                    act.after_change(ctx);
                }
                Err(e) => {
                    act.queue.paging_failed();
                    tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot page in deliveries; will retry");
                    ctx.run_later(STORAGE_RETRY, |act, ctx| act.pump(ctx));
                }
            }
        }));
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

    fn start_attempt(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        (delivery, event): Loaded,
        kind: AttemptKind,
    ) {
        self.unsettled.insert(id, kind);
        self.sending += 1;
        let shared = self.shared.clone();
        let endpoint = self.endpoint.clone();
        let settings = self.settings.clone();
        let attempt = async move {
            let at = now_millis();
            let report = send(&shared, &endpoint, &settings, &delivery, &event, at).await;
            (delivery, report, at)
        };
        ctx.spawn(
            attempt
                .into_actor(self)
                .map(move |(delivery, report, at), act, ctx| {
                    act.attempt_finished(ctx, id, delivery, report, at)
                }),
        );
    }

    fn attempt_finished(
        &mut self,
        ctx: &mut Context<Self>,
        id: DeliveryId,
        mut delivery: Delivery,
        report: AttemptReport,
        at: UnixMillis,
    ) {
        self.sending -= 1;
        let kind = self
            .unsettled
            .get(&id)
            .copied()
            .unwrap_or(AttemptKind::Scheduled);
        let now = now_millis();
        let n = delivery.attempts + 1;
        self.note_attempt(&report, at, now);
        let attempt = report.to_attempt(n, at);
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
        let old_due = self.queue.stored_due(id);
        // The stats go with the result; a deleted endpoint's are not written back.
        let stats = (!self.deleting).then(|| (self.endpoint.id, self.stats.clone()));
        let (status, next) = (delivery.status, delivery.next_attempt_at);
        let update = DeliveryUpdate {
            delivery,
            attempt: Some(attempt),
            old_due,
        };
        // Queued now, so the stats it carries are stored after those queued before.
        let write = self.shared.store.write_results(vec![update], stats);
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| {
            // On a failed write the stored state still says pending at the old due time, so a
            // restart retries it; in this process it goes on as computed.
            let stored = match &written {
                Ok(()) => next,
                Err(e) => {
                    tracing::error!(delivery = %id, error = %e, "cannot store attempt result");
                    old_due
                }
            };
            act.unsettled.remove(&id);
            match (status, next) {
                (DeliveryStatus::Pending, Some(next)) => {
                    act.queue.reschedule(id, next, stored.unwrap_or(next))
                }
                _ => act.queue.remove(id),
            }
            act.after_change(ctx);
        }));
        // Its request slot is free: the next delivery need not wait for this write.
        self.after_change(ctx);
    }

    /// Counts one attempt in the metrics and stats; opens the circuit after
    /// [`circuit::OPEN_AFTER`] failures in a row and closes it on a success.
    fn note_attempt(&mut self, report: &AttemptReport, at: UnixMillis, now: UnixMillis) {
        self.metrics.attempt(report.outcome.result_label()).inc();
        self.metrics
            .attempt_duration
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
                    backlog = self.queue.total(), "endpoint recovered; draining its queue"
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

    /// Stores the stats as they are now (for changes that come without an attempt result to
    /// carry them).
    fn save_stats(&mut self, ctx: &mut Context<Self>) {
        if self.deleting {
            return;
        }
        self.stats_writes += 1;
        let stats = Some((self.endpoint.id, self.stats.clone()));
        let write = self.shared.store.write_results(Vec::new(), stats);
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            act.stats_writes -= 1;
            if let Err(e) = written {
                tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot store endpoint stats");
            }
            if act.draining {
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
        self.metrics.delivery(outcome).inc_by(count);
    }

    fn after_change(&mut self, ctx: &mut Context<Self>) {
        if self.deleting {
            if !self.cancelling && self.unsettled.is_empty() {
                ctx.stop();
            }
        } else {
            self.pump(ctx);
        }
    }

    /// Cancels every pending delivery not in flight, paged out or not (the endpoint is being
    /// deleted); those in flight are cancelled when their results come back.
    fn cancel_rest(&mut self, ctx: &mut Context<Self>) {
        self.cancelling = true;
        let in_flight: HashSet<DeliveryId> = self.unsettled.keys().copied().collect();
        self.queue.clear_except(|id| in_flight.contains(&id));
        let (store, endpoint) = (self.shared.store.clone(), self.endpoint.id);
        let write = async move {
            store
                .call(move |s| s.cancel_pending(endpoint, &in_flight))
                .await
        };
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            act.cancelling = false;
            match written {
                Ok(cancelled) => {
                    tracing::info!(endpoint = %act.endpoint.id, cancelled, "cancelled pending deliveries");
                    act.note_final(DeliveryStatus::Cancelled, cancelled as u64);
                }
                // Left pending in storage: recovery cancels deliveries of deleted endpoints.
                Err(e) => {
                    tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot cancel deliveries")
                }
            }
            act.after_change(ctx);
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

async fn send(
    shared: &Shared,
    endpoint: &Endpoint,
    settings: &EndpointSettings,
    delivery: &Delivery,
    event: &Event,
    at: UnixMillis,
) -> AttemptReport {
    let url = match &settings.url {
        Ok(url) => url,
        Err(e) => {
            return AttemptReport {
                outcome: crate::delivery::AttemptOutcome::Other(format!("invalid url: {e}")),
                duration: Duration::ZERO,
                response_body: None,
                retry_after: None,
            }
        }
    };
    let body = bytes::Bytes::copy_from_slice(event.payload.get().as_bytes());
    shared
        .sender
        .send(WebhookRequest {
            url,
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
        self.publish_oldest_age();
        ctx.run_interval(AGE_REFRESH, |act, _| act.publish_oldest_age());
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.deleting {
            self.metrics.forget();
        }
    }
}

/// New deliveries for this endpoint, just stored by ingest, with their events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Vec<Loaded>);

impl Enqueue {
    /// Where a new delivery's `due` entry is stored.
    pub fn due(delivery: &Delivery) -> UnixMillis {
        delivery.next_attempt_at.unwrap_or(delivery.created_at)
    }
}

impl Handler<Enqueue> for EndpointActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        if self.deleting {
            // Routed here just before the delete: cancel them like the rest.
            let store = self.shared.store.clone();
            let entries: Vec<_> = msg
                .0
                .iter()
                .map(|(d, _)| (d.id, Some(Enqueue::due(d))))
                .collect();
            self.cancelling = true;
            let write = async move { store.call(move |s| s.cancel_deliveries(&entries)).await };
            ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
                act.cancelling = false;
                if let Ok(n) = written {
                    act.note_final(DeliveryStatus::Cancelled, n as u64);
                }
                act.after_change(ctx);
            }));
            return;
        }
        for loaded in msg.0 {
            let id = loaded.0.id;
            self.queue.push_new(id, Enqueue::due(&loaded.0));
            self.queue.offer_loaded(id, loaded);
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
            self.queue.make_all_due(now_millis());
            tracing::info!(endpoint = %self.endpoint.id, backlog = self.queue.total(), "resumed");
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
        self.cancel_rest(ctx);
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
        if self.unsettled.contains_key(&id) {
            return Box::pin(fut::ready(Ok(RetryOutcome::BroughtForward)));
        }
        if self.queue.bring_forward(id, now) {
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
                        // Pending but paged out: into memory, due now, under its stored due.
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
                let counted = outcome == RetryOutcome::BroughtForward;
                if !act.queue.bring_forward(id, now) && !act.unsettled.contains_key(&id) {
                    act.queue.requeue(id, now, stored, counted);
                }
                act.cancel_timer(ctx);
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
