//! REST routes, one module per resource.

pub mod chat;
pub mod groups;
pub mod health;
pub mod media;
pub mod messages;
pub mod privacy;
pub mod user;
pub mod users;

use axum::body::Body;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads a bounded JSON body: 413 past `limit`, 400 `invalid_json` for bad
/// syntax, 400 `invalid_request` for a valid document of the wrong shape.
pub(crate) async fn json_body<T: DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body too large",
        )
    })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
}

/// Parses an optional numeric query parameter; 400 `invalid_query` if not a number.
pub(crate) fn num_param(raw: Option<&str>, name: &str) -> Result<Option<u64>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        // Seqs are stored as SQLite integers, so at most i64::MAX.
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{name} must be an integer from 0 to 2^63-1"),
                )
            }),
    }
}

/// `limit`: default 50, at most 200, at least 1.
pub(crate) fn limit_param(raw: Option<&str>) -> Result<u32, ApiError> {
    match num_param(raw, "limit")? {
        None => Ok(50),
        Some(0) => Err(ApiError::bad_request(
            "invalid_query",
            "limit must be at least 1",
        )),
        Some(n) => Ok(u32::try_from(n.min(200)).unwrap_or(200)),
    }
}
