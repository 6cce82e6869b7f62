//! `/v1/endpoints`: create (the secret is in that response only), list, get (with live stats),
//! patch, delete, pause, resume, rotate-secret, test, the delivery history and recover.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::views::{
    DeliveryPage, DeliveryView, EndpointCreated, EndpointDetail, EndpointList, EndpointStatsView,
    EndpointView, ErrorBody, LastHour, Requeued, SecretView, TestResult,
};

use super::auth::Scope;
use super::{parse_id, parse_json, parse_query, read_json_body, ApiError, AppState};
use crate::config::{Config, HumanDuration, MAX_RETRY_DELAY};
use crate::dispatch::retry::EndpointSettings;
use crate::dispatch::{
    ChangeEndpoint, CreateEndpoint, DeleteEndpoint, EndpointChange, EndpointChangeError, GetStats,
    Recover, SendTest, StatsSnapshot,
};
use crate::model::{
    check_identifier, now_millis, rfc3339, DeliveryId, DeliveryStatus, Endpoint, EndpointId,
    EndpointSpec, EndpointStatus, Secret, SigningSecret, WriteOnly,
};

const MAX_BODY: usize = 64 * 1024;
const MAX_URL_LEN: usize = 2048;
const MAX_HEADERS: usize = 32;
/// Most event types one endpoint lists (the document's `maxItems`).
const MAX_EVENT_TYPES: usize = 64;
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
    crate::rules::check(
        &crate::rules::URL,
        &spec.url,
        "an absolute http(s) URL: a host name or dotted IPv4 address, optional port, path and query",
    )
    .or_else(|m| fail("url", m))?;
    if spec.event_types.is_empty() {
        return fail("event_types", "must list at least one type, or \"*\"");
    }
    if spec.event_types.len() > MAX_EVENT_TYPES {
        return fail(
            "event_types",
            format!("lists more than {MAX_EVENT_TYPES} types"),
        );
    }

    for (i, t) in spec.event_types.iter().enumerate() {
        if t == "*" {
            continue;
        }
        if let Err(m) = check_identifier(t) {
            return fail(&format!("event_types[{i}]"), m);
        }
        // hookd's own types are outside the catalogue, for the operator tenant's endpoints.
        let operator_type = config.operator.tenant() == Some(spec.tenant.as_str())
            && crate::operator::OperatorEventType::ALL
                .iter()
                .any(|o| o.name() == t);
        if !catalogue.is_empty() && !catalogue.contains(t) && !operator_type {
            return fail(
                &format!("event_types[{i}]"),
                format!("{t:?} is not in the event catalogue (events.types)"),
            );
        }
    }
    // In characters, as JSON Schema's maxLength counts them.
    if spec
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1024)
    {
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
    if let Some(filter) = &spec.filter {
        crate::filter::Filter::parse(filter).map_err(|e| FieldError(e.path, e.message))?;
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
    if let Some(auth) = &spec.auth {
        check_auth(auth, config)?;
    }
    if let Some(proxy) = &spec.proxy {
        crate::delivery::proxy::Proxy::parse(proxy).or_else(|m| fail("proxy", m))?;
    }
    if let Some(tls) = &spec.tls {
        let too_long = [
            ("tls.ca", tls.ca.as_deref()),
            ("tls.client_cert", tls.client_cert.as_deref()),
            (
                "tls.client_key",
                tls.client_key.as_ref().map(|k| k.expose()),
            ),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| v.len() > MAX_PEM_BYTES));
        if let Some((field, _)) = too_long {
            return fail(field, format!("longer than {MAX_PEM_BYTES} bytes"));
        }
        crate::delivery::tls::check(tls).map_err(|e| match e {
            crate::delivery::tls::TlsError::Invalid { field, message } => {
                FieldError(field, message)
            }
            other => FieldError("tls".into(), other.to_string()),
        })?;
    }
    Ok(())
}

