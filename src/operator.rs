//! hookd's own events (API.md §12): an endpoint starts failing, recovers or is paused; a
//! delivery fails for good or expires. They are ingested into `[operator] tenant` through the
//! same durable pipeline as every event, so operators subscribe endpoints (a chat or paging
//! webhook) to them like to any other type.
//!
//! Invariants:
//! - an operator event is written in the same `WriteBatch` as the transition it reports (the
//!   endpoint stats that hold the circuit, the delivery's final status, the endpoint record's
//!   pause), as an `outbox` record; a crash either keeps both or neither, and a transition lost
//!   with its write happens again when its attempt is made again;
//! - the [`Relay`] ingests outbox records through [`crate::storage::Store::ingest`] (fsync'd,
//!   handed over to the operator endpoints' actors like any commit) and only then deletes them;
//!   at start it replays whatever the outbox still holds;
//! - ids are a hash of the type, the subject and the instant that identifies the transition
//!   (`op_…`), so a replay is a duplicate by id and is stored once;
//! - endpoints of the operator tenant produce no operator events, so a failing pager cannot
//!   page about itself in a loop.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::dispatch::{Incoming, Router};
use crate::model::{now_millis, rfc3339, Delivery, EndpointId, PausedReason, UnixMillis};
use crate::storage::{IngestOutcome, Store};

/// How long the relay waits before trying again when storage refuses its events.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorEventType {
    #[serde(rename = "endpoint.failing")]
    EndpointFailing,
    #[serde(rename = "endpoint.recovered")]
    EndpointRecovered,
    #[serde(rename = "endpoint.paused")]
    EndpointPaused,
    #[serde(rename = "delivery.failed")]
    DeliveryFailed,
    #[serde(rename = "delivery.expired")]
    DeliveryExpired,
}

impl OperatorEventType {
    pub const ALL: [OperatorEventType; 5] = [
        OperatorEventType::EndpointFailing,
        OperatorEventType::EndpointRecovered,
        OperatorEventType::EndpointPaused,
        OperatorEventType::DeliveryFailed,
        OperatorEventType::DeliveryExpired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OperatorEventType::EndpointFailing => "endpoint.failing",
            OperatorEventType::EndpointRecovered => "endpoint.recovered",
            OperatorEventType::EndpointPaused => "endpoint.paused",
            OperatorEventType::DeliveryFailed => "delivery.failed",
            OperatorEventType::DeliveryExpired => "delivery.expired",
        }
    }
}

/// One operator event as the outbox stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: OperatorEventType,
    pub payload: Map<String, Value>,
}

/// `op_` and 128 bits of SHA-256 over what identifies one transition: the same transition
/// always has the same id, two different ones never share it.
fn op_id(event_type: OperatorEventType, subject: &str, instant: u64) -> String {
    let mut h = Sha256::new();
    h.update(event_type.name().as_bytes());
    h.update([0]);
    h.update(subject.as_bytes());
    h.update([0]);
    h.update(instant.to_be_bytes());
    format!("op_{}", hex::encode(&h.finalize()[..16]))
}

