//! `/v1/endpoints`: create (the secret is in that response only), list, get (with live stats),
//! patch, delete, pause, resume, rotate-secret, test, the delivery history and recover.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::Scope;
use super::{parse_id, parse_json, read_json_body, ApiError, AppState};
use crate::config::{Config, HumanDuration, MAX_RETRY_DELAY};
use crate::dispatch::retry::EndpointSettings;
use crate::dispatch::{
    ChangeEndpoint, CreateEndpoint, DeleteEndpoint, EndpointChange, EndpointChangeError, GetStats,
    Recover, SendTest, StatsSnapshot,
};
use crate::model::{
    check_identifier, now_millis, parse_rfc3339, rfc3339, DeliveryId, DeliveryStatus, Endpoint,
    EndpointId, EndpointSpec, EndpointStatus, Secret, SigningSecret,
};

const MAX_BODY: usize = 64 * 1024;
const MAX_URL_LEN: usize = 2048;
const MAX_HEADERS: usize = 32;
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Headers hookd sets itself; neither `signature_header` nor static headers may replace them.
const RESERVED_HEADERS: [&str; 14] = [
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "transfer-encoding",
    "connection",
    "x-webhook-id",
    "x-webhook-event",
    "x-webhook-attempt",
    "x-webhook-ordering-key",
    "x-webhook-sequence",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// A field that failed validation.
struct FieldError(String, String);

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(&e.0, e.1)
    }
}

impl From<FieldError> for EndpointChangeError {
    fn from(e: FieldError) -> Self {
        EndpointChangeError::Invalid {
            field: e.0,
            message: e.1,
        }
    }
}

/// The longest `ttl` an endpoint may set.
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 86400);

fn fail<T>(field: &str, message: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError(field.to_string(), message.into()))
}