fn check_auth(auth: &crate::model::EndpointAuth, config: &Config) -> Result<(), FieldError> {
    let crate::model::EndpointAuth::Oauth2ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope,
    } = auth;
    let url = reqwest::Url::parse(token_url)
        .or_else(|e| fail("auth.token_url", format!("not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if config.delivery.allow_http => {}
        "http" => {
            return fail(
                "auth.token_url",
                "must be https (delivery.allow_http is false)",
            )
        }
        other => return fail("auth.token_url", format!("scheme {other:?} is not http(s)")),
    }
    if token_url.len() > MAX_URL_LEN {
        return fail(
            "auth.token_url",
            format!("longer than {MAX_URL_LEN} characters"),
        );
    }
    if client_id.is_empty() || client_id.len() > 1024 {
        return fail("auth.client_id", "must be 1 to 1024 characters");
    }
    let secret = client_secret.expose();
    if secret.is_empty() || secret.len() > 4096 || secret == WriteOnly::MASK {
        return fail("auth.client_secret", "must be 1 to 4096 characters");
    }
    if scope.as_ref().is_some_and(|s| s.len() > 1024) {
        return fail("auth.scope", "longer than 1024 characters");
    }
    Ok(())
}

/// A `tls` whose form is right but whose PEM texts are not usable (not certificates, a key
/// that does not go with its certificate): 422, since no schema can tell such a text apart.
fn check_tls_content(tls: &crate::model::EndpointTls) -> Result<(), ApiError> {
    crate::delivery::tls::check(tls).map_err(|e| {
        ApiError::new(
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            "unusable_tls",
            e.to_string(),
        )
    })
}

/// Largest PEM text of one `tls` field (a chain of a few certificates fits easily).
const MAX_PEM_BYTES: usize = 64 * 1024;

fn check_header_name(field: &str, name: &str) -> Result<(), FieldError> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return fail(field, format!("{name:?} is not a valid HTTP header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return fail(field, format!("{name:?} is set by hookd itself"));
    }
    Ok(())
}

/// Creates an endpoint; the response carries its signing secret, this once.
#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = EndpointSpec,
    security(("bearer" = [])),
    responses((status = 201, body = EndpointCreated), (status = "default", body = ErrorBody)))]
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let fields: Map<String, Value> = parse_json(&body, "")?;
    crate::rules::check_endpoint_fields(&fields).map_err(|(f, m)| ApiError::invalid(&f, m))?;
    let spec: EndpointSpec = parse_json(&body, "")?;
    if let Some(tls) = &spec.tls {
        check_tls_content(tls)?;
    }
    validate(&spec, &state.config, &state.catalogue())?;
    let (endpoint, secret) = state.supervisor()?.send(CreateEndpoint(spec)).await??;
    tracing::info!(
        endpoint = %endpoint.id, tenant = %endpoint.spec.tenant, url = %endpoint.spec.url,
        token = %state.fingerprint(&req), "operator: endpoint created"
    );
    Ok(HttpResponse::Created().json(EndpointCreated {
        endpoint: EndpointView::of(&endpoint, &state.config),
        key: SecretView::of(&secret),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    tenant: Option<String>,
}

/// Every endpoint, or one tenant's.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints", security(("bearer" = [])),
    params(("tenant" = Option<String>, Query, description = "Only this tenant's endpoints")),
    responses((status = 200, body = EndpointList), (status = "default", body = ErrorBody)))]
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let query: ListQuery = parse_query(&req)?;
    let tenant = query.tenant;
    let endpoints = state.store.call(|s| s.list_endpoints()).await?;
    let endpoints = endpoints
        .iter()
        .filter(|e| tenant.as_ref().is_none_or(|t| *t == e.spec.tenant))
        .map(|e| EndpointView::of(e, &state.config))
        .collect();
    Ok(HttpResponse::Ok().json(EndpointList { endpoints }))
}

/// The endpoint with its live stats.
#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointDetail), (status = "default", body = ErrorBody)))]
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
            last_error: None,
            last_hour: (0, 0),
            oldest_pending_age_ms: 0,
        },
    };
    let s = &live.stats;
    let stats = EndpointStatsView {
        pending: live.pending as u64,
        in_flight: live.in_flight as u64,
        succeeded: s.succeeded,
        failed: s.failed,
        consecutive_failures: s.consecutive_failures,
        last_success_at: s.last_success_at.map(rfc3339),
        last_failure_at: s.last_failure_at.map(rfc3339),
        state: live.state.label().to_string(),
        failing_since: s.failing_since.map(rfc3339),
        next_probe_at: live.next_probe_at.map(rfc3339),
        last_error: live.last_error,
        oldest_pending_age_seconds: (live.oldest_pending_age_ms / 1000) as u64,
        last_hour: LastHour {
            attempts: live.last_hour.0,
            succeeded: live.last_hour.1,
        },
    };
    Ok(HttpResponse::Ok().json(EndpointDetail {
        endpoint: EndpointView::of(&endpoint, &state.config),
        stats,
    }))
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestIn {
    /// The event type of the test (default `webhook.test`); need not be in the catalogue.
    #[serde(rename = "type", default)]
    #[schema(value_type = Option<crate::rules::Identifier>)]
    event_type: Option<String>,
}