fn object(fields: Vec<(&str, Value)>) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl OperatorEvent {
    /// An event about `endpoint` of `tenant`: those two fields, then `rest`.
    fn about_endpoint(
        t: OperatorEventType,
        endpoint: EndpointId,
        tenant: &str,
        instant: UnixMillis,
        rest: Vec<(&str, Value)>,
    ) -> Self {
        let id = endpoint.to_string();
        let mut fields = vec![
            ("endpoint_id", Value::from(id.as_str())),
            ("tenant", tenant.into()),
        ];
        fields.extend(rest);
        OperatorEvent {
            id: op_id(t, &id, instant as u64),
            event_type: t,
            payload: object(fields),
        }
    }

    /// An event about `delivery`, identified by its attempt count: its ids and tenant, then
    /// `rest`.
    fn about_delivery(t: OperatorEventType, delivery: &Delivery, rest: Vec<(&str, Value)>) -> Self {
        let id = delivery.id.to_string();
        let mut fields = vec![
            ("delivery_id", Value::from(id.as_str())),
            ("event_id", delivery.event_id.clone().into()),
            ("endpoint_id", delivery.endpoint_id.to_string().into()),
            ("tenant", delivery.tenant.clone().into()),
        ];
        fields.extend(rest);
        OperatorEvent {
            id: op_id(t, &id, u64::from(delivery.attempts)),
            event_type: t,
            payload: object(fields),
        }
    }

    /// The circuit opened at `since`.
    pub fn endpoint_failing(
        endpoint: EndpointId,
        tenant: &str,
        since: UnixMillis,
        consecutive_failures: u32,
        last_error: &str,
    ) -> Self {
        Self::about_endpoint(
            OperatorEventType::EndpointFailing,
            endpoint,
            tenant,
            since,
            vec![
                ("since", rfc3339(since).into()),
                ("consecutive_failures", consecutive_failures.into()),
                ("last_error", last_error.into()),
            ],
        )
    }

    /// The circuit that opened at `failing_since` closed at `recovered_at`.
    pub fn endpoint_recovered(
        endpoint: EndpointId,
        tenant: &str,
        failing_since: UnixMillis,
        recovered_at: UnixMillis,
    ) -> Self {
        Self::about_endpoint(
            OperatorEventType::EndpointRecovered,
            endpoint,
            tenant,
            failing_since,
            vec![
                ("failing_since", rfc3339(failing_since).into()),
                ("recovered_at", rfc3339(recovered_at).into()),
            ],
        )
    }

    /// Paused for `reason` by the endpoint record written at `at`.
    pub fn endpoint_paused(
        endpoint: EndpointId,
        tenant: &str,
        reason: PausedReason,
        at: UnixMillis,
    ) -> Self {
        Self::about_endpoint(
            OperatorEventType::EndpointPaused,
            endpoint,
            tenant,
            at,
            vec![("reason", reason.label().into())],
        )
    }

    /// `delivery` failed for good after its `attempts`-th attempt; a delivery recovered and
    /// failed again has more attempts, so it reports again.
    pub fn delivery_failed(delivery: &Delivery, last_error: &str) -> Self {
        Self::about_delivery(
            OperatorEventType::DeliveryFailed,
            delivery,
            vec![
                ("attempts", delivery.attempts.into()),
                ("last_error", last_error.into()),
            ],
        )
    }

    /// `delivery` passed its deadline (after `attempts` attempts).
    pub fn delivery_expired(delivery: &Delivery) -> Self {
        Self::about_delivery(OperatorEventType::DeliveryExpired, delivery, Vec::new())
    }
}

/// Takes operator events whose outbox records are written and ingests them into the operator
/// tenant. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    tenant: Arc<str>,
    tx: mpsc::UnboundedSender<Vec<OperatorEvent>>,
}

/// Lets the relay start: once the router knows every endpoint (so that an event is not
/// routed before its operator endpoints are), it replays the outbox, then takes new events.
pub struct RelayOpener(oneshot::Sender<()>);

impl RelayOpener {
    pub fn open(self) {
        let _ = self.0.send(());
    }
}

impl Relay {
    /// Spawns the relay on the current runtime; it waits for [`RelayOpener::open`].
    pub fn start(store: Store, router: Arc<Router>, tenant: &str) -> (Relay, RelayOpener) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (open_tx, open_rx) = oneshot::channel();
        let tenant: Arc<str> = tenant.into();
        actix_rt::spawn(run(store, router, tenant.clone(), open_rx, rx));
        (Relay { tenant, tx }, RelayOpener(open_tx))
    }

    /// The operator tenant: its endpoints produce no operator events.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Events whose outbox records were just written (or whose write failed: then this
    /// process still delivers them, and the transition is made again after a crash).
    pub fn submit(&self, events: Vec<OperatorEvent>) {
        if !events.is_empty() {
            // Closed only at exit; the outbox keeps them for the next start.
            let _ = self.tx.send(events);
        }
    }
}

