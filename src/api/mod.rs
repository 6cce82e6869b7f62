//! The HTTP API (actix-web): ingest, endpoints, deliveries, health. Handlers mirror the
//! resources (`events`, `endpoints`, `deliveries`); they validate input completely before anything
//! is stored, so a bad request never changes state, and every error is JSON ([`ApiError`]).

mod admin;
mod auth;
pub mod console;
mod deliveries;
mod endpoints;
pub mod error;
mod events;
mod openapi;
mod stream;
pub mod views;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Addr;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::json;

pub use auth::Tokens;
pub use error::ApiError;

use crate::config::Config;
use crate::dispatch::{Router, Supervisor};
use crate::storage::Store;

/// Everything a handler needs; one per process, shared by every worker.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub router: Arc<Router>,
    /// Replaced by a SIGHUP reload.
    pub tokens: parking_lot::RwLock<Tokens>,
    /// `events.types` and the types of `events.schemas`, replaced by a SIGHUP reload.
    pub catalogue: parking_lot::RwLock<Arc<Vec<String>>>,
    /// `events.schemas`, compiled; replaced by a SIGHUP reload.
    pub schemas: parking_lot::RwLock<Arc<crate::schemas::Schemas>>,
    /// Set once recovery has rebuilt every endpoint actor; until then `/v1` answers 503.
    pub ready: AtomicBool,
    /// Set on SIGTERM/SIGINT: intake stops while in-flight work finishes.
    pub stopping: AtomicBool,
    /// Filled in once recovery has started it.
    pub supervisor: parking_lot::RwLock<Option<Addr<Supervisor>>>,
    pub feed: Arc<crate::stream::Feed>,
    pub started_at: std::time::Instant,
    /// `[source.nats]`'s health, when it is configured.
    pub nats: Option<Arc<crate::source::SourceStatus>>,
}

impl AppState {
    /// The schemas in force.
    pub fn schemas(&self) -> Arc<crate::schemas::Schemas> {
        self.schemas.read().clone()
    }

    /// The event catalogue in force (`events.types`; empty: any type).
    pub fn catalogue(&self) -> Arc<Vec<String>> {
        self.catalogue.read().clone()
    }

    /// The rules events are checked against, with `catalogue` and `schemas` as read once for
    /// a request or a chunk of messages (so that all its events see one version of them).
    pub fn rules<'a>(
        &'a self,
        catalogue: &'a [String],
        schemas: &'a crate::schemas::Schemas,
    ) -> crate::intake::Rules<'a> {
        crate::intake::Rules {
            router: &self.router,
            max_payload_bytes: self.config.events.max_payload_bytes,
            catalogue,
            schemas,
        }
    }

    fn supervisor(&self) -> Result<Addr<Supervisor>, ApiError> {
        self.supervisor
            .read()
            .clone()
            .ok_or_else(|| ApiError::unavailable("not_ready", "hookd is still recovering"))
    }

    /// Every `/v1` handler's first step: a token good for `scope`, and a daemon taking requests.
    fn authorize(&self, req: &HttpRequest, scope: auth::Scope) -> Result<(), ApiError> {
        self.tokens.read().require(req, scope)?;
        self.check_serving()
    }

    /// The request's token fingerprint, for operator-action log lines.
    fn fingerprint(&self, req: &HttpRequest) -> String {
        Tokens::fingerprint(req)
    }

    fn check_serving(&self) -> Result<(), ApiError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ApiError::unavailable(
                "shutting_down",
                "hookd is shutting down",
            ));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(ApiError::unavailable(
                "not_ready",
                "hookd is still recovering",
            ));
        }
        Ok(())
    }
}

/// One route: its method, path pattern and the query parameters it takes.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub query: &'static [&'static str],
}

impl Route {
    /// Whether `path` is this route's pattern (a `{…}` segment matches any one segment).
    fn matches(&self, path: &str) -> bool {
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                _ => return false,
            }
        }
    }
}