/// Sends one signed test delivery now, paused or not, and answers with its outcome. It is
/// stored like any delivery but never retried. Its type need not be in the catalogue.
#[utoipa::path(post, path = "/v1/endpoints/{id}/test", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)), request_body(content = TestIn, description = "Optional: an empty body sends `webhook.test`"),
    responses((status = 200, body = TestResult), (status = "default", body = ErrorBody)))]
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
    let a = outcome.attempt;
    tracing::info!(
        endpoint = %id, delivery = %outcome.delivery_id, status = a.status_code,
        token = %state.fingerprint(&req), "operator: test sent"
    );
    Ok(HttpResponse::Ok().json(TestResult {
        delivery_id: outcome.delivery_id.to_string(),
        event_id: outcome.event_id,
        success: a.error.is_none(),
        status_code: a.status_code,
        duration_ms: a.duration_ms,
        error: a.error,
        response_body: a.response_body,
    }))
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only deliveries with this status.
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Page size, 1 to 500 (50 by default).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the page before.
    #[param(value_type = Option<crate::rules::CursorString>)]
    cursor: Option<String>,
}

/// `GET /v1/endpoints/{id}/deliveries`: newest first; `next_cursor` fetches the next page.
#[utoipa::path(get, path = "/v1/endpoints/{id}/deliveries", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = DeliveryPage), (status = "default", body = ErrorBody)))]
pub async fn deliveries(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let query: HistoryQuery = parse_query(&req)?;
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
        Some(raw) => Some(
            raw.parse::<DeliveryId>()
                .ok()
                .filter(|_| crate::rules::CURSOR.is_match(raw))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "cursor",
                        format!("{raw:?} is not a cursor from next_cursor"),
                    )
                })?,
        ),
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
    Ok(HttpResponse::Ok().json(DeliveryPage {
        deliveries: items
            .iter()
            .map(|(d, attempts)| DeliveryView::of(d, attempts))
            .collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverIn {
    #[schema(value_type = crate::rules::Rfc3339String)]
    since: String,
    /// Now by default.
    #[serde(default)]
    #[schema(value_type = Option<crate::rules::Rfc3339String>)]
    until: Option<String>,
    /// Which final statuses to recover; `["failed"]` by default.
    #[serde(default)]
    #[schema(value_type = Option<Vec<RecoverableStatus>>, min_items = 1)]
    statuses: Option<Vec<String>>,
}

/// A final status `recover` can bring back.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum RecoverableStatus {
    Failed,
    Expired,
}

/// `POST /v1/endpoints/{id}/recover`: every failed delivery created in the window goes back to
/// the queue with a fresh schedule. A window that ends before it starts recovers nothing.
#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RecoverIn,
    responses((status = 202, body = Requeued), (status = "default", body = ErrorBody)))]
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
    let since = time_field("since", &input.since)?;
    let until = match &input.until {
        Some(u) => time_field("until", u)?,
        None => now_millis(),
    };
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
    let requeued = if until < since {
        0
    } else {
        actor
            .send(Recover {
                since,
                until,
                statuses,
            })
            .await??
    };
    tracing::info!(
        endpoint = %id, since = %rfc3339(since), until = %rfc3339(until), requeued,
        token = %state.fingerprint(&req), "operator: recover"
    );
    Ok(HttpResponse::Accepted().json(Requeued {
        requeued: requeued as u64,
    }))
}

async fn change(
    state: &AppState,
    id: EndpointId,
    change: EndpointChange,
) -> Result<Endpoint, ApiError> {
    Ok(state
        .supervisor()?
        .send(ChangeEndpoint { id, change })
        .await??)
}

