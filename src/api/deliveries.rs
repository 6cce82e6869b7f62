//! `GET /v1/deliveries/{id}` with its attempts, `POST /v1/deliveries/{id}/retry`, and the one
//! delivery view every response uses.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::Scope;
use super::{parse_id, ApiError, AppState};
use crate::dispatch::{RetryDelivery, RetryOutcome};
use crate::model::{rfc3339, Attempt, Delivery, DeliveryId};

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: DeliveryId = parse_id(&path, "delivery")?;
    let (delivery, attempts) = state
        .store
        .call(move |s| {
            let Some(d) = s.get_delivery(id)? else {
                return Ok(None);
            };
            Ok(Some((d, s.attempts(id)?)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id}")))?;
    Ok(HttpResponse::Ok().json(view(&delivery, &attempts)))
}

/// A delivery with its attempts, as `GET /v1/deliveries/{id}` and the endpoint history show it.
pub fn view(delivery: &Delivery, attempts: &[Attempt]) -> Value {
    let attempts: Vec<_> = attempts
        .iter()
        .map(|a| {
            json!({
                "n": a.n,
                "at": rfc3339(a.at),
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error": a.error,
                "response_body": a.response_body,
            })
        })
        .collect();
    json!({
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "tenant": delivery.tenant,
        "status": delivery.status,
        "attempts": attempts,
        "next_attempt_at": delivery.next_attempt_at.map(rfc3339),
        "created_at": rfc3339(delivery.created_at),
        "expires_at": delivery.expires_at.map(rfc3339),
        "ordering_key": delivery.ordering.as_ref().map(|o| o.key.as_str()),
        "sequence": delivery.ordering.as_ref().map(|o| o.seq),
    })
}

pub async fn retry(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let id: DeliveryId = parse_id(&path, "delivery")?;
    let delivery = state
        .store
        .call(move |s| s.get_delivery(id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id}")))?;
    if delivery.test {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("delivery {id} is a test send, which is final once sent"),
        ));
    }
    let actor = state.router.actor(delivery.endpoint_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_deleted",
            format!(
                "endpoint {} of this delivery was deleted",
                delivery.endpoint_id
            ),
        )
    })?;
    match actor.send(RetryDelivery(id)).await?? {
        RetryOutcome::Requeued | RetryOutcome::BroughtForward => {
            Ok(HttpResponse::Accepted().json(json!({"id": id, "status": "pending"})))
        }
        RetryOutcome::NotRetryable(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!(
                "delivery {id} is {}; only failed or pending deliveries can be retried",
                serde_json::to_value(status).unwrap_or_default()
            ),
        )),
        RetryOutcome::NotFound => Err(ApiError::not_found(format!("delivery {id}"))),
    }
}
