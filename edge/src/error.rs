//! The REST error type: every non-2xx answer is
//! `{"error": {"code": "<snake_case>", "message": "<human text>"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use msgr_nats::rpc::RpcError;
use msgr_schemas::client::{ErrorBody, ErrorDetail};

/// An error answered to a REST client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "you may not read this")
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

/// Maps a worker's refusal (its code) to the HTTP status of API.md.
impl From<RpcError> for ApiError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Remote { code, message } => {
                let status = match code.as_str() {
                    "username_taken" => StatusCode::CONFLICT,
                    "invalid_credentials" => StatusCode::UNAUTHORIZED,
                    "forbidden" | "not_member" | "not_admin" => StatusCode::FORBIDDEN,
                    "not_found" | "user_not_found" | "unknown_conversation" => {
                        StatusCode::NOT_FOUND
                    }
                    "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                Self {
                    status,
                    code,
                    message,
                    retry_after: None,
                }
            }
            RpcError::Unavailable(detail) => {
                tracing::warn!(%detail, "worker service unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "service temporarily unavailable",
                )
            }
            RpcError::BadReply(detail) => {
                tracing::error!(%detail, "bad reply from a worker");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// A rate limit's refusal: 429 `rate_limited` with `Retry-After`.
impl From<crate::limit::Limited> for ApiError {
    fn from(l: crate::limit::Limited) -> Self {
        let secs = l.0.as_secs() + u64::from(l.0.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

/// `axum::extract::Path` whose rejection is the contract's error body
/// (`400 invalid_path`), not the framework's `text/plain` (a path segment
/// that is not valid percent-encoded UTF-8, say).
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| Self(t))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}
