//! `POST /v1/events`, `POST /v1/events/batch`, `GET /v1/events/{id}`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::views::{
    BatchItem, BatchResults, ErrorBody, EventDelivery, EventType, EventTypes, EventView, Ingested,
};

use super::auth::Scope;
use super::{parse_json, parse_query, read_json_body, ApiError, AppState};
use crate::intake::EventIn;
use crate::metrics::METRICS;
use crate::model::{now_millis, rfc3339, DeliveryId};
use crate::storage::{IngestOutcome, NewEvent};

/// Most events in one batch request.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Room in a single-event request body for everything around the payload.
const ENVELOPE_BYTES: usize = 16 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    /// At most 1000 events (more: 413). Each is an `EventIn`, validated on its own: one that
    /// is not answers with the error object in its place in `results`.
    #[schema(value_type = Vec<Value>)]
    events: Vec<Box<RawValue>>,
}

fn ingested(id: String, outcome: IngestOutcome) -> Ingested {
    let (deliveries, duplicate) = match outcome {
        IngestOutcome::Stored { deliveries } => (deliveries, false),
        IngestOutcome::Duplicate { deliveries } => (deliveries, true),
    };
    Ingested {
        id,
        deliveries: deliveries as u64,
        duplicate,
    }
}

/// Counts a refused event (or `n` of them) in `hookd_ingest_rejected_total`; a request
/// without a good token is not an event.
fn count_rejection(e: &ApiError, n: u64) {
    use crate::metrics::IngestRejection as R;
    let reason = match (e.status.as_u16(), e.code) {
        (_, "disk_full") => R::DiskFull,
        (503, "not_ready" | "shutting_down") => R::NotReady,
        (503, _) => R::StorageError,
        (413, _) => R::TooLarge,
        (401 | 403, _) => return,
        (400..=499, _) => R::Invalid,
        _ => R::StorageError,
    };
    METRICS.ingest_rejected(reason, n);
}

/// Stores one event and a delivery per subscribed endpoint; answers once that is durable.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    request_body = EventIn,
    responses(
        (status = 202, description = "Stored", body = Ingested),
        (status = 200, description = "The id was stored before: nothing new stored or sent", body = Ingested),
        (status = "default", body = ErrorBody)))]
pub async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    counted(ingest_one(req, payload, state).await)
}

/// A whole request refused counts as one rejected event.
fn counted(answer: Result<HttpResponse, ApiError>) -> Result<HttpResponse, ApiError> {
    if let Err(e) = &answer {
        count_rejection(e, 1);
    }
    answer
}

async fn ingest_one(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Ingest)?;
    let limit = state.config.events.max_payload_bytes + ENVELOPE_BYTES;
    let body = read_json_body(&req, payload, limit).await?;
    let input: EventIn = parse_json(&body, "")?;
    let catalogue = state.catalogue();
    let new = state
        .rules(&catalogue, &state.schemas())
        .prepare(input, "", now_millis())?;
    let (id, event_type) = (new.event.id.clone(), new.event.event_type.clone());
    // Once the store has it, the writer hands the deliveries over whether or not this request
    // is still there to see the answer.
    let outcome =
        state.store.ingest(vec![new]).await?.pop().ok_or_else(|| {
            ApiError::unavailable("storage_unavailable", "ingest returned nothing")
        })?;
    let body = ingested(id, outcome);
    let status = match outcome {
        IngestOutcome::Stored { .. } => {
            METRICS.event_ingested(&event_type, &catalogue);
            StatusCode::ACCEPTED
        }
        IngestOutcome::Duplicate { .. } => StatusCode::OK,
    };
    Ok(HttpResponse::build(status).json(body))
}

/// Stores up to 1000 events with one write; results in input order.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events", security(("bearer" = [])),
    request_body = BatchIn,
    responses((status = 200, body = BatchResults), (status = "default", body = ErrorBody)))]
pub async fn ingest_batch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    counted(ingest_many(req, payload, state).await)
}

