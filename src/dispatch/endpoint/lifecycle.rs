//! An endpoint actor's life: new deliveries from ingest, changed settings, pause and resume,
//! deletion, and shutdown.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;

use super::EndpointActor;
use crate::dispatch::rate::TokenBucket;
use crate::dispatch::retry::EndpointSettings;
use crate::model::{now_millis, Delivery, DeliveryId, DeliveryStatus, Endpoint, EndpointStatus};
use crate::storage::Loaded;

/// Most deliveries one cancellation job handles, so other endpoints' results never wait long.
const CANCEL_CHUNK: usize = 4096;

/// New deliveries for this endpoint, just stored by ingest commit `seq`, with their events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub seq: u64,
    pub deliveries: Vec<Loaded>,
}

impl Enqueue {
    /// Where a new delivery's `due` entry is stored.
    pub fn due(delivery: &Delivery) -> crate::model::UnixMillis {
        delivery.next_attempt_at.unwrap_or(delivery.created_at)
    }
}

impl Handler<Enqueue> for EndpointActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.handed_over = self.handed_over.max(msg.seq);
        if self.deleting {
            // Routed here just before the delete: cancel them like the rest.
            let entries: Vec<_> = msg
                .deliveries
                .iter()
                .map(|(d, _)| (d.id, Some(Enqueue::due(d))))
                .collect();
            self.cancelling = true;
            let write = self
                .shared
                .store
                .ordered(move |o| o.cancel_deliveries(&entries));
            ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
                act.cancelling = false;
                match written {
                    Ok(n) => act.note_final(DeliveryStatus::Cancelled, n as u64),
                    Err(e) => {
                        tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot cancel deliveries")
                    }
                }
                act.after_change(ctx);
            }));
            return;
        }
        for loaded in msg.deliveries {
            let id = loaded.0.id;
            if let Some((key, seq)) = loaded.0.turn() {
                self.turns.learn(key, seq);
            }
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
        let now = now_millis();
        self.bucket = match (self.bucket.take(), msg.0.spec.rate_limit) {
            (Some(mut b), Some(limit)) => {
                b.relimit(limit, now);
                Some(b)
            }
            (None, Some(limit)) => Some(TokenBucket::full(limit, now)),
            (_, None) => None,
        };
        self.settings = EndpointSettings::resolve(&msg.0.spec, &self.shared.config.delivery);
        // A changed `tls` or `auth` is used from the next attempt on; attempts under way
        // finish on the connection they have.
        let spec = (&msg.0.spec, &self.endpoint.spec);
        if spec.0.tls != spec.1.tls || spec.0.auth != spec.1.auth || spec.0.proxy != spec.1.proxy {
            self.transport = super::Transport::of(&self.shared, &msg.0);
        }
        // The stored record now says what this actor decided (or an operator overruled it).
        self.pausing = None;
        self.endpoint = msg.0;
        self.publish_state();
        if resumed {
            let moves = self.queue.make_all_due(now);
            tracing::info!(endpoint = %self.endpoint.id, backlog = self.queue.total(), "resumed");
            self.store_moves(ctx, moves);
        }
        self.cancel_timer(ctx);
        self.pump(ctx);
    }
}

impl EndpointActor {
    /// Stores the new due times of deliveries brought forward in memory, so that a restart
    /// keeps them.
    pub(super) fn store_moves(
        &mut self,
        ctx: &mut Context<Self>,
        moves: Vec<(DeliveryId, i64, i64)>,
    ) {
        if moves.is_empty() {
            return;
        }
        let write = self.shared.store.ordered(move |o| o.reschedule(&moves));
        ctx.spawn(write.into_actor(self).map(|written, act, _| {
            if let Err(e) = written {
                tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot store brought-forward due times; a restart keeps the old ones");
            }
        }));
    }

    /// Cancels the pending deliveries not in flight, a chunk per job (the endpoint is being
    /// deleted); those in flight are cancelled when their results come back.
    fn cancel_rest(&mut self, ctx: &mut Context<Self>) {
        self.cancelling = true;
        let in_flight: HashSet<DeliveryId> = self.unsettled.keys().copied().collect();
        self.queue.clear_except(|id| in_flight.contains(&id));
        self.parked.clear();
        self.turns.clear();
        let endpoint = self.endpoint.id;
        let write = self
            .shared
            .store
            .ordered(move |o| o.cancel_pending_chunk(endpoint, &in_flight, CANCEL_CHUNK));
        ctx.spawn(write.into_actor(self).map(|written, act, ctx| {
            match written {
                Ok((cancelled, more)) => {
                    act.note_final(DeliveryStatus::Cancelled, cancelled as u64);
                    if more {
                        act.cancel_rest(ctx);
                        return;
                    }
                    tracing::info!(endpoint = %act.endpoint.id, "cancelled pending deliveries");
                }
                // Left pending in storage: recovery cancels deliveries of deleted endpoints.
                Err(e) => {
                    tracing::error!(endpoint = %act.endpoint.id, error = %e, "cannot cancel deliveries")
                }
            }
            act.cancelling = false;
            act.after_change(ctx);
        }));
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
        let (endpoint, tenant) = (self.endpoint.id, self.endpoint.spec.tenant.clone());
        self.shared.feed.publish(|| {
            crate::stream::Line::Endpoint(crate::stream::EndpointLine {
                endpoint_id: endpoint.to_string(),
                tenant,
                state: "deleted",
                reason: Some("operator".into()),
            })
        });
        self.cancel_timer(ctx);
        self.cancel_rest(ctx);
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
