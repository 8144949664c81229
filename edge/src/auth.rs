//! Authentication of requests: `Authorization: Bearer <token>`; on the
//! WebSocket upgrade also `?token=<token>` (browsers cannot set headers
//! there). Nowhere else: a token in a URL ends up in logs, histories and
//! `Referer` headers. The edge only verifies (public key); it never signs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use msgr_core::auth::token::{TokenError, Verified};

use crate::error::ApiError;
use crate::state::EdgeState;

/// The authenticated caller's user id (bearer header only).
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

/// The caller of the WebSocket upgrade: bearer header or `?token=`.
#[derive(Debug, Clone)]
pub struct WsAuthUser {
    pub user_id: String,
    pub session_id: Option<String>,
}

/// The caller and the session its token belongs to (bearer header only).
#[derive(Debug, Clone)]
pub struct AuthSession {
    pub user_id: String,
    /// `None` for a token made before sessions existed.
    pub session_id: Option<String>,
}

fn token_from(parts: &Parts, query_allowed: bool) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    if !query_allowed {
        return None;
    }
    parts.uri.query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            // Tokens are URL-safe base64 plus dots: no decoding needed.
            (k == "token").then(|| v.to_owned())
        })
    })
}

fn authenticate(
    parts: &Parts,
    state: &EdgeState,
    query_allowed: bool,
) -> Result<Verified, ApiError> {
    let Some(token) = token_from(parts, query_allowed) else {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "a bearer token is required (Authorization: Bearer <token>)",
        ));
    };
    match state.verifier.verify_session(&token) {
        Ok(v)
            if v.session_id
                .as_deref()
                .is_some_and(|s| state.revoked.contains(s)) =>
        {
            Err(ApiError::unauthorized(
                "session_revoked",
                "this session was logged out; log in again",
            ))
        }
        Ok(v) => Ok(v),
        Err(TokenError::Expired) => Err(ApiError::unauthorized(
            "token_expired",
            "the token has expired",
        )),
        Err(_) => Err(ApiError::unauthorized("unauthorized", "invalid token")),
    }
}

impl FromRequestParts<EdgeState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &EdgeState) -> Result<Self, ApiError> {
        authenticate(parts, state, false).map(|v| Self(v.user_id))
    }
}

impl FromRequestParts<EdgeState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &EdgeState) -> Result<Self, ApiError> {
        authenticate(parts, state, false).map(|v| Self {
            user_id: v.user_id,
            session_id: v.session_id,
        })
    }
}

impl FromRequestParts<EdgeState> for WsAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &EdgeState) -> Result<Self, ApiError> {
        authenticate(parts, state, true).map(|v| Self {
            user_id: v.user_id,
            session_id: v.session_id,
        })
    }
}
