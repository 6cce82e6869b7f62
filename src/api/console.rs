//! `GET /console`: the operator console (API.md §14), one page embedded in the binary. It
//! talks only to this hookd's `/v1` API with a bearer token (no cookies), so it needs no
//! session or CSRF machinery here: these handlers only serve three static files.
//!
//! Invariant: every console response carries the security headers (`secured`, [`CSP`]); the page
//! has no inline script or style, so `default-src 'self'` holds it to this origin.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// Nothing but this origin; no framing, no form posts, no base-URL tricks.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(index))
        .route("/console/", web::get().to(index))
        .route("/console/app.js", web::get().to(app_js))
        .route("/console/app.css", web::get().to(app_css));
}

fn secured(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut r = HttpResponse::Ok().body(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> HttpResponse {
    secured("text/html; charset=utf-8", INDEX)
}

async fn app_js() -> HttpResponse {
    secured("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    secured("text/css; charset=utf-8", APP_CSS)
}