fn validate(spec: &EndpointSpec, config: &Config, catalogue: &[String]) -> Result<(), FieldError> {
    if let Err(m) = check_identifier(&spec.tenant) {
        return fail("tenant", m);
    }
    if spec.url.len() > MAX_URL_LEN {
        return fail("url", format!("longer than {MAX_URL_LEN} characters"));
    }
    let url = match reqwest::Url::parse(&spec.url) {
        Ok(u) => u,
        Err(e) => return fail("url", format!("not an absolute URL ({e})")),
    };
    match url.scheme() {
        "https" => {}
        "http" if config.delivery.allow_http => {}
        "http" => return fail("url", "must be https (delivery.allow_http is false)"),
        other => return fail("url", format!("scheme {other:?} is not http(s)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return fail(
            "url",
            "contains credentials (user:password@); put them in headers instead",
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return fail("url", "has no host");
    }
    if !config.delivery.allow_private_networks {
        if let Err(blocked) = crate::delivery::guard::check_url(&url) {
            return fail(
                "url",
                format!(
                    "points at private address {} (delivery.allow_private_networks is false)",
                    blocked.0
                ),
            );
        }
    }
    if spec.event_types.is_empty() {
        return fail("event_types", "must list at least one type, or \"*\"");
    }

    for (i, t) in spec.event_types.iter().enumerate() {
        if t == "*" {
            continue;
        }
        if let Err(m) = check_identifier(t) {
            return fail(&format!("event_types[{i}]"), m);
        }
        if !catalogue.is_empty() && !catalogue.contains(t) {
            return fail(
                &format!("event_types[{i}]"),
                format!("{t:?} is not in the event catalogue (events.types)"),
            );
        }
    }
    if spec.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return fail("description", "longer than 1024 characters");
    }
    if let Some(n) = spec.max_concurrency {
        if !(1..=1024).contains(&n) {
            return fail("max_concurrency", "must be between 1 and 1024");
        }
    }
    if let Some(h) = &spec.signature_header {
        check_header_name("signature_header", h)?;
    }
    if let Some(HumanDuration(t)) = spec.timeout {
        if t.is_zero() || t > MAX_TIMEOUT {
            return fail("timeout", "must be more than 0 and at most 5m");
        }
    }
    if let Some(schedule) = &spec.retry_schedule {
        if schedule.len() > 50 {
            return fail("retry_schedule", "has more than 50 delays");
        }
        if let Some(i) = schedule.iter().position(|d| d.0 > MAX_RETRY_DELAY) {
            return fail(&format!("retry_schedule[{i}]"), "is longer than 30 days");
        }
    }
    if let Some(HumanDuration(ttl)) = spec.ttl {
        if ttl.is_zero() || ttl > MAX_TTL {
            return fail("ttl", "must be more than 0 and at most 365d");
        }
    }
    if let Some(limit) = &spec.rate_limit {
        limit
            .check()
            .or_else(|(field, message)| fail(field, message))?;
    }
    if let Some(headers) = &spec.headers {
        if headers.len() > MAX_HEADERS {
            return fail("headers", format!("more than {MAX_HEADERS} headers"));
        }
        let signature = EndpointSettings::resolve(spec, &config.delivery).signature_header;
        for (name, value) in headers {
            let field = format!("headers.{name}");
            check_header_name(&field, name)?;
            if name.eq_ignore_ascii_case(&signature) {
                return fail(&field, "is the signature header");
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return fail(&field, "is not a valid header value");
            }
        }
    }
    Ok(())
}

fn check_header_name(field: &str, name: &str) -> Result<(), FieldError> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return fail(field, format!("{name:?} is not a valid HTTP header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return fail(field, format!("{name:?} is set by hookd itself"));
    }
    Ok(())
}

/// The endpoint as every response shows it: effective settings, never a secret.
pub fn view(endpoint: &Endpoint, config: &Config) -> Value {
    let s = EndpointSettings::resolve(&endpoint.spec, &config.delivery);
    let schedule: Vec<HumanDuration> = s
        .schedule
        .delays()
        .iter()
        .map(|d| HumanDuration(*d))
        .collect();
    json!({
        "id": endpoint.id,
        "tenant": endpoint.spec.tenant,
        "url": endpoint.spec.url,
        "event_types": endpoint.spec.event_types,
        "description": endpoint.spec.description,
        "max_concurrency": s.max_concurrency,
        "signature_header": s.signature_header,
        "timeout": HumanDuration(s.timeout),
        "retry_schedule": schedule,
        // Static header values are often credentials: written, never shown.
        "headers": endpoint
            .spec
            .headers
            .iter()
            .flatten()
            .map(|(name, _)| (name.clone(), Value::from("***")))
            .collect::<Map<String, Value>>(),
        "rate_limit": endpoint.spec.rate_limit,
        "ttl": endpoint.spec.ttl,
        "ordering": endpoint.spec.ordering.unwrap_or_default(),
        "status": endpoint.status,
        "created_at": rfc3339(endpoint.created_at),
        "updated_at": rfc3339(endpoint.updated_at),
    })
}

pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let spec: EndpointSpec = parse_json(&body, "")?;
    validate(&spec, &state.config, &state.catalogue())?;
    let (endpoint, secret) = state.supervisor()?.send(CreateEndpoint(spec)).await??;
    let mut body = view(&endpoint, &state.config);
    body["secret"] = Value::String(secret.expose().to_string());
    Ok(HttpResponse::Created().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
}

pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let tenant = query.into_inner().tenant;
    let endpoints = state.store.call(|s| s.list_endpoints()).await?;
    let views: Vec<Value> = endpoints
        .iter()
        .filter(|e| tenant.as_ref().is_none_or(|t| *t == e.spec.tenant))
        .map(|e| view(e, &state.config))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"endpoints": views})))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let endpoint = state
        .store
        .call(move |s| s.get_endpoint(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("endpoint {id}")))?;
    let live = match state.router.actor(id) {
        Some(actor) => actor.send(GetStats).await?,
        // Only in the instant between a create storing the record and starting its actor.
        None => StatsSnapshot {
            pending: 0,
            in_flight: 0,
            state: crate::metrics::EndpointState::Active,
            stats: Default::default(),
            next_probe_at: None,
        },
    };
    let mut body = view(&endpoint, &state.config);
    let s = &live.stats;
    body["stats"] = json!({
        "pending": live.pending,
        "in_flight": live.in_flight,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "consecutive_failures": s.consecutive_failures,
        "last_success_at": s.last_success_at.map(rfc3339),
        "last_failure_at": s.last_failure_at.map(rfc3339),
        "state": live.state.label(),
        "failing_since": s.failing_since.map(rfc3339),
        "next_probe_at": live.next_probe_at.map(rfc3339),
    });
    Ok(HttpResponse::Ok().json(body))
}

