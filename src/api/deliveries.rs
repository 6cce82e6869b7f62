//! `GET /v1/deliveries/{id}` with its attempts, `POST /v1/deliveries/{id}/retry`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Scope;
use super::views::{DeliveryView, ErrorBody, RetryAccepted};
use super::{parse_id, ApiError, AppState};
use crate::dispatch::{RetryDelivery, RetryOutcome};
use crate::model::DeliveryId;

/// A delivery with its attempts.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = "default", body = ErrorBody)))]
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
            let Some(mut d) = s.get_delivery(id)? else {
                return Ok(None);
            };
            let attempts = std::mem::take(&mut d.attempt_log);
            Ok(Some((d, attempts)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id}")))?;
    Ok(HttpResponse::Ok().json(DeliveryView::of(&delivery, &attempts)))
}

#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 202, body = RetryAccepted), (status = "default", body = ErrorBody)))]
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
            tracing::info!(
                delivery = %id, endpoint = %delivery.endpoint_id,
                token = %state.fingerprint(&req), "operator: delivery retried"
            );
            Ok(HttpResponse::Accepted().json(RetryAccepted {
                id: id.to_string(),
                status: crate::model::DeliveryStatus::Pending,
            }))
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
