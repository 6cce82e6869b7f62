//! [`Supervisor`]: rebuilds every endpoint actor from storage at start, then owns the endpoint
//! set. Endpoint changes are handled one at a time (atomic responses), so the per-tenant limit
//! and read-modify-write changes cannot race. It also runs the pruner, whose deletions are
//! ordered jobs: each checks, on the writer thread, that what it removes is final.
//!
//! Start-up, in order: read every endpoint, its stats and the first page of its queue; raise
//! hookd's clock to the newest stored event if the wall clock is behind it (and warn when it
//! is far ahead); start the actors; cancel deliveries of endpoints that no longer exist.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::endpoint::{Delete, DrainEndpoint, Reconfigure};
use super::queue::{PendingQueue, PAGE};
use super::{EndpointActor, EndpointChangeError, Router, Shared};
use crate::model::{
    now_millis, DeliveryId, Endpoint, EndpointId, EndpointSpec, EndpointStats, EndpointStatus,
    Secret, SigningSecret, UnixMillis,
};
use crate::operator::OperatorEvent;
use crate::storage::StorageError;

/// Events one prune job looks at; bounded so the results behind it never wait long.
const PRUNE_SCAN: usize = 2000;
/// The largest wall-clock step hookd rides out across a restart (API.md §9: up to a day);
/// beyond it, a gap to the newest stored event is only logged.
const CLOCK_STEP_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// How often a long recovery logs how far it got (API.md §10: at least every 2 s).
const RECOVERY_PROGRESS: Duration = Duration::from_secs(2);

pub struct Supervisor {
    shared: Arc<Shared>,
    router: Arc<Router>,
    /// One arbiter (thread) per core; endpoint actors are placed round-robin.
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    pub endpoints: usize,
    pub pending: usize,
    pub orphans_cancelled: usize,
    pub took: Duration,
}

/// Reads every endpoint and pending delivery, starts one actor per endpoint and the supervisor.
pub async fn start(
    shared: Arc<Shared>,
    router: Arc<Router>,
) -> Result<(Addr<Supervisor>, Recovered), StorageError> {
    // Per endpoint: its record, stats, pending count and first page of its queue. A large
    // backlog takes a while to count: a line every 2 s says how far it got.
    let started = std::time::Instant::now();
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = {
        let read = read.clone();
        actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(RECOVERY_PROGRESS);
            tick.tick().await;
            loop {
                tick.tick().await;
                tracing::info!(
                    elapsed_s = started.elapsed().as_secs(),
                    endpoints_read = read.load(std::sync::atomic::Ordering::Relaxed),
                    "recovery in progress: reading pending deliveries"
                );
            }
        })
    };
    let counted = read.clone();
    let loaded = shared
        .store
        .call(move |s| {
            let mut counts = s.due_summary(PAGE)?;
            let mut endpoints = Vec::new();
            for endpoint in s.list_endpoints()? {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let stats = s.get_stats(endpoint.id)?.unwrap_or_default();
                let (total, page) = counts.remove(&endpoint.id).unwrap_or_default();
                let keys = s.key_heads(endpoint.id)?;
                endpoints.push((endpoint, stats, PendingQueue::new(total, page), keys));
            }
            Ok((endpoints, counts, s.newest_event_time()?))
        })
        .await;
    progress.abort();
    let (endpoints, mut counts, newest) = loaded?;
    check_clock(newest);
    let total: usize = endpoints.iter().map(|(_, _, q, _)| q.total()).sum();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arbiters: Vec<ArbiterHandle> = (0..threads).map(|_| Arbiter::new().handle()).collect();
    let mut supervisor = Supervisor {
        shared: shared.clone(),
        router,
        arbiters,
        next_arbiter: 0,
    };
    let recovered_endpoints = endpoints.len();
    for (endpoint, stats, queue, keys) in endpoints {
        supervisor.spawn_actor(Arc::new(endpoint), stats, queue, keys);
    }
    // Due entries whose endpoint is gone: it was deleted before its actor finished cancelling.
    let orphaned: Vec<EndpointId> = counts.drain().map(|(id, _)| id).collect();
    let mut orphans_cancelled = 0;
    for endpoint in orphaned {
        loop {
            let none = std::collections::HashSet::new();
            let (n, more) = shared
                .store
                .ordered(move |o| o.cancel_pending_chunk(endpoint, &none, 4096))
                .await?;
            orphans_cancelled += n;
            if !more {
                break;
            }
        }
    }
    let router = supervisor.router.clone();
    let addr = supervisor.start();
    let _ = router.supervisor.set(addr.clone());
    Ok((
        addr,
        Recovered {
            endpoints: recovered_endpoints,
            pending: total,
            orphans_cancelled,
            took: started.elapsed(),
        },
    ))
}