async fn run(
    store: Store,
    router: Arc<Router>,
    tenant: Arc<str>,
    open: oneshot::Receiver<()>,
    mut rx: mpsc::UnboundedReceiver<Vec<OperatorEvent>>,
) {
    if open.await.is_err() {
        return;
    }
    let left = loop {
        match store.call(|s| s.outbox()).await {
            Ok(left) => break left,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the operator outbox; trying again");
                actix_rt::time::sleep(RETRY_AFTER).await;
            }
        }
    };
    if !left.is_empty() {
        tracing::info!(
            events = left.len(),
            "operator events left from before the restart"
        );
        relay(&store, &router, &tenant, left).await;
    }
    while let Some(mut events) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            events.extend(more);
        }
        relay(&store, &router, &tenant, events).await;
    }
}

/// Ingests `events` (trying again for as long as storage refuses them), then removes their
/// outbox records.
async fn relay(store: &Store, router: &Router, tenant: &str, events: Vec<OperatorEvent>) {
    #[cfg(feature = "failpoints")]
    if let Some(delay) = crate::failpoints::relay_delay() {
        actix_rt::time::sleep(delay).await;
    }
    let mut warned = false;
    loop {
        let now = now_millis();
        let news = events
            .iter()
            .map(|e| {
                let body = crate::canonical::object_to_string(&e.payload);
                let incoming = Incoming {
                    id: e.id.clone(),
                    tenant: tenant.to_string(),
                    event_type: e.event_type.name().to_string(),
                    expires_at: None,
                    ordering_key: None,
                };
                router.fan_out(
                    incoming,
                    &crate::dispatch::Payload::Tree(&e.payload),
                    body,
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>();
        let news = match news {
            Ok(news) => news,
            Err(e) => {
                // Cannot happen for payloads built here; said rather than retried forever.
                tracing::error!(error = %e, "operator event payload is not JSON; dropped");
                return;
            }
        };
        match store.ingest(news).await {
            Ok(outcomes) => {
                for (e, outcome) in events.iter().zip(outcomes) {
                    match outcome {
                        IngestOutcome::Stored { deliveries } => tracing::info!(
                            id = %e.id, r#type = e.event_type.name(), deliveries,
                            "operator event"
                        ),
                        IngestOutcome::Duplicate { .. } => tracing::debug!(
                            id = %e.id, r#type = e.event_type.name(),
                            "operator event stored before"
                        ),
                    }
                }
                break;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, events = events.len(),
                        "cannot store operator events yet; trying again");
                    warned = true;
                }
                actix_rt::time::sleep(RETRY_AFTER).await;
            }
        }
    }
    let ids: Vec<String> = events.into_iter().map(|e| e.id).collect();
    if let Err(e) = store.call(move |s| s.delete_outbox(&ids)).await {
        // Replayed at the next start, and found to be duplicates.
        tracing::warn!(error = %e, "cannot clear the operator outbox");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_one_transition() {
        let ep = EndpointId::new();
        let a = OperatorEvent::endpoint_failing(ep, "t", 1_000, 5, "http 500");
        let again = OperatorEvent::endpoint_failing(ep, "t", 1_000, 6, "timeout");
        let later = OperatorEvent::endpoint_failing(ep, "t", 2_000, 5, "http 500");
        let recovered = OperatorEvent::endpoint_recovered(ep, "t", 1_000, 3_000);
        assert_eq!(a.id, again.id, "same transition, same id");
        assert_ne!(a.id, later.id);
        assert_ne!(a.id, recovered.id, "the type is part of the id");
        assert!(a.id.starts_with("op_") && a.id.len() == 35);
        crate::model::check_identifier(&a.id).expect("a valid event id");
    }

    #[test]
    fn payloads_have_the_fields_of_the_contract() {
        let ep = EndpointId::new();
        let keys = |e: &OperatorEvent| e.payload.keys().cloned().collect::<Vec<_>>();
        let failing = OperatorEvent::endpoint_failing(ep, "t", 0, 5, "x");
        assert_eq!(
            keys(&failing),
            [
                "endpoint_id",
                "tenant",
                "since",
                "consecutive_failures",
                "last_error"
            ]
        );
        assert_eq!(failing.payload["since"], "1970-01-01T00:00:00.000Z");
        let paused = OperatorEvent::endpoint_paused(ep, "t", PausedReason::Gone, 5);
        assert_eq!(paused.payload["reason"], "gone");
        assert_eq!(
            serde_json::to_value(OperatorEventType::DeliveryExpired).ok(),
            Some(Value::from("delivery.expired"))
        );
    }
}