/// Registers every route and records it in [`ROUTE_TABLE`], so that a known path asked with
/// a method it does not serve can answer 405 with `Allow`, and a query parameter no route
/// takes is refused before any handler runs.
macro_rules! api_routes {
    ($( $method:ident $path:literal $([$($param:ident),*])? => $handler:path ),* $(,)?) => {
        /// Every route, in the order they are registered.
        pub const ROUTE_TABLE: &[Route] = &[ $( Route {
            method: stringify!($method),
            path: $path,
            query: &[$($(stringify!($param)),*)?],
        } ),* ];

        pub fn routes(cfg: &mut web::ServiceConfig) {
            $( cfg.route($path, web::$method().to($handler)); )*
            console::routes(cfg);
            cfg.default_service(web::to(not_found));
        }
    };
}

api_routes! {
    get "/healthz" => healthz,
    get "/readyz" => readyz,
    get "/metrics" => metrics,
    get "/v1/openapi.json" => openapi::document,
    get "/v1/stream" [endpoint, tenant] => stream::stream,
    post "/v1/events" => events::ingest,
    post "/v1/events/batch" => events::ingest_batch,
    get "/v1/events/{id}" [tenant] => events::get,
    get "/v1/event-types" => events::types,
    post "/v1/endpoints" => endpoints::create,
    get "/v1/endpoints" [tenant] => endpoints::list,
    get "/v1/endpoints/{id}" => endpoints::get,
    patch "/v1/endpoints/{id}" => endpoints::patch,
    delete "/v1/endpoints/{id}" => endpoints::delete,
    post "/v1/endpoints/{id}/pause" => endpoints::pause,
    post "/v1/endpoints/{id}/resume" => endpoints::resume,
    post "/v1/endpoints/{id}/rotate-secret" => endpoints::rotate_secret,
    post "/v1/endpoints/{id}/test" => endpoints::test,
    get "/v1/endpoints/{id}/deliveries" [status, limit, cursor] => endpoints::deliveries,
    post "/v1/endpoints/{id}/recover" => endpoints::recover,
    get "/v1/deliveries/{id}" => deliveries::get,
    post "/v1/deliveries/{id}/retry" => deliveries::retry,
    post "/v1/admin/backup" => admin::backup,
}

/// The routes whose pattern `path` is. A path that is some route's literal pattern
/// (`/v1/events/batch`) is that route's alone, not also a value of a `{…}` segment
/// (`/v1/events/{id}`). Allocates nothing: it runs on every request.
fn routes_for(path: &str) -> impl Iterator<Item = &'static Route> + '_ {
    let path = path.trim_end_matches('/');
    let literal = ROUTE_TABLE.iter().any(|r| r.path == path);
    ROUTE_TABLE.iter().filter(move |r| {
        if literal {
            r.path == path
        } else {
            r.matches(path)
        }
    })
}

/// The route serving `method path`, if any.
fn route_for(method: &str, path: &str) -> Option<&'static Route> {
    routes_for(path).find(|r| r.method.eq_ignore_ascii_case(method))
}

/// The methods [`ROUTE_TABLE`] serves for `path`.
fn allowed_methods(path: &str) -> Vec<String> {
    routes_for(path)
        .map(|r| r.method.to_ascii_uppercase())
        .collect()
}

/// 405 with `Allow` for a known path asked with a method it does not serve.
fn method_not_allowed(method: &str, path: &str, allowed: &[String]) -> HttpResponse {
    use actix_web::ResponseError;
    let mut response = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} {path} is not served; allowed: {}",
            allowed.join(", ")
        ),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

/// The first query parameter of `query` that `route` does not take.
fn unknown_query_parameter(route: &Route, query: &str) -> Option<String> {
    if query.is_empty() {
        return None;
    }
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !route.query.contains(&name.as_ref()))
        .map(|name| name.into_owned())
}

