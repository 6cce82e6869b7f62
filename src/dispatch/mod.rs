//! Who sends what, when. A [`Supervisor`] actor owns the set of endpoints: it creates, changes
//! and deletes them (one change at a time) and runs one [`EndpointActor`] per endpoint. Each
//! endpoint actor owns that endpoint's pending deliveries: its queue (a window in memory, the
//! rest paged in from storage, see [`queue`]), retry timers, in-flight count
//! (≤ `max_concurrency`), paused flag and circuit state ([`circuit`]); it alone decides what
//! happens to those deliveries, and its changes go through the store's one ordered writer. The
//! [`Router`] is the read side shared with the API and the storage writer: which endpoints an
//! event goes to and where each actor's mailbox is, so ingest never waits on the supervisor,
//! and the commit's hand-over ([`Router::hand_over`]) reaches the actors without the request.
//!
//! Endpoint actors are spread over one arbiter (thread) per core, so a busy endpoint cannot hold
//! up the others; their storage reads run on the blocking pool, batched, and their attempt
//! results go to the store's single results writer.

pub mod circuit;
mod endpoint;
pub mod ordering;
pub mod queue;
pub mod rate;
pub mod recent;
pub mod retry;
mod supervisor;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use actix::Addr;
use parking_lot::RwLock;

pub use endpoint::{
    EndpointActor, Enqueue, GetStats, Recover, RetryDelivery, RetryOutcome, SendTest,
    StatsSnapshot, TestOutcome,
};
pub use supervisor::{
    start, CancelOrphans, ChangeEndpoint, CreateEndpoint, DeleteEndpoint, Drain, EndpointChange,
    Ping, Recovered, Supervisor,
};

use crate::config::Config;
use crate::delivery::Sender;
use crate::model::{
    Delivery, DeliveryId, DeliveryRef, DeliveryStatus, EndpointId, EndpointSpec, Event, EventKey,
    Sequenced, UnixMillis,
};
use crate::storage::{Loaded, NewEvent, StorageError, Store};

/// What every actor needs; shared, never mutated.
pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    pub sender: Sender,
    /// Attempt and state lines for `GET /v1/stream`.
    pub feed: Arc<crate::stream::Feed>,
    /// For an actor's own changes to its endpoint record (pausing itself), which go through
    /// the supervisor like every endpoint change.
    pub router: Arc<Router>,
    /// Where transitions' operator events go once written; none when `[operator] tenant` is
    /// empty.
    pub operator: Option<crate::operator::Relay>,
}

