//! `GET /v1/stream`: attempts and endpoint state changes as Server-Sent Events, filtered by
//! `endpoint=` and `tenant=` (see [`crate::stream`] for the buffering rules).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Scope;
use super::{parse_query, ApiError, AppState};
use crate::stream::{Filter, Next};

/// A comment line this often keeps proxies from closing an idle stream and finds clients
/// that went away (a write to a closed connection ends the stream).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    endpoint: Option<String>,
    tenant: Option<String>,
}

/// Attempts (`event: attempt`) and endpoint state changes (`event: endpoint`) as
/// Server-Sent Events, until the client goes away; `event: overflow` when it fell behind.
#[utoipa::path(get, path = "/v1/stream", tag = "stream", security(("bearer" = [])),
    params(("endpoint" = Option<String>, Query, description = "Only this endpoint's lines"),
           ("tenant" = Option<String>, Query, description = "Only this tenant's lines")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
              (status = "default", body = super::views::ErrorBody)))]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let query: StreamQuery = parse_query(&req)?;
    let filter = Filter {
        endpoint: query.endpoint,
        tenant: query.tenant,
    };
    let subscription = state.feed.subscribe().ok_or_else(|| {
        ApiError::new(
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_subscribers",
            format!(
                "{} streams are open already; close one first",
                crate::stream::MAX_SUBSCRIBERS
            ),
        )
    })?;
    let opening = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(web::Bytes::from_static(b": hookd stream\n\n"))
    });
    let lines =
        futures_util::stream::unfold((subscription, filter), |(mut sub, filter)| async move {
            loop {
                let chunk = match sub.next(KEEP_ALIVE).await {
                    Next::Line(line) if filter.admits(&line) => line.to_sse(),
                    Next::Line(_) => continue,
                    Next::Overflow(lost) => {
                        format!("event: overflow\ndata: {{\"lost\":{lost}}}\n\n")
                    }
                    Next::Idle => ": keep-alive\n\n".to_string(),
                    Next::Closed => return None,
                };
                return Some((Ok(web::Bytes::from(chunk)), (sub, filter)));
            }
        });
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-cache"))
        .streaming(futures_util::StreamExt::chain(opening, lines)))
}
