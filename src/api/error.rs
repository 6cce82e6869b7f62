//! The one error shape of the API: `{"error": {"code": "...", "message": "..."}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::dispatch::EndpointChangeError;
use crate::intake::IntakeError;
use crate::storage::StorageError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 for a value that is present but wrong; the message starts with the field's name.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{field}: {message}"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what}"))
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.view()).unwrap_or_default()
    }

    /// The error object as a typed view (a batch item's refusal).
    pub fn view(&self) -> super::views::ErrorBody {
        super::views::ErrorBody {
            error: super::views::ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        // RFC 6750: a 401 names the scheme it wants.
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(self.body())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if let StorageError::DiskFull { .. } = e {
            return ApiError::unavailable("disk_full", e.to_string());
        }
        // A fault being ridden out was logged once when it began (storage::health).
        if let StorageError::Unavailable(_) = e {
            return ApiError::unavailable("storage_unavailable", e.to_string());
        }
        tracing::error!(error = %e, "storage error while serving a request");
        ApiError::unavailable("storage_unavailable", e.to_string())
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid { field, message } => ApiError::invalid(&field, message),
            IntakeError::UnknownType(m) => ApiError::bad_request("unknown_event_type", m),
            IntakeError::Malformed(m) => ApiError::bad_request("invalid_json", m),
            IntakeError::SchemaViolation(m) => ApiError::bad_request("schema_violation", m),
            IntakeError::TooLarge(m) => ApiError::too_large(m),
        }
    }
}

impl From<EndpointChangeError> for ApiError {
    fn from(e: EndpointChangeError) -> Self {
        match e {
            EndpointChangeError::NotFound(id) => ApiError::not_found(format!("endpoint {id}")),
            EndpointChangeError::Limit { .. } => {
                ApiError::new(StatusCode::CONFLICT, "endpoint_limit", e.to_string())
            }
            EndpointChangeError::Invalid { field, message } => ApiError::invalid(&field, message),
            EndpointChangeError::Storage(s) => s.into(),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::unavailable("shutting_down", format!("dispatcher unavailable: {e}"))
    }
}
