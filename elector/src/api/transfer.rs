//! `POST /v1/elections/{name}/transfer`: ask the leader to hand over.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use mpsync_core::wire::{ErrorCode, Kind, TransferRequest};

use super::{Shared, conflict, key, read_json};
use crate::error::ApiError;
use crate::service::TransferResult;

/// 200 with the leader's view (its `transfer` set), 409 when nobody leads
/// or `from` does not (or `to` already does), 400 for a bad field.
pub(super) async fn transfer(State(s): Shared, path: Result<Path<String>, PathRejection>, body: Body) -> Response {
    let result = async {
        let key = key(&s, Kind::Election, path)?;
        let request: TransferRequest = read_json(body, r#"{"to":"replica-2"}"#).await?;
        request.validate().map_err(|e| ApiError::bad(ErrorCode::InvalidField, e.field, e.message))?;
        Ok::<_, ApiError>(match s.transfer(&key, &request).await? {
            TransferResult::Asked(lease) => Json(lease).into_response(),
            TransferResult::Refused(view) => conflict(view),
        })
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