async fn ingest_many(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Ingest)?;
    let body = read_json_body(&req, payload, state.config.events.max_batch_bytes).await?;
    let batch: BatchIn = parse_json(&body, "")?;
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::too_large(format!(
            "events: {} events is more than {MAX_BATCH_EVENTS} in one batch",
            batch.events.len()
        )));
    }
    let now = now_millis();
    let catalogue = state.catalogue();
    let schemas = state.schemas();
    let rules = state.rules(&catalogue, &schemas);
    let mut results: Vec<Option<BatchItem>> = (0..batch.events.len()).map(|_| None).collect();
    let mut accepted: Vec<(usize, String, String)> = Vec::new();
    let mut to_store: Vec<NewEvent> = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        let field = format!("events[{i}]");
        let prepared = parse_json::<EventIn>(raw.get().as_bytes(), &field)
            .and_then(|input| Ok(rules.prepare(input, &field, now)?));
        match prepared {
            Ok(new) => {
                accepted.push((i, new.event.id.clone(), new.event.event_type.clone()));
                to_store.push(new);
            }
            Err(e) => {
                count_rejection(&e, 1);
                results[i] = Some(BatchItem::Error(e.view()));
            }
        }
    }
    if !accepted.is_empty() {
        let outcomes = state.store.ingest(to_store).await?;
        for ((i, id, event_type), outcome) in accepted.into_iter().zip(outcomes) {
            results[i] = Some(BatchItem::Ingested(ingested(id, outcome)));
            if matches!(outcome, IngestOutcome::Stored { .. }) {
                METRICS.event_ingested(&event_type, &catalogue);
            }
        }
    }
    Ok(HttpResponse::Ok().json(BatchResults {
        // invariant: every index was filled above, accepted or refused.
        results: results.into_iter().flatten().collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant: Option<String>,
}

/// The event with its deliveries' statuses; ids are scoped by tenant.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path), ("tenant" = String, Query, description = "The event's tenant")),
    responses((status = 200, body = EventView), (status = "default", body = ErrorBody)))]
pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let query: TenantQuery = parse_query(&req)?;
    let tenant = query.tenant.clone().ok_or_else(|| {
        ApiError::bad_request(
            "missing_field",
            "tenant: the query parameter is required (event ids are scoped by tenant)",
        )
    })?;
    let id = path.into_inner();
    let found = state
        .store
        .call(move |s| {
            let Some(event) = s.find_event(&tenant, &id)? else {
                return Ok(None);
            };
            let ids: Vec<DeliveryId> = event.deliveries.iter().map(|d| d.id).collect();
            let deliveries = s.get_deliveries(&ids)?;
            Ok(Some((event, deliveries)))
        })
        .await?;
    let Some((event, deliveries)) = found else {
        return Err(ApiError::not_found("event with that id for that tenant"));
    };
    let deliveries = event
        .deliveries
        .iter()
        .zip(deliveries)
        .map(|(r, d)| EventDelivery {
            id: r.id.to_string(),
            endpoint_id: r.endpoint_id.to_string(),
            status: d.map(|d| d.status),
        })
        .collect();
    let payload: Value = serde_json::from_str(event.payload.get())
        .map_err(|e| ApiError::unavailable("storage_unavailable", e.to_string()))?;
    Ok(HttpResponse::Ok().json(EventView {
        id: event.id,
        event_type: event.event_type,
        tenant: event.tenant,
        payload,
        received_at: rfc3339(event.received_at),
        deliveries,
    }))
}

/// The event catalogue (`events.types` and `events.schemas`), each type with its schema.
#[utoipa::path(get, path = "/v1/event-types", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = EventTypes), (status = "default", body = ErrorBody)))]
pub async fn types(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let schemas = state.schemas();
    let event_types = state
        .catalogue()
        .iter()
        .map(|t| EventType {
            event_type: t.clone(),
            schema: schemas.get(t).map(|s| s.schema.clone()),
        })
        .collect();
    Ok(HttpResponse::Ok().json(EventTypes { event_types }))
}
