//! Bearer tokens: admin tokens may do everything, ingest tokens only post events. Tokens are
//! kept as SHA-256 digests and compared in constant time, so neither their content nor their
//! length leaks through timing.

use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Ingest,
}

pub struct Tokens {
    admin: Vec<[u8; 32]>,
    ingest: Vec<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token of `Authorization`, if any; the scheme is case-insensitive (RFC 9110 §11.1).
fn presented_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
}

fn any_matches(candidates: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    // Every candidate is compared, so the time does not depend on which one matched.
    candidates
        .iter()
        .fold(0u8, |found, c| found | c.ct_eq(presented).unwrap_u8())
        == 1
}

impl Tokens {
    pub fn new(admin: &[String], ingest: &[String]) -> Tokens {
        Tokens {
            admin: admin.iter().map(|t| digest(t)).collect(),
            ingest: ingest.iter().map(|t| digest(t)).collect(),
        }
    }

    /// The first 8 hex digits of the presented token's SHA-256, for operator-action log lines:
    /// it tells tokens apart without revealing one.
    pub fn fingerprint(req: &HttpRequest) -> String {
        presented_token(req).map_or_else(|| "none".to_string(), |t| hex::encode(&digest(t)[..4]))
    }

    /// 401 without a known token, 403 for an ingest token where admin is required.
    pub fn require(&self, req: &HttpRequest, scope: Scope) -> Result<(), ApiError> {
        let presented = presented_token(req).map(digest).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token (Authorization: Bearer <token>)",
            )
        })?;
        if any_matches(&self.admin, &presented) {
            return Ok(());
        }
        if any_matches(&self.ingest, &presented) {
            return match scope {
                Scope::Ingest => Ok(()),
                Scope::Admin => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "an ingest token may only post events",
                )),
            };
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown bearer token",
        ))
    }
}
