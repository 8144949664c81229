//! Authentication of requests: `Authorization: Bearer <token>`, or
//! `?token=<token>` (browsers cannot set headers on a WebSocket).
//! The edge only verifies (public key); it never signs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use msgr_core::auth::token::TokenError;

use crate::error::ApiError;
use crate::state::EdgeState;

/// The authenticated caller's user id.
#[derive(Debug, Clone)]
pub struct AuthUser(pub String);

fn token_from(parts: &Parts) -> Option<String> {
    if let Some(h) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    parts.uri.query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            // Tokens are URL-safe base64 plus dots: no decoding needed.
            (k == "token").then(|| v.to_owned())
        })
    })
}

impl FromRequestParts<EdgeState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &EdgeState) -> Result<Self, ApiError> {
        let Some(token) = token_from(parts) else {
            return Err(ApiError::unauthorized(
                "unauthorized",
                "a bearer token is required",
            ));
        };
        match state.verifier.verify(&token) {
            Ok(user) => Ok(Self(user)),
            Err(TokenError::Expired) => Err(ApiError::unauthorized(
                "token_expired",
                "the token has expired",
            )),
            Err(_) => Err(ApiError::unauthorized("unauthorized", "invalid token")),
        }
    }
}
