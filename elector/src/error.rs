//! Error responses: every failure the elector answers with is a JSON
//! [`ErrorBody`] with a status a client can act on. Nothing here panics and
//! no internal detail beyond the store's own message is shown.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mpsync_core::wire::{ErrorBody, ErrorCode};

use crate::service::ServiceError;
use crate::store::StoreError;

/// An error answer: a status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and a message for a person.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { status, body: ErrorBody { error: code, message: message.into(), field: None, version: None } }
    }

    /// 400 with the offending field or parameter named.
    pub fn bad(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, code, message);
        e.body.field = Some(field.into());
        e
    }

    /// 404 for a free or absent record, with the version to long-poll on.
    pub fn free(message: impl Into<String>, version: u64) -> Self {
        let mut e = ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message);
        e.body.version = Some(version);
        e
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            // Counted and logged where it is decided.
            ServiceError::InvalidName { .. } => ApiError::bad(ErrorCode::InvalidName, "name", e.to_string()),
            ServiceError::InvalidWatch { field, name, message } => {
                ApiError::bad(if name { ErrorCode::InvalidName } else { ErrorCode::InvalidField }, field, message)
            }
            ServiceError::WatchGone => ApiError::new(StatusCode::GONE, ErrorCode::Gone, e.to_string()),
            ServiceError::TtlTooLong { .. } => ApiError::bad(ErrorCode::InvalidField, "ttl_ms", e.to_string()),
            ServiceError::Store(StoreError::BadCursor(_)) => {
                ApiError::bad(ErrorCode::InvalidQuery, "cursor", e.to_string())
            }
            ServiceError::TooManyLongPolls(_) | ServiceError::TooManySessions(_) | ServiceError::LineFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::Unavailable, e.to_string())
            }
            e => {
                tracing::warn!(error = %e, "store request failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS) {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