impl Shared {
    /// The relay, if endpoints of `tenant` produce operator events.
    pub fn reporter(&self, tenant: &str) -> Option<&crate::operator::Relay> {
        self.operator.as_ref().filter(|r| r.tenant() != tenant)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointChangeError {
    #[error("no endpoint {0}")]
    NotFound(EndpointId),
    #[error("tenant {tenant} already has {max} endpoints (delivery.max_endpoints_per_tenant)")]
    Limit { tenant: String, max: u32 },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

struct Route {
    id: EndpointId,
    spec: Arc<EndpointSpec>,
    /// The spec's filter, parsed once here rather than at every fan-out.
    filter: Option<crate::filter::Filter>,
}

/// An event's payload as endpoint filters read it. Most tenants have no filter, so an
/// ingested payload stays text, parsed into a tree on the first filter that asks (filters
/// compare integers exactly, so they read the text as sent, not its canonical form).
pub enum Payload<'a> {
    Tree(&'a serde_json::Map<String, serde_json::Value>),
    Text(
        &'a str,
        std::cell::OnceCell<Option<serde_json::Map<String, serde_json::Value>>>,
    ),
}

impl<'a> Payload<'a> {
    /// A payload's JSON text, already checked to be an object.
    pub fn text(text: &'a str) -> Self {
        Payload::Text(text, std::cell::OnceCell::new())
    }

    /// `None` only for text that is not a JSON object, which intake never hands over.
    fn tree(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        match self {
            Payload::Tree(m) => Some(m),
            Payload::Text(text, tree) => tree
                .get_or_init(|| serde_json::from_str(text).ok())
                .as_ref(),
        }
    }
}

/// A validated event on its way to storage, before routing gives it its deliveries.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub id: String,
    pub tenant: String,
    pub event_type: String,
    pub expires_at: Option<UnixMillis>,
    pub ordering_key: Option<String>,
}

/// One endpoint an event goes to, with the settings its delivery is created under.
#[derive(Debug, Clone, Copy)]
pub struct Routed {
    pub id: EndpointId,
    pub ttl: Option<std::time::Duration>,
    /// `ordering: "key"`.
    pub ordered: bool,
}

#[derive(Default)]
struct RouterInner {
    actors: HashMap<EndpointId, Addr<EndpointActor>>,
    by_tenant: HashMap<String, Vec<Route>>,
}

/// Endpoint id → actor, and tenant → subscriptions. Written only by the supervisor.
#[derive(Default)]
pub struct Router {
    inner: RwLock<RouterInner>,
    /// Set once recovery has started the supervisor (before ingest is open).
    supervisor: OnceLock<Addr<Supervisor>>,
}

impl Router {
    /// The supervisor, once recovery has started it.
    pub fn supervisor(&self) -> Option<Addr<Supervisor>> {
        self.supervisor.get().cloned()
    }

    /// The storage writer's hand-over of one commit (`seq`): each endpoint's new
    /// deliveries to its actor, in commit order. Deliveries of an endpoint deleted since they
    /// were routed are cancelled.
    pub fn hand_over(&self, seq: u64, events: Vec<NewEvent>) {
        let mut by_endpoint: HashMap<EndpointId, Vec<Loaded>> = HashMap::new();
        for new in events {
            let event = Arc::new(new.event);
            for d in new.deliveries {
                by_endpoint
                    .entry(d.endpoint_id)
                    .or_default()
                    .push((d, event.clone()));
            }
        }
        for (endpoint, deliveries) in by_endpoint {
            match self.actor(endpoint) {
                Some(addr) => addr.do_send(Enqueue { seq, deliveries }),
                None => match self.supervisor.get() {
                    Some(sup) => sup.do_send(CancelOrphans(
                        deliveries
                            .iter()
                            .map(|(d, _)| (d.id, Some(Enqueue::due(d))))
                            .collect(),
                    )),
                    // Cannot happen once ingest is open; the start-up sweep would cancel them.
                    None => tracing::error!(
                        endpoint = %endpoint, deliveries = deliveries.len(),
                        "deliveries for an unknown endpoint before recovery finished"
                    ),
                },
            }
        }
    }

    /// The endpoints of `tenant` subscribed to `event_type`, with what their deliveries need.
    /// The endpoints an event of `tenant` and `event_type` with `payload` goes to: subscribed
    /// to the type, and whose filter (if any) the payload matches.
    pub fn route(&self, tenant: &str, event_type: &str, payload: &Payload<'_>) -> Vec<Routed> {
        let inner = self.inner.read();
        inner
            .by_tenant
            .get(tenant)
            .map(|routes| {
                routes
                    .iter()
                    .filter(|r| r.spec.subscribes_to(event_type))
                    .filter(|r| {
                        r.filter
                            .as_ref()
                            .is_none_or(|f| payload.tree().is_some_and(|m| f.matches(m)))
                    })
                    .map(|r| Routed {
                        id: r.id,
                        ttl: r.spec.ttl.map(|t| t.0),
                        ordered: r.spec.ordering == Some(crate::model::Ordering::Key),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `incoming` with one pending delivery, due `now`, per endpoint [`Router::route`]
    /// gives it. `body` is `payload` as stored and sent (canonical JSON); it fails only if it
    /// is not JSON.
    pub fn fan_out(
        &self,
        incoming: Incoming,
        payload: &Payload<'_>,
        body: String,
        now: UnixMillis,
    ) -> Result<NewEvent, serde_json::Error> {
        let payload_raw = serde_json::value::RawValue::from_string(body)?;
        let Incoming {
            id,
            tenant,
            event_type,
            expires_at,
            ordering_key,
        } = incoming;
        let key = EventKey::new();
        let deliveries: Vec<Delivery> =
            self.route(&tenant, &event_type, payload)
                .into_iter()
                .map(|route| Delivery {
                    id: DeliveryId::new(),
                    endpoint_id: route.id,
                    event_key: key,
                    event_id: id.clone(),
                    event_type: event_type.clone(),
                    tenant: tenant.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    retries_used: 0,
                    next_attempt_at: Some(now),
                    created_at: now,
                    updated_at: now,
                    // The earlier of the event's own deadline and the endpoint's ttl.
                    expires_at: route
                        .ttl
                        .map(|t| now.saturating_add(t.as_millis().min(i64::MAX as u128) as i64))
                        .into_iter()
                        .chain(expires_at)
                        .min(),
                    // Its sequence number is given when the commit thread stores it.
                    ordering: ordering_key.as_ref().filter(|_| route.ordered).map(|key| {
                        Sequenced {
                            key: key.clone(),
                            seq: 0,
                            released: false,
                        }
                    }),
                    test: false,
                    attempt_log: Vec::new(),
                })
                .collect();
        let event = Event {
            key,
            id,
            tenant,
            event_type,
            received_at: now,
            deliveries: deliveries
                .iter()
                .map(|d| DeliveryRef {
                    id: d.id,
                    endpoint_id: d.endpoint_id,
                })
                .collect(),
            payload: payload_raw,
        };
        Ok(NewEvent { event, deliveries })
    }

    pub fn actors(&self) -> Vec<Addr<EndpointActor>> {
        self.inner.read().actors.values().cloned().collect()
    }

    pub fn actor(&self, id: EndpointId) -> Option<Addr<EndpointActor>> {
        self.inner.read().actors.get(&id).cloned()
    }

    pub fn endpoint_count(&self, tenant: &str) -> usize {
        self.inner
            .read()
            .by_tenant
            .get(tenant)
            .map_or(0, |r| r.len())
    }

    fn insert(&self, id: EndpointId, spec: Arc<EndpointSpec>, addr: Addr<EndpointActor>) {
        // Stored filters were validated when set; one that no longer parses (a stricter
        // hookd) matches nothing rather than everything, and says so.
        let filter = spec.filter.as_ref().map(|f| {
            crate::filter::Filter::parse(f).unwrap_or_else(|e| {
                tracing::warn!(endpoint = %id, path = %e.path, error = %e.message,
                    "stored filter does not parse; the endpoint receives nothing until it is fixed");
                crate::filter::Filter::nothing()
            })
        });
        let mut inner = self.inner.write();
        inner.actors.insert(id, addr);
        let routes = inner.by_tenant.entry(spec.tenant.clone()).or_default();
        routes.retain(|r| r.id != id);
        routes.push(Route { id, spec, filter });
    }

    fn remove(&self, id: EndpointId, tenant: &str) -> Option<Addr<EndpointActor>> {
        let mut inner = self.inner.write();
        if let Some(routes) = inner.by_tenant.get_mut(tenant) {
            routes.retain(|r| r.id != id);
            if routes.is_empty() {
                inner.by_tenant.remove(tenant);
            }
        }
        inner.actors.remove(&id)
    }
}