/// Before any handler: 405 for a method the path does not serve, and 400 for a query
/// parameter its route does not take (`?tennant=` must not silently list every tenant's
/// endpoints). A path no route knows goes on to the default service's 404.
pub async fn check_method_and_query<B: actix_web::body::MessageBody + 'static>(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error> {
    use actix_web::ResponseError;
    let Some(route) = route_for(req.method().as_str(), req.path()) else {
        let allowed = allowed_methods(req.path());
        if allowed.is_empty() {
            return next.call(req).await.map(|r| r.map_into_left_body());
        }
        let response = method_not_allowed(req.method().as_str(), req.path(), &allowed);
        return Ok(req.into_response(response.map_into_right_body()));
    };
    if let Some(name) = unknown_query_parameter(route, req.query_string()) {
        let known = if route.query.is_empty() {
            "it takes none".to_string()
        } else {
            format!("it takes {}", route.query.join(", "))
        };
        let error = ApiError::bad_request(
            "unknown_query_parameter",
            format!(
                "{name}: unknown query parameter for {} {}; {known}",
                req.method(),
                req.path()
            ),
        );
        let response = error.error_response().map_into_right_body();
        return Ok(req.into_response(response));
    }
    next.call(req).await.map(|r| r.map_into_left_body())
}

/// Parses the query string into `T` (whose fields are the route's parameters).
fn parse_query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query: {e}")))
}

/// Alive (no token needed).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = views::Health)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: recovered, not shutting down, and storage can write (no fault being ridden out, no
/// writer stuck in an fsync). The body reports each configured source (API.md §15).
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses((status = 200, body = views::Health), (status = 503, body = views::ErrorBody)))]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.check_serving()?;
    if !state.store.healthy() {
        return Err(ApiError::unavailable(
            "storage_unavailable",
            "storage cannot write at the moment; new events are refused",
        ));
    }
    // A source that is down does not make hookd unready: the HTTP API still takes events.
    let sources = state
        .nats
        .as_ref()
        .map(|nats| views::Sources { nats: nats.view() });
    Ok(HttpResponse::Ok().json(views::Health {
        status: "ready".into(),
        sources,
    }))
}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::METRICS.render())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let allowed = allowed_methods(req.path());
    if !allowed.is_empty() {
        return method_not_allowed(req.method().as_str(), req.path(), &allowed);
    }
    ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// Reads a JSON request body of at most `limit` bytes.
async fn read_json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type must be application/json, not {mime:?}"),
            ));
        }
    }
    let too_large = || ApiError::too_large(format!("request body is larger than {limit} bytes"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("bad_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses JSON into `T`; the error names the field at fault (`events[2].type: …`).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], context: &str) -> Result<T, ApiError> {
    let prefix = if context.is_empty() {
        String::new()
    } else {
        format!("{context}: ")
    };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("{prefix}the body is empty; expected a JSON object"),
            ))
        }
        // serde would read an array as a struct's fields in order; no request is an array.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("{prefix}expected a JSON object"),
            ))
        }
    }
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        return Ok(value);
    }
    let (path, inner) = match crate::intake::parse_traced::<T>(bytes) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let code = if inner.is_data() {
        "invalid_field"
    } else {
        "invalid_json"
    };
    let field = match (context, path.as_str()) {
        ("", "") => String::new(),
        ("", p) => format!("{p}: "),
        (c, "") => format!("{c}: "),
        (c, p) => format!("{c}.{p}: "),
    };
    Err(ApiError::bad_request(code, format!("{field}{inner}")))
}

/// A path id of the expected kind, or 404 (an id of the wrong form names nothing).
fn parse_id<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(format!("{what} {raw:?}")))
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn a_known_path_lists_the_methods_it_serves() {
        assert_eq!(
            allowed_methods("/v1/endpoints/ep_1"),
            ["GET", "PATCH", "DELETE"]
        );
        assert_eq!(allowed_methods("/v1/events"), ["POST"]);
        assert!(allowed_methods("/v1/nothing").is_empty());
        assert!(allowed_methods("/v1/endpoints/ep_1/nothing").is_empty());
        assert_eq!(allowed_methods("/v1/events/batch"), ["POST"]);
        assert_eq!(allowed_methods("/v1/events/evt_1"), ["GET"]);
        let unknown_query_parameter = |method, path, query| {
            route_for(method, path).and_then(|r| super::unknown_query_parameter(r, query))
        };
        assert_eq!(
            unknown_query_parameter("GET", "/v1/endpoints", "tennant=a").as_deref(),
            Some("tennant")
        );
        assert_eq!(
            unknown_query_parameter("GET", "/v1/endpoints", "tenant=a"),
            None
        );
        assert_eq!(
            unknown_query_parameter("POST", "/v1/endpoints/ep_1/pause", "x=1").as_deref(),
            Some("x")
        );
    }
}