/// The actor of a live endpoint, or 404.
fn actor_of(
    state: &AppState,
    id: EndpointId,
) -> Result<actix::Addr<crate::dispatch::EndpointActor>, ApiError> {
    state
        .router
        .actor(id)
        .ok_or_else(|| ApiError::not_found(format!("endpoint {id}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestIn {
    #[serde(rename = "type", default)]
    event_type: Option<String>,
}

/// Sends one signed test delivery now, paused or not, and answers with its outcome. It is
/// stored like any delivery but never retried. Its type need not be in the catalogue.
pub async fn test(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        TestIn { event_type: None }
    } else {
        parse_json::<TestIn>(&body, "")?
    };
    let event_type = input.event_type.unwrap_or_else(|| "webhook.test".into());
    check_identifier(&event_type).map_err(|m| ApiError::invalid("type", m))?;
    let actor = actor_of(&state, id)?;
    let outcome = actor.send(SendTest { event_type }).await??;
    let a = &outcome.attempt;
    Ok(HttpResponse::Ok().json(json!({
        "delivery_id": outcome.delivery_id,
        "event_id": outcome.event_id,
        "success": a.error.is_none(),
        "status_code": a.status_code,
        "duration_ms": a.duration_ms,
        "error": a.error,
        "response_body": a.response_body,
    })))
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/endpoints/{id}/deliveries`: newest first; `next_cursor` fetches the next page.
pub async fn deliveries(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let query = web::Query::<HistoryQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?
        .into_inner();
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("succeeded") => Some(DeliveryStatus::Succeeded),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some("cancelled") => Some(DeliveryStatus::Cancelled),
        Some("expired") => Some(DeliveryStatus::Expired),
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("{other:?} is not one of pending, succeeded, failed, cancelled, expired"),
            ))
        }
    };
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("{raw:?} is not a number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<DeliveryId>().map_err(|_| {
            ApiError::invalid(
                "cursor",
                format!("{raw:?} is not a cursor from next_cursor"),
            )
        })?),
    };
    let (endpoint, page) = state
        .store
        .call(move |s| {
            let Some(endpoint) = s.get_endpoint(id)? else {
                return Ok((None, None));
            };
            let page = s.endpoint_deliveries(id, status, cursor, limit)?;
            Ok((Some(endpoint), Some(page)))
        })
        .await?;
    let (Some(_), Some((items, next))) = (endpoint, page) else {
        return Err(ApiError::not_found(format!("endpoint {id}")));
    };
    let deliveries: Vec<Value> = items
        .iter()
        .map(|(d, attempts)| super::deliveries::view(d, attempts))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "deliveries": deliveries,
        "next_cursor": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverIn {
    since: String,
    #[serde(default)]
    until: Option<String>,
    /// Which final statuses to recover (`failed`, `expired`); `["failed"]` by default.
    #[serde(default)]
    statuses: Option<Vec<String>>,
}

/// `POST /v1/endpoints/{id}/recover`: every failed delivery created in the window goes back to
/// the queue with a fresh schedule.
pub async fn recover(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let input: RecoverIn = parse_json(&body, "")?;
    let since = parse_rfc3339(&input.since).map_err(|m| ApiError::invalid("since", m))?;
    let until = match &input.until {
        Some(u) => parse_rfc3339(u).map_err(|m| ApiError::invalid("until", m))?,
        None => now_millis(),
    };
    if until < since {
        return Err(ApiError::invalid("until", "is before since"));
    }
    let statuses = match &input.statuses {
        None => vec![DeliveryStatus::Failed],
        Some(given) if given.is_empty() => {
            return Err(ApiError::invalid(
                "statuses",
                "must name at least one status",
            ))
        }
        Some(given) => given
            .iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                "failed" => Ok(DeliveryStatus::Failed),
                "expired" => Ok(DeliveryStatus::Expired),
                other => Err(ApiError::invalid(
                    &format!("statuses[{i}]"),
                    format!("{other:?} is not one of failed, expired"),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let actor = actor_of(&state, id)?;
    let requeued = actor
        .send(Recover {
            since,
            until,
            statuses,
        })
        .await??;
    Ok(HttpResponse::Accepted().json(json!({"requeued": requeued})))
}

async fn change(
    state: &AppState,
    id: EndpointId,
    change: EndpointChange,
) -> Result<HttpResponse, ApiError> {
    let endpoint = state
        .supervisor()?
        .send(ChangeEndpoint { id, change })
        .await??;
    Ok(HttpResponse::Ok().json(view(&endpoint, &state.config)))
}

pub async fn patch(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let patch: Map<String, Value> = parse_json(&body, "")?;
    let config: Arc<Config> = state.config.clone();
    let catalogue = state.catalogue();
    change(
        &state,
        id,
        Box::new(move |endpoint: &mut Endpoint| {
            let mut merged = match serde_json::to_value(&endpoint.spec) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            for (key, value) in patch {
                if key == "tenant" && value.as_str() != Some(endpoint.spec.tenant.as_str()) {
                    return Err(FieldError("tenant".into(), "cannot be changed".into()).into());
                }
                if value.is_null() {
                    merged.remove(&key);
                } else {
                    merged.insert(key, value);
                }
            }
            let spec: EndpointSpec = serde_path_to_error::deserialize(Value::Object(merged))
                .map_err(|e| FieldError(e.path().to_string(), e.into_inner().to_string()))?;
            validate(&spec, &config, &catalogue)?;
            endpoint.spec = spec;
            Ok(())
        }),
    )
    .await
}

pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    state.supervisor()?.send(DeleteEndpoint(id)).await??;
    Ok(HttpResponse::NoContent().finish())
}

async fn set_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    status: EndpointStatus,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    change(
        &state,
        id,
        Box::new(move |endpoint: &mut Endpoint| {
            endpoint.status = status;
            Ok(())
        }),
    )
    .await
}

pub async fn pause(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_status(req, path, state, EndpointStatus::Paused).await
}

pub async fn resume(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_status(req, path, state, EndpointStatus::Active).await
}

/// A new current secret; the previous one keeps signing `webhook-signature` for
/// `delivery.secret_overlap`, so receivers can switch without dropping requests.
pub async fn rotate_secret(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let secret = Secret::generate();
    let new = secret.clone();
    let overlap = state.config.delivery.secret_overlap.as_millis() as i64;
    let supervisor = state.supervisor()?;
    supervisor
        .send(ChangeEndpoint {
            id,
            change: Box::new(move |endpoint: &mut Endpoint| {
                let now = now_millis();
                endpoint
                    .secrets
                    .retain(|s| s.expires_at.is_none_or(|t| t > now));
                for old in endpoint
                    .secrets
                    .iter_mut()
                    .filter(|s| s.expires_at.is_none())
                {
                    old.expires_at = Some(now + overlap);
                }
                endpoint.secrets.insert(
                    0,
                    SigningSecret {
                        secret: new,
                        expires_at: None,
                    },
                );
                Ok(())
            }),
        })
        .await??;
    tracing::info!(endpoint = %id, "secret rotated");
    Ok(HttpResponse::Ok().json(json!({"secret": secret.expose()})))
}
