//! `GET /v1/history` (changes of holder across names, oldest first, with
//! `after=` long-polls) and `GET /v1/{locks,elections}/{name}/history` (one
//! name's last changes): this elector's history, see `crate::history`.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mpsync_core::wire::{ErrorCode, Kind, MAX_WAIT_MS};

use super::{Shared, key};
use crate::error::ApiError;

/// Changes in one answer when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most changes in one answer.
pub const MAX_LIMIT: usize = 1000;

fn off() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "this elector keeps no history (--history 0)")
}

/// `?after=SEQ&timeout_ms=MS&limit=N`.
fn parse_query(query: Option<&str>) -> Result<(u64, Duration, usize), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, "query", format!("the query string is malformed: {e}")))?;
    let number = |param: &str, value: &str, what: &str| {
        value.parse::<u64>().map_err(|_| {
            ApiError::bad(ErrorCode::InvalidQuery, param, format!("{param} is {value:?}; it must be {what}"))
        })
    };
    let (mut after, mut timeout_ms, mut limit) = (0, 0, DEFAULT_LIMIT);
    for (param, value) in pairs {
        match param.as_str() {
            "after" => after = number("after", &value, "a whole number (the `next` of a previous answer)")?,
            "timeout_ms" => {
                let what = format!("a whole number of milliseconds, at most {MAX_WAIT_MS}");
                timeout_ms = number("timeout_ms", &value, &what)?;
                if timeout_ms > MAX_WAIT_MS {
                    return Err(ApiError::bad(
                        ErrorCode::InvalidQuery,
                        "timeout_ms",
                        format!("timeout_ms is {value:?}; it must be {what}"),
                    ));
                }
            }
            "limit" => {
                let what = format!("a whole number from 1 to {MAX_LIMIT}");
                limit = number("limit", &value, &what)
                    .ok()
                    .and_then(|l| usize::try_from(l).ok())
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad(
                            ErrorCode::InvalidQuery,
                            "limit",
                            format!("limit is {value:?}; it must be {what}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::bad(
                    ErrorCode::InvalidQuery,
                    other,
                    format!("unknown query parameter {other:?}; the history takes `after`, `timeout_ms` and `limit`"),
                ));
            }
        }
    }
    Ok((after, Duration::from_millis(timeout_ms), limit))
}

/// `GET /v1/history`.
pub(super) async fn changes(State(s): Shared, RawQuery(q): RawQuery) -> Response {
    let result = async {
        let (after, timeout, limit) = parse_query(q.as_deref())?;
        let page = s.history_after(after, limit, timeout).await?.ok_or_else(off)?;
        Ok::<_, ApiError>(Json(page).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/{locks,elections}/{name}/history`.
pub(super) async fn of_name(
    kind: Kind,
    State(s): Shared,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let result = async {
        let key = key(&s, kind, path)?;
        if let Some(param) = q.as_deref().and_then(|q| q.split('&').find(|p| !p.is_empty())) {
            let param = param.split('=').next().unwrap_or(param);
            return Err(ApiError::bad(
                ErrorCode::InvalidQuery,
                param,
                format!("unknown query parameter {param:?}; a name's history takes none"),
            ));
        }
        Ok(Json(s.history_of(&key).ok_or_else(off)?).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_query_has_defaults_and_names_the_bad_parameter() {
        assert_eq!(parse_query(None).unwrap(), (0, Duration::ZERO, DEFAULT_LIMIT));
        assert_eq!(parse_query(Some("after=12&timeout_ms=500&limit=3")).unwrap(), (12, Duration::from_millis(500), 3));
        for (query, field) in [
            ("after=-1", "after"),
            ("timeout_ms=soon", "timeout_ms"),
            ("timeout_ms=300001", "timeout_ms"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("wait=3", "wait"),
        ] {
            let e = parse_query(Some(query)).unwrap_err();
            assert_eq!((e.status(), e.body().field.as_deref()), (StatusCode::BAD_REQUEST, Some(field)), "{query}");
        }
    }
}