/// Replaces the given settings (`null` removes one); the result is validated like a create.
#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = EndpointPatch,
    responses((status = 200, body = EndpointView), (status = "default", body = ErrorBody)))]
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
    if let Some(unknown) = patch
        .keys()
        .find(|k| k.as_str() != "tenant" && !PATCHABLE.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            unknown,
            format!("unknown field; settings are {}", PATCHABLE.join(", ")),
        ));
    }
    crate::rules::check_endpoint_fields(&patch).map_err(|(f, m)| ApiError::invalid(&f, m))?;
    // A well-formed request that the endpoint's state refuses: its keys are of one kind, fixed
    // at creation (so reading it before the change cannot race with another PATCH).
    if let Some(Ok(wanted)) = patch
        .get("signing")
        .filter(|v| !v.is_null())
        .map(|v| serde_json::from_value::<crate::model::Signing>(v.clone()))
    {
        let stored = state
            .store
            .call(move |s| s.get_endpoint(id))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("endpoint {id}")))?;
        if stored.spec.signing.unwrap_or_default() != wanted {
            return Err(ApiError::new(
                actix_web::http::StatusCode::CONFLICT,
                "signing_fixed",
                "signing: cannot be changed; create an endpoint with the other signing",
            ));
        }
    }
    // Its PEM texts as sent (a `***` key is checked with the stored one, in the change).
    if let Some(tls) = patch.get("tls").filter(|v| v.is_object()) {
        let keeps_key = tls.get("client_key").and_then(Value::as_str) == Some(WriteOnly::MASK);
        if let (false, Ok(tls)) = (
            keeps_key,
            serde_json::from_value::<crate::model::EndpointTls>(tls.clone()),
        ) {
            check_tls_content(&tls)?;
        }
    }
    let fields: Vec<String> = patch.keys().cloned().collect();
    let config: Arc<Config> = state.config.clone();
    let catalogue = state.catalogue();
    let endpoint = change(
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
                    let value = keep_masked(&key, value, merged.get(&key));
                    merged.insert(key, value);
                }
            }
            let spec: EndpointSpec = serde_path_to_error::deserialize(Value::Object(merged))
                .map_err(|e| FieldError(e.path().to_string(), e.into_inner().to_string()))?;
            // Its keys are of one kind: another kind is another endpoint.
            if spec.signing.unwrap_or_default() != endpoint.spec.signing.unwrap_or_default() {
                return Err(FieldError(
                    "signing".into(),
                    "cannot be changed; create an endpoint with the other signing".into(),
                )
                .into());
            }
            validate(&spec, &config, &catalogue)?;
            endpoint.spec = spec;
            Ok(())
        }),
    )
    .await?;
    tracing::info!(
        endpoint = %id, fields = ?fields, token = %state.fingerprint(&req),
        "operator: endpoint updated"
    );
    Ok(HttpResponse::Ok().json(EndpointView::of(&endpoint, &state.config)))
}

/// A write-only value sent back as `***` (a view round-tripped into a PATCH) keeps the
/// stored one.
fn keep_masked(key: &str, mut value: Value, stored: Option<&Value>) -> Value {
    let write_only: &[&str] = match key {
        "tls" => &["client_key"],
        "auth" => &["client_secret"],
        _ => &[],
    };
    if let (Some(new), Some(Value::Object(old))) = (value.as_object_mut(), stored) {
        for field in write_only {
            if new.get(*field).and_then(Value::as_str) == Some(WriteOnly::MASK) {
                match old.get(*field) {
                    Some(v) => new.insert(field.to_string(), v.clone()),
                    None => new.remove(*field),
                };
            }
        }
    }
    value
}

/// Deletes the endpoint; its pending deliveries end `cancelled`.
#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = "default", body = ErrorBody)))]
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    state.supervisor()?.send(DeleteEndpoint(id)).await??;
    tracing::info!(endpoint = %id, token = %state.fingerprint(&req), "operator: endpoint deleted");
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
    let endpoint = change(
        &state,
        id,
        Box::new(move |endpoint: &mut Endpoint| {
            endpoint.status = status;
            endpoint.paused_reason =
                (status == EndpointStatus::Paused).then_some(crate::model::PausedReason::Operator);
            Ok(())
        }),
    )
    .await?;
    let action = match status {
        EndpointStatus::Paused => "operator: endpoint paused",
        EndpointStatus::Active => "operator: endpoint resumed",
    };
    tracing::info!(endpoint = %id, token = %state.fingerprint(&req), "{action}");
    Ok(HttpResponse::Ok().json(EndpointView::of(&endpoint, &state.config)))
}

/// Holds the endpoint's queue: nothing is sent, deliveries accumulate, retry clocks stop.
#[utoipa::path(post, path = "/v1/endpoints/{id}/pause", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = "default", body = ErrorBody)))]
pub async fn pause(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_status(req, path, state, EndpointStatus::Paused).await
}

/// Lets the backlog drain.
#[utoipa::path(post, path = "/v1/endpoints/{id}/resume", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = "default", body = ErrorBody)))]
pub async fn resume(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    set_status(req, path, state, EndpointStatus::Active).await
}

