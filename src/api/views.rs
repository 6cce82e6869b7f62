//! The response bodies of the API, as types: handlers build these, and the OpenAPI document
//! (`GET /v1/openapi.json`) is generated from the same types, so the two cannot drift apart.
//!
//! Invariant: nothing here holds a secret except [`SecretView::secret`] (also in
//! [`EndpointCreated`]), the two responses that show one once; write-only settings show as
//! `***`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::{Config, HumanDuration};
use crate::dispatch::retry::EndpointSettings;
use crate::model::{
    rfc3339, Attempt, Delivery, DeliveryStatus, Endpoint, EndpointStatus, Ordering, RateLimit,
    WriteOnly,
};

/// The error object every failure answers with.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case code, e.g. `invalid_field`, `not_found`, `endpoint_limit`.
    pub code: String,
    /// What is wrong, for a person; starts with the field's name when one is at fault.
    pub message: String,
}

/// An endpoint with its effective settings (its own, else `[delivery]`'s). Never a secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(example = "ep_01J9Z8Q4W6R2M5T7V9X1Y3Z5A7")]
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub max_concurrency: u32,
    pub signature_header: String,
    #[schema(value_type = String, example = "30s")]
    pub timeout: HumanDuration,
    #[schema(value_type = Vec<String>)]
    pub retry_schedule: Vec<HumanDuration>,
    /// Header names with their values masked as `***` (they are often credentials).
    pub headers: BTreeMap<String, String>,
    pub rate_limit: Option<RateLimit>,
    #[schema(value_type = Option<String>)]
    pub ttl: Option<HumanDuration>,
    pub ordering: Ordering,
    #[schema(value_type = Option<crate::rules::FilterSchema>)]
    pub filter: Option<Value>,
    pub signing: crate::model::Signing,
    /// With `signing: "ed25519"`: the current public key (`whpk_…`).
    pub public_key: Option<String>,
    /// The endpoint's CA and client certificate; `client_key` shows as `***`.
    pub tls: Option<TlsView>,
    /// Its egress proxy (else `delivery.proxy`'s, shown here).
    pub proxy: Option<String>,
    /// OAuth 2.0 client credentials; `client_secret` shows as `***`.
    #[schema(value_type = Option<Object>)]
    pub auth: Option<Value>,
    pub status: EndpointStatus,
    /// Why it is paused: `operator`, `gone` (the receiver answered 410) or
    /// `failing_too_long` (`delivery.pause_after`); null when active.
    pub paused_reason: Option<crate::model::PausedReason>,
    pub created_at: String,
    pub updated_at: String,
}

impl EndpointView {
    pub fn of(endpoint: &Endpoint, config: &Config) -> EndpointView {
        let s = EndpointSettings::resolve(&endpoint.spec, &config.delivery);
        EndpointView {
            id: endpoint.id.to_string(),
            tenant: endpoint.spec.tenant.clone(),
            url: endpoint.spec.url.clone(),
            event_types: endpoint.spec.event_types.clone(),
            description: endpoint.spec.description.clone(),
            max_concurrency: s.max_concurrency as u32,
            signature_header: s.signature_header.to_string(),
            timeout: HumanDuration(s.timeout),
            retry_schedule: s
                .schedule
                .delays()
                .iter()
                .map(|d| HumanDuration(*d))
                .collect(),
            headers: endpoint
                .spec
                .headers
                .iter()
                .flatten()
                .map(|(name, _)| (name.clone(), "***".to_string()))
                .collect(),
            rate_limit: endpoint.spec.rate_limit,
            ttl: endpoint.spec.ttl,
            ordering: endpoint.spec.ordering.unwrap_or_default(),
            filter: endpoint.spec.filter.clone(),
            signing: endpoint.spec.signing.unwrap_or_default(),
            public_key: endpoint.secrets.first().and_then(|s| s.secret.public_key()),
            tls: endpoint.spec.tls.as_ref().map(|t| TlsView {
                ca: t.ca.clone(),
                client_cert: t.client_cert.clone(),
                client_key: t.client_key.as_ref().map(|_| WriteOnly::MASK),
            }),
            proxy: endpoint
                .spec
                .proxy
                .clone()
                .or_else(|| config.delivery.proxy().map(str::to_string)),
            auth: endpoint.spec.auth.as_ref().map(auth_view),
            status: endpoint.status,
            paused_reason: endpoint.paused_reason_shown(),
            created_at: rfc3339(endpoint.created_at),
            updated_at: rfc3339(endpoint.updated_at),
        }
    }
}

/// `auth` as stored, its write-only values masked.
fn auth_view(auth: &crate::model::EndpointAuth) -> Value {
    let mut v = serde_json::to_value(auth).unwrap_or(Value::Null);
    if let Some(secret) = v.get_mut("client_secret") {
        *secret = Value::from(WriteOnly::MASK);
    }
    v
}

#[derive(Serialize, ToSchema)]
pub struct TlsView {
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    /// `***` when set.
    pub client_key: Option<&'static str>,
}

/// `POST /v1/endpoints`: the endpoint and, this once, its signing secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointCreated {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    #[serde(flatten)]
    pub key: SecretView,
}