/// hookd's clock does not start behind the newest stored record when the wall clock was
/// stepped back by up to a day (a step back across a restart would otherwise hold every stored
/// retry for the length of the step). A gap of more than a day is taken to be an earlier clock
/// that was wrong, not this one, and is only logged, so that a fixed clock is not overruled
/// forever. A clock far ahead of the newest record is logged too: hookd may simply have been
/// stopped that long, or the clock is wrong and the first prune would remove records early.
fn check_clock(newest: Option<UnixMillis>) {
    let Some(newest) = newest else { return };
    let behind = newest - now_millis();
    if behind > CLOCK_STEP_LIMIT.as_millis() as i64 {
        tracing::warn!(
            behind_s = behind / 1000,
            newest_event = %crate::model::rfc3339(newest),
            "the newest stored event is more than a day ahead of the wall clock; keeping the wall clock (stored retries due in that future wait for it)"
        );
    } else if crate::clock::raise_floor(newest) > 1000 {
        tracing::warn!(
            behind_ms = behind,
            "the wall clock is behind the newest stored event; hookd's clock starts from that event instead"
        );
    }
    let ahead = now_millis() - newest;
    if ahead > CLOCK_STEP_LIMIT.as_millis() as i64 {
        tracing::warn!(
            ahead_s = ahead / 1000,
            newest_event = %crate::model::rfc3339(newest),
            "the clock is far ahead of the newest stored event; if the clock is wrong, finished records may be pruned early"
        );
    }
}

impl Supervisor {
    fn spawn_actor(
        &mut self,
        endpoint: Arc<Endpoint>,
        stats: EndpointStats,
        queue: PendingQueue,
        keys: std::collections::HashMap<String, (u64, u64)>,
    ) {
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter += 1;
        let actor = EndpointActor::new(
            endpoint.clone(),
            self.shared.clone(),
            stats,
            queue,
            self.shared.store.base_seq(),
            keys,
        );
        let addr = EndpointActor::start_in_arbiter(arbiter, move |_| actor);
        self.router
            .insert(endpoint.id, Arc::new(endpoint.spec.clone()), addr);
    }

