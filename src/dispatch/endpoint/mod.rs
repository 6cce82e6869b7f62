//! [`EndpointActor`]: one per endpoint; the only one that decides what happens to that
//! endpoint's deliveries once they exist. Its changes reach storage through the one ordered
//! writer ([`crate::storage::Store::write_results`], [`crate::storage::Store::ordered`]), in the
//! order the actor makes them.
//!
//! - [`attempt`]: starting attempts and applying their results;
//! - [`lifecycle`]: new deliveries from ingest, settings, pause/resume, delete, shutdown;
//! - [`operator`]: stats, retry, recover and test sends.
//!
//! Invariants:
//! - the [`PendingQueue`] holds the endpoint's pending deliveries (a window of them in memory,
//!   the rest paged out in storage); one in memory is either waiting there or `unsettled`;
//! - every delivery ingest stores for this endpoint reaches it as an [`Enqueue`], in commit
//!   order; `handed_over` is the last commit seen, and a page read from storage never brings in
//!   a delivery of a later commit (its `Enqueue` does);
//! - at most `max_concurrency` attempts are out to the receiver at once. A delivery stays
//!   unsettled from its start until its attempt result is written, so it is never started twice
//!   and two writes for one delivery never race; its request slot is free as soon as the
//!   response is in, so storing results never holds the receiver's concurrency back;
//! - an operator's retry or recover of an unsettled delivery is remembered with it and applied
//!   to its result: if the attempt failed, the delivery is pending again on a fresh schedule;
//! - paused: nothing starts; resume makes every waiting delivery due now (the backlog drains);
//! - failing (circuit open, see [`circuit`]): nothing starts but one probe at a time, once
//!   attempts started before the circuit opened are back. Deliveries waiting meanwhile are
//!   held, not attempted, so they keep their retry budget; a probe is a real attempt and
//!   follows its delivery's schedule. The first success closes the circuit;
//! - ordered deliveries (`ordering: "key"`) of one key go one at a time in sequence order
//!   ([`super::ordering`]): one picked before its turn is parked, out of the waiting sets but
//!   still in memory, and waits again when the one before it is final and stored; one re-sent
//!   by `retry` or `recover` after it was final is released and waits for no one;
//! - test sends are outside the queue: they never wait, never count against `max_concurrency`
//!   and are stored only once they have their outcome;
//! - timers only wake the actor; whether something is due is decided on hookd's clock
//!   ([`crate::clock`]), which wall-clock steps do not move.
//!
//! Mailboxes are unbounded: nothing sent to an actor is dropped, and what ingest can send is
//! bounded by what it can store.

mod attempt;
mod lifecycle;
mod operator;

pub use lifecycle::{Delete, DrainEndpoint, Enqueue, Reconfigure};
pub use operator::{
    GetStats, Recover, RetryDelivery, RetryOutcome, SendTest, StatsSnapshot, TestOutcome,
};

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;

use super::circuit::CircuitState;
use super::ordering::KeyTurns;
use super::queue::{Class, PendingQueue};
use super::rate::TokenBucket;
use super::retry::EndpointSettings;
use super::Shared;
use crate::metrics::{EndpointMetrics, EndpointState};
use crate::model::{
    now_millis, DeliveryId, DeliveryStatus, Endpoint, EndpointStats, EndpointStatus, UnixMillis,
};
use crate::stream::{EndpointLine, Line};

/// How long a delivery waits after storage failed while handling it.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// How often the oldest-pending-age gauge is refreshed.
const AGE_REFRESH: Duration = Duration::from_secs(5);
/// Most records read ahead in one storage call.
const READ_AHEAD: usize = 256;

/// An ordered delivery picked before its turn, set aside with what it needs to wait again.
struct Parked {
    id: DeliveryId,
    due: UnixMillis,
    class: Class,
    loaded: crate::storage::Loaded,
}

/// A started delivery whose result is not stored yet.
#[derive(Debug, Clone, Copy)]
struct Unsettled {
    probe: bool,
    /// Its class while it waited: a retry's request slot counts against the retries' share.
    class: Class,
    /// An operator asked for a retry (or recover) while it was out.
    requeue: bool,
}