/// `GET /v1/endpoints/{id}`: the endpoint with its live stats.
#[derive(Serialize, ToSchema)]
pub struct EndpointDetail {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    pub stats: EndpointStatsView,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointStatsView {
    pub pending: u64,
    pub in_flight: u64,
    /// Deliveries that ended succeeded / failed (one recovered and then succeeded counts in
    /// both).
    pub succeeded: u64,
    pub failed: u64,
    pub consecutive_failures: u32,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// `active`, `paused` or `failing`.
    pub state: String,
    pub failing_since: Option<String>,
    pub next_probe_at: Option<String>,
    /// The last failed attempt's error, unless one succeeded since (not kept across restarts).
    pub last_error: Option<String>,
    /// How long the earliest due delivery has been waiting since it became due.
    pub oldest_pending_age_seconds: u64,
    pub last_hour: LastHour,
}

/// Attempts over the last hour (counted since the process started, at most an hour back).
#[derive(Serialize, ToSchema)]
pub struct LastHour {
    pub attempts: u64,
    pub succeeded: u64,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    pub endpoints: Vec<EndpointView>,
}

/// The endpoint's new signing key, this once: the HMAC `secret`, or with `signing: "ed25519"`
/// the `public_key` receivers verify with (hookd keeps the private key).
#[derive(Serialize, ToSchema)]
pub struct SecretView {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whpk_MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=")]
    pub public_key: Option<String>,
}

impl SecretView {
    pub fn of(secret: &crate::model::Secret) -> SecretView {
        match secret.public_key() {
            Some(public_key) => SecretView {
                secret: None,
                public_key: Some(public_key),
            },
            None => SecretView {
                secret: Some(secret.expose().to_string()),
                public_key: None,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub delivery_id: String,
    pub event_id: String,
    pub success: bool,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub n: u32,
    pub at: String,
    pub status_code: Option<u16>,
    /// `success`, `http_4xx`, `http_5xx`, `timeout`, `connect_error`, `proxy_error`,
    /// `auth_error` or `other`, as in `hookd_attempts_total`.
    pub result: crate::model::AttemptResult,
    pub duration_ms: u64,
    /// `timeout`, `connect: …`, `status 500`…; null on success.
    pub error: Option<String>,
    /// The first 1 KiB of the response.
    pub response_body: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub tenant: String,
    pub status: DeliveryStatus,
    pub attempts: Vec<AttemptView>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub ordering_key: Option<String>,
    pub sequence: Option<u64>,
    /// A test send: final once sent, never retried.
    pub test: bool,
}

impl DeliveryView {
    pub fn of(delivery: &Delivery, attempts: &[Attempt]) -> DeliveryView {
        DeliveryView {
            id: delivery.id.to_string(),
            endpoint_id: delivery.endpoint_id.to_string(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            tenant: delivery.tenant.clone(),
            status: delivery.status,
            attempts: attempts
                .iter()
                .map(|a| AttemptView {
                    n: a.n,
                    at: rfc3339(a.at),
                    status_code: a.status_code,
                    result: a.result_shown(),
                    duration_ms: a.duration_ms,
                    error: a.error.clone(),
                    response_body: a.response_body.clone(),
                })
                .collect(),
            next_attempt_at: delivery.next_attempt_at.map(rfc3339),
            created_at: rfc3339(delivery.created_at),
            expires_at: delivery.expires_at.map(rfc3339),
            ordering_key: delivery.ordering.as_ref().map(|o| o.key.clone()),
            sequence: delivery.ordering.as_ref().map(|o| o.seq),
            test: delivery.test,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RetryAccepted {
    pub id: String,
    pub status: DeliveryStatus,
}

#[derive(Serialize, ToSchema)]
pub struct Requeued {
    pub requeued: u64,
}

/// One event's acknowledgement.
#[derive(Serialize, ToSchema)]
pub struct Ingested {
    pub id: String,
    /// Deliveries stored for it (one per subscribed endpoint).
    pub deliveries: u64,
    /// The id was stored before: nothing new is stored or sent.
    pub duplicate: bool,
}

/// One batch item: acknowledged, or refused with the error object.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    Ingested(Ingested),
    Error(ErrorBody),
}

#[derive(Serialize, ToSchema)]
pub struct BatchResults {
    pub results: Vec<BatchItem>,
}

#[derive(Serialize, ToSchema)]
pub struct EventDelivery {
    pub id: String,
    pub endpoint_id: String,
    /// Null when the delivery record was pruned.
    pub status: Option<DeliveryStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub received_at: String,
    pub deliveries: Vec<EventDelivery>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
    /// readyz only, when a source is configured: whether it is taking messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Sources>,
}

/// The configured sources besides the HTTP API.
#[derive(Serialize, ToSchema)]
pub struct Sources {
    pub nats: crate::source::SourceView,
}

/// `GET /v1/event-types`: empty when any type is accepted.
#[derive(Serialize, ToSchema)]
pub struct EventTypes {
    pub event_types: Vec<EventType>,
}

#[derive(Serialize, ToSchema)]
pub struct EventType {
    #[serde(rename = "type")]
    pub event_type: String,
    /// The JSON Schema its payloads must satisfy, if any.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
}