/// A new current secret; the previous one keeps signing `webhook-signature` for
/// `delivery.secret_overlap`, so receivers can switch without dropping requests.
#[utoipa::path(post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = SecretView), (status = "default", body = ErrorBody)))]
pub async fn rotate_secret(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: EndpointId = parse_id(&path, "endpoint")?;
    let overlap = state.config.delivery.secret_overlap.as_millis() as i64;
    let supervisor = state.supervisor()?;
    let endpoint = supervisor
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
                        secret: Secret::generate_for(endpoint.spec.signing.unwrap_or_default()),
                        expires_at: None,
                    },
                );
                Ok(())
            }),
        })
        .await??;
    tracing::info!(endpoint = %id, token = %state.fingerprint(&req), "operator: secret rotated");
    // invariant: the change just put the new secret first.
    let view = endpoint.secrets.first().map(|s| SecretView::of(&s.secret));
    Ok(HttpResponse::Ok().json(view))
}

/// An RFC 3339 time field, of the form the document promises.
fn time_field(field: &str, raw: &str) -> Result<crate::model::UnixMillis, ApiError> {
    crate::rules::rfc3339_millis(raw).map_err(|m| ApiError::invalid(field, m))
}

/// What a PATCH may set: every field of [`EndpointSpec`] but `tenant` (a unit test keeps the
/// two in step).
const PATCHABLE: &[&str] = &[
    "url",
    "event_types",
    "description",
    "max_concurrency",
    "signature_header",
    "timeout",
    "retry_schedule",
    "headers",
    "rate_limit",
    "ttl",
    "ordering",
    "filter",
    "signing",
    "tls",
    "auth",
    "proxy",
];

#[cfg(test)]
mod patch_tests {
    /// Every setting of a full spec is patchable, and nothing else is.
    #[test]
    fn patchable_fields_are_the_specs_fields_but_tenant() {
        let spec = serde_json::json!({
            "tenant": "t", "url": "https://x.example/", "event_types": ["*"],
            "description": "d", "max_concurrency": 1, "signature_header": "X-S",
            "timeout": "1s", "retry_schedule": ["1s"], "headers": {"X-A": "b"},
            "rate_limit": {"per_second": 1.0, "burst": 1}, "ttl": "1h", "ordering": "key",
            "filter": {"a": 1}, "signing": "hmac", "tls": {"ca": "x"}, "proxy": "http://p:1",
            "auth": {"type": "oauth2_client_credentials", "token_url": "https://t/",
                     "client_id": "c", "client_secret": "s"}
        });
        let parsed: crate::model::EndpointSpec = serde_json::from_value(spec).unwrap();
        let back = serde_json::to_value(parsed).unwrap();
        let mut fields: Vec<&str> = back
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.retain(|f| *f != "tenant");
        let mut patchable = super::PATCHABLE.to_vec();
        fields.sort();
        patchable.sort();
        assert_eq!(fields, patchable);
    }
}

/// A PATCH body: any endpoint setting but `tenant` (which cannot change); `null` removes an
/// optional one. For the document only: the handler merges the object over the stored spec
/// and validates the result as [`EndpointSpec`].
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EndpointPatch {
    #[schema(value_type = Option<crate::rules::UrlString>, nullable = false)]
    url: Option<String>,
    #[schema(value_type = Option<Vec<crate::rules::EventTypeName>>, nullable = false, min_items = 1, max_items = 64)]
    event_types: Option<Vec<String>>,
    #[schema(max_length = 1024)]
    description: Option<String>,
    #[schema(minimum = 1, maximum = 1024)]
    max_concurrency: Option<u32>,
    #[schema(value_type = Option<crate::rules::HeaderName>)]
    signature_header: Option<String>,
    #[schema(value_type = Option<crate::rules::TimeoutString>)]
    timeout: Option<String>,
    #[schema(value_type = Option<Vec<crate::rules::DelayString>>, max_items = 50)]
    retry_schedule: Option<Vec<String>>,
    #[schema(value_type = Option<crate::rules::Headers>)]
    headers: Option<()>,
    rate_limit: Option<crate::model::RateLimit>,
    #[schema(value_type = Option<crate::rules::TtlString>)]
    ttl: Option<String>,
    ordering: Option<crate::model::Ordering>,
    #[schema(value_type = Option<crate::rules::FilterSchema>)]
    filter: Option<()>,
    /// Must equal the endpoint's: the kind of key is fixed at creation.
    signing: Option<crate::model::Signing>,
    /// A `client_key` of `***` keeps the stored one.
    tls: Option<crate::model::EndpointTls>,
    /// A `client_secret` of `***` keeps the stored one.
    auth: Option<crate::model::EndpointAuth>,
    #[schema(value_type = Option<crate::rules::ProxyString>)]
    proxy: Option<String>,
}