    /// Prunes what is finished and older than `storage.retention` on hookd's clock, so a wall
    /// clock stepped forward while hookd runs prunes nothing early.
    fn prune(&mut self, ctx: &mut Context<Self>) {
        let retention = self.shared.config.storage.retention;
        let cutoff = now_millis() - retention.as_millis() as i64;
        let store = self.shared.store.clone();
        ctx.spawn(
            async move {
                let mut total = 0;
                let mut from = None;
                loop {
                    match store
                        .ordered(move |o| o.prune(cutoff, from, PRUNE_SCAN))
                        .await
                    {
                        Ok((n, next)) => {
                            total += n;
                            match next {
                                Some(next) => from = Some(next),
                                None => break,
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "pruning failed");
                            break;
                        }
                    }
                }
                if total > 0 {
                    tracing::info!(events = total, "pruned events past retention");
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.prune(ctx);
        let every = self.shared.config.storage.prune_interval;
        ctx.run_interval(every, |act, ctx| act.prune(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// Creates an endpoint with a fresh secret; the reply carries the secret, once.
#[derive(Message)]
#[rtype(result = "Result<(Endpoint, Secret), EndpointChangeError>")]
pub struct CreateEndpoint(pub EndpointSpec);

impl Handler<CreateEndpoint> for Supervisor {
    type Result = AtomicResponse<Self, Result<(Endpoint, Secret), EndpointChangeError>>;

    fn handle(&mut self, msg: CreateEndpoint, _: &mut Context<Self>) -> Self::Result {
        let spec = msg.0;
        let max = self.shared.config.delivery.max_endpoints_per_tenant;
        if self.router.endpoint_count(&spec.tenant) >= max as usize {
            return AtomicResponse::new(Box::pin(fut::ready(Err(EndpointChangeError::Limit {
                tenant: spec.tenant,
                max,
            }))));
        }
        let now = now_millis();
        let secret = Secret::generate_for(spec.signing.unwrap_or_default());
        let endpoint = Endpoint {
            id: EndpointId::new(),
            spec,
            status: EndpointStatus::Active,
            paused_reason: None,
            created_at: now,
            updated_at: now,
            secrets: vec![SigningSecret {
                secret: secret.clone(),
                expires_at: None,
            }],
        };
        let store = self.shared.store.clone();
        let stored = endpoint.clone();
        let write = async move { store.call(move |s| s.put_endpoint(&stored)).await };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |written, act, _| {
                written?;
                tracing::info!(endpoint = %endpoint.id, tenant = %endpoint.spec.tenant, "endpoint created");
                act.spawn_actor(
                    Arc::new(endpoint.clone()),
                    EndpointStats::default(),
                    PendingQueue::default(),
                    Default::default(),
                );
                Ok((endpoint, secret))
            },
        )))
    }
}

/// Changes one endpoint's stored record with `change`, then hands the result to its actor.
pub type EndpointChange = Box<dyn FnOnce(&mut Endpoint) -> Result<(), EndpointChangeError> + Send>;

#[derive(Message)]
#[rtype(result = "Result<Endpoint, EndpointChangeError>")]
pub struct ChangeEndpoint {
    pub id: EndpointId,
    pub change: EndpointChange,
}

impl Handler<ChangeEndpoint> for Supervisor {
    type Result = AtomicResponse<Self, Result<Endpoint, EndpointChangeError>>;

    fn handle(&mut self, msg: ChangeEndpoint, _: &mut Context<Self>) -> Self::Result {
        let store = self.shared.store.clone();
        let id = msg.id;
        let shared = self.shared.clone();
        let write = async move {
            store
                .call(move |s| {
                    let Some(mut endpoint) = s.get_endpoint(id)? else {
                        return Ok(Err(EndpointChangeError::NotFound(id)));
                    };
                    let was = endpoint.status;
                    if let Err(e) = (msg.change)(&mut endpoint) {
                        return Ok(Err(e));
                    }
                    endpoint.updated_at = now_millis();
                    // A pause is reported in the write that stores it.
                    let reported: Vec<_> = match endpoint.paused_reason_shown() {
                        Some(reason) if was == EndpointStatus::Active => shared
                            .reporter(&endpoint.spec.tenant)
                            .map(|_| {
                                OperatorEvent::endpoint_paused(
                                    id,
                                    &endpoint.spec.tenant,
                                    reason,
                                    endpoint.updated_at,
                                )
                            })
                            .into_iter()
                            .collect(),
                        _ => Vec::new(),
                    };
                    s.put_endpoint_reporting(&endpoint, &reported)?;
                    if let Some(relay) = &shared.operator {
                        relay.submit(reported);
                    }
                    Ok(Ok(endpoint))
                })
                .await
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |written, act, _| {
                let endpoint = written??;
                let shared = Arc::new(endpoint.clone());
                if let Some(addr) = act.router.actor(id) {
                    act.router
                        .insert(id, Arc::new(endpoint.spec.clone()), addr.clone());
                    addr.do_send(Reconfigure(shared));
                }
                Ok(endpoint)
            },
        )))
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), EndpointChangeError>")]
pub struct DeleteEndpoint(pub EndpointId);

impl Handler<DeleteEndpoint> for Supervisor {
    type Result = AtomicResponse<Self, Result<(), EndpointChangeError>>;

    fn handle(&mut self, msg: DeleteEndpoint, _: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        let store = self.shared.store.clone();
        let write = async move {
            store
                .call(move |s| {
                    let Some(endpoint) = s.get_endpoint(id)? else {
                        return Ok(None);
                    };
                    s.delete_endpoint(id)?;
                    Ok(Some(endpoint))
                })
                .await
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(
            move |deleted, act, _| {
                let endpoint = deleted?.ok_or(EndpointChangeError::NotFound(id))?;
                if let Some(addr) = act.router.remove(id, &endpoint.spec.tenant) {
                    addr.do_send(Delete);
                }
                tracing::info!(endpoint = %id, "endpoint deleted");
                Ok(())
            },
        )))
    }
}

/// Deliveries stored for an endpoint deleted while they were being ingested: (id, due).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelOrphans(pub Vec<(DeliveryId, Option<UnixMillis>)>);

impl Handler<CancelOrphans> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: CancelOrphans, ctx: &mut Context<Self>) {
        let write = self
            .shared
            .store
            .ordered(move |o| o.cancel_deliveries(&msg.0));
        ctx.spawn(
            async move {
                if let Err(e) = write.await {
                    tracing::error!(error = %e, "cannot cancel deliveries of a deleted endpoint");
                }
            }
            .into_actor(self),
        );
    }
}

/// Shutdown: every endpoint stops starting attempts; resolves once those in flight have
/// finished and their results are stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let drains: Vec<_> = self
            .router
            .actors()
            .into_iter()
            .map(|a| a.send(DrainEndpoint))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(drains).await;
        })
    }
}

/// The watchdog's question: are the supervisor and every arbiter thread still turning? Answers
/// once each arbiter has run a task sent to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let answers: Vec<_> = self
            .arbiters
            .iter()
            .map(|arbiter| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                arbiter.spawn(async move {
                    let _ = tx.send(());
                });
                rx
            })
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(answers).await;
        })
    }
}
