//! `POST /v1/admin/backup`: an online, consistent copy of the database (see
//! [`crate::storage::backup`]), answered once it is complete.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Scope;
use super::views::ErrorBody;
use super::{parse_json, read_json_body, ApiError, AppState};
use crate::storage::backup::BackupError;

const MAX_BODY: usize = 16 * 1024;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupIn {
    /// An absolute path on hookd's host, not existing yet, whose parent directory exists and
    /// is writable by hookd.
    #[schema(min_length = 1)]
    path: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupView {
    path: String,
    /// RocksDB's last sequence number when the copy was cut.
    sequence: u64,
    files: usize,
    bytes: u64,
    took_ms: u64,
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "exists", e.to_string()),
            BackupError::Path(m) => ApiError::invalid("path", m),
            BackupError::Storage(s) => s.into(),
            other => {
                tracing::error!(error = %other, "backup failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "backup_failed",
                    other.to_string(),
                )
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/admin/backup", tag = "admin", request_body = BackupIn,
    security(("bearer" = [])),
    responses((status = 201, body = BackupView), (status = "default", body = ErrorBody)))]
pub async fn backup(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.authorize(&req, Scope::Admin)?;
    let body = read_json_body(&req, payload, MAX_BODY).await?;
    let input: BackupIn = parse_json(&body, "")?;
    if input.path.is_empty() {
        return Err(ApiError::invalid("path", "must not be empty"));
    }
    let path = std::path::PathBuf::from(&input.path);
    tracing::info!(path = %path.display(), "backup requested");
    let done = state.store.call(move |s| Ok(s.backup(&path))).await??;
    tracing::info!(
        path = %done.path.display(), sequence = done.sequence, files = done.files,
        bytes = done.bytes, took_ms = done.took_ms, "backup written"
    );
    Ok(HttpResponse::Created().json(BackupView {
        path: done.path.display().to_string(),
        sequence: done.sequence,
        files: done.files,
        bytes: done.bytes,
        took_ms: done.took_ms,
    }))
}