pub struct EndpointActor {
    endpoint: Arc<Endpoint>,
    metrics: EndpointMetrics,
    settings: EndpointSettings,
    /// How its requests go out: the client of its TLS identity, its token cache.
    transport: Transport,
    shared: Arc<Shared>,
    queue: PendingQueue,
    /// The last ingest commit whose deliveries for this endpoint have arrived.
    handed_over: u64,
    unsettled: FxHashMap<DeliveryId, Unsettled>,
    /// Requests out to the receiver (≤ `max_concurrency`); a slot is free again once the
    /// response is in, while its result is still being stored.
    sending: usize,
    /// Of those, retries (at most their share, see [`super::retry::pick`]).
    sending_retries: usize,
    /// A read-ahead of waiting deliveries' records is under way.
    reading_ahead: bool,
    /// Test sends awaiting their outcome; shutdown waits for them too.
    tests_in_flight: usize,
    /// Counts and last outcomes, as stored; the circuit's part is kept in `circuit`.
    stats: EndpointStats,
    circuit: CircuitState,
    /// Set from the moment the actor decides to pause its endpoint (a 410, or failing for
    /// `pause_after`) until the stored change comes back as a [`Reconfigure`]: nothing
    /// starts meanwhile.
    pausing: Option<crate::model::PausedReason>,
    /// The state last published (metrics, stream), to tell changes apart.
    shown_state: Option<EndpointState>,
    /// The last failed attempt's error, while failures are the latest news (in memory only).
    last_error: Option<String>,
    /// Attempts over the last hour, for the success ratio.
    recent: super::recent::RecentAttempts,
    /// When a failing endpoint's failed probe was last logged at info (at most once a minute).
    probe_logged_at: Option<UnixMillis>,
    /// The rate limit's bucket, when the endpoint has one.
    bucket: Option<TokenBucket>,
    /// Ordering keys with pending ordered deliveries (`ordering: "key"`).
    turns: KeyTurns,
    /// Ordered deliveries picked before their turn, by (key, sequence).
    parked: FxHashMap<(String, u64), Parked>,
    /// Operator events for transitions decided since the last write, which the next write
    /// of the stats (or of the delivery they concern) carries.
    outbox: Vec<crate::operator::OperatorEvent>,
    /// Stats-only writes not yet stored; shutdown waits for them.
    stats_writes: usize,
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

/// What an endpoint's attempts go out on; rebuilt when its `tls` or `auth` changes. Cheap to
/// clone (one per attempt).
#[derive(Clone)]
pub(super) struct Transport {
    /// The client of the endpoint's TLS identity; an error for a stored `tls` or `proxy`
    /// this hookd cannot use (each attempt then fails saying so).
    identity: Result<crate::delivery::Identity, String>,
    /// Its own proxy, else `delivery.proxy`.
    proxy: Option<crate::delivery::proxy::Proxy>,
    /// The endpoint's OAuth token, with `auth`.
    tokens: Option<Arc<crate::delivery::oauth::TokenCache>>,
}

impl Transport {
    pub(super) fn of(shared: &Shared, endpoint: &Endpoint) -> Transport {
        let proxy = endpoint
            .spec
            .proxy
            .as_deref()
            .or(shared.config.delivery.proxy())
            .map(crate::delivery::proxy::Proxy::parse)
            .transpose();
        let identity = shared
            .sender
            .client_for(endpoint.spec.tls.as_ref())
            .map_err(|e| format!("invalid tls: {e}"));
        let (identity, proxy) = match proxy {
            Ok(proxy) => (identity, proxy),
            Err(e) => (Err(format!("invalid proxy: {e}")), None),
        };
        if let Err(e) = &identity {
            tracing::error!(endpoint = %endpoint.id, error = %e, "endpoint cannot send");
        }
        Transport {
            identity,
            proxy,
            tokens: endpoint.spec.auth.as_ref().map(|_| Arc::default()),
        }
    }
}

impl EndpointActor {
    /// `handed_over`: the last ingest commit whose deliveries are in storage for `queue` to
    /// find (every commit before this process started); `keys`: each ordering key's lowest
    /// and highest pending sequence numbers, as stored.
    pub fn new(
        endpoint: Arc<Endpoint>,
        shared: Arc<Shared>,
        stats: EndpointStats,
        queue: PendingQueue,
        handed_over: u64,
        keys: std::collections::HashMap<String, (u64, u64)>,
    ) -> EndpointActor {
        let settings = EndpointSettings::resolve(&endpoint.spec, &shared.config.delivery);
        let now = now_millis();
        let circuit = CircuitState::restore(&stats, now);
        let bucket = endpoint
            .spec
            .rate_limit
            .map(|limit| match stats.rate_tokens {
                Some(stored) => TokenBucket::restore(limit, stored, now),
                None => TokenBucket::full(limit, now),
            });
        let transport = Transport::of(&shared, &endpoint);
        let mut actor = EndpointActor {
            metrics: EndpointMetrics::new(&endpoint.id.to_string()),
            endpoint,
            settings,
            transport,
            shared,
            queue,
            handed_over,
            unsettled: FxHashMap::default(),
            sending: 0,
            sending_retries: 0,
            reading_ahead: false,
            tests_in_flight: 0,
            stats,
            circuit,
            pausing: None,
            shown_state: None,
            last_error: None,
            recent: Default::default(),
            probe_logged_at: None,
            bucket,
            turns: KeyTurns::restore(keys),
            parked: FxHashMap::default(),
            outbox: Vec::new(),
            stats_writes: 0,
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
        self.endpoint.status == EndpointStatus::Paused || self.pausing.is_some()
    }

    /// Why it is paused, if it is.
    fn paused_reason(&self) -> Option<crate::model::PausedReason> {
        self.pausing.or(self.endpoint.paused_reason_shown())
    }

    /// Pauses the endpoint for `reason`: at once in this actor, and in its stored record
    /// through the supervisor (which sends the record back as a [`Reconfigure`]). An operator's
    /// pause or resume that came first wins: the change applies only to an active endpoint.
    fn pause_self(&mut self, reason: crate::model::PausedReason) {
        if self.paused() || self.deleting {
            return;
        }
        self.pausing = Some(reason);
        self.publish_state();
        tracing::warn!(
            endpoint = %self.endpoint.id, reason = reason.label(), backlog = self.queue.total(),
            "endpoint paused; its deliveries wait until it is resumed"
        );
        let Some(supervisor) = self.shared.router.supervisor() else {
            return;
        };
        supervisor.do_send(super::ChangeEndpoint {
            id: self.endpoint.id,
            change: Box::new(move |endpoint: &mut Endpoint| {
                if endpoint.status == EndpointStatus::Active {
                    endpoint.status = EndpointStatus::Paused;
                    endpoint.paused_reason = Some(reason);
                }
                Ok(())
            }),
        });
    }

    /// `paused` (the operator's choice) shows over `failing` (the receiver's state).
    fn state(&self) -> EndpointState {
        if self.paused() {
            EndpointState::Paused
        } else if self.circuit.is_open() {
            EndpointState::Failing
        } else {
            EndpointState::Active
        }
    }

    /// The state into the metrics, and onto the stream when it changed.
    fn publish_state(&mut self) {
        let state = self.state();
        self.metrics
            .set_state(state, self.paused_reason().map(|r| r.label()));
        let before = self.shown_state.replace(state);
        if before.is_none_or(|b| b == state) {
            return;
        }
        let reason = match state {
            EndpointState::Paused => self.paused_reason().map(|r| r.label().to_string()),
            EndpointState::Failing => self.last_error.clone(),
            EndpointState::Active => None,
        };
        let (endpoint, tenant) = (self.endpoint.id, &self.endpoint.spec.tenant);
        self.shared.feed.publish(|| {
            Line::Endpoint(EndpointLine {
                endpoint_id: endpoint.to_string(),
                tenant: tenant.clone(),
                state: state.label(),
                reason,
            })
        });
    }

    fn publish_gauges(&self) {
        self.metrics.queue_depth.set(self.queue.total() as i64);
        self.metrics.in_flight.set(self.sending as i64);
    }

    /// How long the earliest due waiting delivery has been due (API.md §10: since it became
    /// due, not since its creation; one waiting for a retry later is not late). The waiting
    /// sets are ordered by due time and a paged backlog keeps its earliest in memory, so the
    /// first one is the oldest.
    fn oldest_pending_age_ms(&self, now: UnixMillis) -> i64 {
        self.queue.first().map_or(0, |(due, _)| (now - due).max(0))
    }

    fn publish_oldest_age(&self) {
        let age = self.oldest_pending_age_ms(now_millis()) / 1000;
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
        let admission = self
            .circuit
            .admission(self.settings.max_concurrency, self.sending);
        let tokens = self
            .bucket
            .as_mut()
            .map_or(usize::MAX, |b| b.available(now));
        let (mut room, not_before) = (admission.room.min(tokens), admission.not_before);
        let mut started = 0;
        let ready = |key: Option<(UnixMillis, DeliveryId)>| {
            key.filter(|(due, _)| (*due).max(not_before) <= now)
        };
        while room > 0 {
            let fresh = ready(self.queue.first_of(Class::Fresh));
            let retry = ready(self.queue.first_of(Class::Retry));
            let Some(key) = super::retry::pick(
                fresh,
                retry,
                self.sending_retries,
                self.settings.max_concurrency,
                admission.probe,
            ) else {
                break;
            };
            let class = if Some(key) == fresh {
                Class::Fresh
            } else {
                Class::Retry
            };
            match self.queue.start(key) {
                // An ordered delivery before its turn: set aside until the one before is final.
                Some((id, loaded)) if !self.take_turn(&loaded.0) => {
                    self.park(id, key.0, class, loaded)
                }
                // Past its deadline: expired, without an attempt, a token or a slot.
                Some((id, loaded)) if loaded.0.expired(now) => {
                    self.expire(ctx, id, loaded.0, class)
                }
                Some((id, loaded)) => {
                    if let Some(b) = self.bucket.as_mut() {
                        b.take(now);
                    }
                    let lag = (now - key.0.max(not_before)).max(0) as f64 / 1000.0;
                    self.metrics.delivery_lag.observe(lag);
                    if class == Class::Fresh {
                        let waited = (now - loaded.0.created_at).max(0) as f64 / 1000.0;
                        self.metrics.first_attempt_delay.observe(waited);
                    }
                    self.start_attempt(ctx, id, loaded, admission.probe, class);
                    room -= 1;
                    started += 1;
                }
                None => {
                    self.read_ahead(ctx, now);
                    break;
                }
            }
        }
        // Read the next ones while these are out, unless enough are read already.
        if room == 0
            && self.queue.waiting_len() > 0
            && self.queue.loaded_len() < self.read_ahead_limit()
        {
            self.read_ahead(ctx, now);
        }
        // Out of tokens with requests to spare: the bucket says when to look again.
        let next_token = self
            .bucket
            .as_ref()
            .filter(|_| room == 0 && admission.room > started)
            .map(TokenBucket::next_token_at);
        match self.queue.first() {
            Some((due, _)) if next_token.is_some() && due.max(not_before) <= now => {
                let at = next_token.unwrap_or(now);
                self.wake_at(ctx, at, now)
            }
            // No room: a finishing attempt pumps again.
            _ if room == 0 => self.cancel_timer(ctx),
            // Due but not read yet: the read-ahead pumps when it lands.
            Some((due, _)) if due.max(not_before) <= now => self.cancel_timer(ctx),
            Some((due, _)) => self.wake_at(ctx, due.max(not_before), now),
            None => self.cancel_timer(ctx),
        }
    }

    /// Whether `delivery` may go now: unordered ones always; an ordered one when its key's
    /// turn is its sequence number and no attempt of that key is out. Taking the turn marks the
    /// key busy until [`EndpointActor::turn_done`].
    fn take_turn(&mut self, delivery: &crate::model::Delivery) -> bool {
        let Some((key, seq)) = delivery.turn() else {
            return true;
        };
        self.turns.take(key, seq)
    }

    fn park(
        &mut self,
        id: DeliveryId,
        due: UnixMillis,
        class: Class,
        loaded: crate::storage::Loaded,
    ) {
        let Some((key, seq)) = loaded.0.turn() else {
            return;
        };
        let slot = (key.to_string(), seq);
        self.parked.insert(
            slot,
            Parked {
                id,
                due,
                class,
                loaded,
            },
        );
    }

    /// The attempt of `key`'s turn `seq` is settled: if the delivery is now final, the next
    /// sequence number's turn comes (and it waits again if it was set aside).
    fn turn_done(&mut self, key: &str, seq: u64, is_final: bool) {
        if let Some(next) = self.turns.done(key, seq, is_final) {
            if let Some(p) = self.parked.remove(&(key.to_string(), next)) {
                self.queue.unpark(p.id, p.due, p.class, p.loaded);
            }
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
                            // Final already (a write that failed half-way): if it held its
                            // key's turn, the next one's turn comes.
                            Some(l) if act.queue.is_waiting(id) => {
                                if let Some((key, seq)) = l.0.turn() {
                                    act.turn_done(key, seq, true);
                                }
                                act.drop_stray(ctx, id)
                            }
                            _ if act.queue.is_waiting(id) => act.drop_stray(ctx, id),
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

    /// A `due` entry with no pending delivery behind it (a write that failed half-way, or
    /// a delivery finished meanwhile): off the queue, and out of storage if it is stray.
    fn drop_stray(&mut self, ctx: &mut Context<Self>, id: DeliveryId) {
        let stored = self.queue.stored_due(id);
        self.queue.remove(id);
        let Some(due) = stored else { return };
        let endpoint = self.endpoint.id;
        let write = self
            .shared
            .store
            .ordered(move |o| o.drop_stray_due(endpoint, due, id));
        ctx.spawn(write.into_actor(self).map(move |dropped, act, _| match dropped {
            Ok(true) => {
                tracing::warn!(endpoint = %act.endpoint.id, delivery = %id, "removed a due entry with no pending delivery")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(endpoint = %act.endpoint.id, delivery = %id, error = %e, "cannot remove a stray due entry")
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
                        .filter(|((_, id), _)| !unsettled.contains_key(id))
                        .collect();
                    act.queue.page_read(entries, complete, act.handed_over);
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

    /// Makes sure the actor pumps again at `at` (or earlier). The wait is a duration on the
    /// monotonic clock, computed on hookd's clock, so a wall-clock step does not stretch it.
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

    /// Stores the stats as they are now (for changes that come without an attempt result to
    /// carry them).
    fn save_stats(&mut self, ctx: &mut Context<Self>) {
        if self.deleting {
            return;
        }
        self.stats_writes += 1;
        let reported = std::mem::take(&mut self.outbox);
        let write = self.shared.store.write_results(
            Vec::new(),
            Some(self.stats_snapshot()),
            reported.clone(),
        );
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            act.stats_writes -= 1;
            act.submit_reported(reported);
            if let Err(e) = written {
                tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot store endpoint stats");
            }
            if act.draining {
                act.pump(ctx);
            }
        }));
    }

    /// An operator event for a transition just decided, if this endpoint reports them; the
    /// next write of its stats or delivery stores it with the transition.
    fn report(&mut self, event: impl FnOnce(&str) -> crate::operator::OperatorEvent) {
        if !self.deleting && self.shared.reporter(&self.endpoint.spec.tenant).is_some() {
            self.outbox.push(event(&self.endpoint.spec.tenant));
        }
    }

    /// The events a write carried, once it is done. A failed write still hands them over:
    /// this process goes on as if the transition were stored, so its event is not withheld.
    fn submit_reported(&self, reported: Vec<crate::operator::OperatorEvent>) {
        if let Some(relay) = &self.shared.operator {
            relay.submit(reported);
        }
    }

    /// The stats with the circuit's stored part, for the results writer.
    fn stats_snapshot(&self) -> (crate::model::EndpointId, EndpointStats) {
        let mut stats = self.stats.clone();
        self.circuit.store_in(&mut stats);
        stats.rate_tokens = self.bucket.as_ref().map(TokenBucket::snapshot);
        (self.endpoint.id, stats)
    }

    /// Counts deliveries that reached a final status.
    fn note_final(&mut self, status: DeliveryStatus, count: u64) {
        match status {
            DeliveryStatus::Succeeded => self.stats.succeeded += count,
            DeliveryStatus::Failed => self.stats.failed += count,
            DeliveryStatus::Cancelled | DeliveryStatus::Expired => {}
            DeliveryStatus::Pending => return,
        }
        if let Some(outcome) = crate::metrics::DeliveryOutcome::of(status) {
            self.metrics.delivery(outcome).inc_by(count);
        }
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
}

impl Actor for EndpointActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
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

/// The circuit's wait before the next probe, for the log.
fn probe_in_ms(circuit: &CircuitState, now: UnixMillis) -> Option<i64> {
    circuit.next_probe_at.map(|t| t - now)
}
