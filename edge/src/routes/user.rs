//! Accounts: register and log in (both answered by the account service).

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use msgr_core::time::rfc3339_ms;
use msgr_nats::{rpc, subject};
use msgr_schemas::client::{LoginBody, LoginJson, RegisterBody};
use msgr_schemas::pb::v1 as pb;

use crate::auth::AuthSession;
use crate::error::{ApiError, Path};
use crate::routes::json_body;
use crate::state::EdgeState;

/// # `POST /user/register`
/// - 201 `{user_id, username, display_name}`.
/// - 400 `invalid_username` / `invalid_password` / `invalid_display_name` / `invalid_json`.
/// - 409 `username_taken` (usernames are unique ignoring case).
/// - 429 `rate_limited` (with `Retry-After`): too many from this address.
pub async fn register(
    State(state): State<EdgeState>,
    ConnectInfo(crate::tls::Peer(peer)): ConnectInfo<crate::tls::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    state
        .limits
        .registration(state.limits.client_addr(peer, &headers))?;
    let req: RegisterBody = json_body(body, state.config.max_body_bytes).await?;
    let user: pb::User = rpc::call(
        &state.nats,
        subject::rpc::REGISTER,
        &pb::RegisterRequest {
            username: req.username,
            password: req.password,
            display_name: req.display_name,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(crate::convert::user(user))))
}

/// # `POST /user/login`
/// - 200 `{user_id, token, expires_at}`: a PASETO v4.public token.
/// - 401 `invalid_credentials`: the same for an unknown user and a wrong password.
/// - 429 `rate_limited` (with `Retry-After`): too many attempts from this
///   address, or this account failed too often from it (locked there for
///   30 s, doubling with each further failure, at most 15 min).
pub async fn login(
    State(state): State<EdgeState>,
    ConnectInfo(crate::tls::Peer(peer)): ConnectInfo<crate::tls::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LoginJson>, ApiError> {
    let req: LoginBody = json_body(body, state.config.max_body_bytes).await?;
    let addr = state.limits.client_addr(peer, &headers);
    state.limits.login(&req.username, addr)?;
    let username = req.username.clone();
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let session: Result<pb::Session, _> = rpc::call(
        &state.nats,
        subject::rpc::LOGIN,
        &pb::LoginRequest {
            username: req.username,
            password: req.password,
            user_agent,
        },
        state.rpc_timeout(),
    )
    .await;
    match &session {
        Ok(_) => state.limits.login_outcome(&username, addr, true),
        Err(rpc::RpcError::Remote { code, .. }) if code == "invalid_credentials" => {
            state.limits.login_outcome(&username, addr, false);
        }
        Err(_) => {}
    }
    let session = session?;
    Ok(Json(LoginJson {
        user_id: session.user_id,
        token: session.token,
        expires_at: rfc3339_ms(session.expires_at_ms),
        session_id: Some(session.session_id).filter(|s| !s.is_empty()),
    }))
}

fn session_of(caller: &AuthSession) -> Result<&str, ApiError> {
    caller.session_id.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "no_session",
            "this token predates sessions; log in again to get one",
        )
    })
}

/// # `POST /user/logout`
/// Ends this token's session: every token of it stops working on every
/// edge, and its WebSockets are closed (4001).
/// - 204.
pub async fn logout(
    State(state): State<EdgeState>,
    caller: AuthSession,
) -> Result<StatusCode, ApiError> {
    let sid = session_of(&caller)?.to_owned();
    revoke(&state, &caller.user_id, Some(sid)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /user/sessions`
/// - 200 `{"sessions": [{session_id, created_at, expires_at, user_agent, current}]}`,
///   newest first: the caller's signed-in devices.
pub async fn sessions(
    State(state): State<EdgeState>,
    caller: AuthSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list: pb::SessionList = rpc::call(
        &state.nats,
        subject::rpc::SESSIONS,
        &pb::SessionsRequest {
            caller_id: caller.user_id.clone(),
        },
        state.rpc_timeout(),
    )
    .await?;
    let sessions: Vec<_> = list
        .sessions
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "session_id": s.session_id,
                "created_at": rfc3339_ms(s.created_at_ms),
                "expires_at": rfc3339_ms(s.expires_at_ms),
                "user_agent": s.user_agent,
                "current": caller.session_id.as_deref() == Some(s.session_id.as_str()),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

/// # `DELETE /user/sessions/{session_id}`
/// - 204; 404 `not_found` for a session that is not the caller's live one.
pub async fn revoke_one(
    State(state): State<EdgeState>,
    caller: AuthSession,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    revoke(&state, &caller.user_id, Some(session_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `DELETE /user/sessions`
/// Ends every session of the caller, this one included.
/// - 200 `{"revoked": n}`.
pub async fn revoke_all(
    State(state): State<EdgeState>,
    caller: AuthSession,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = revoke(&state, &caller.user_id, None).await?;
    Ok(Json(serde_json::json!({ "revoked": r.session_ids.len() })))
}

async fn revoke(
    state: &EdgeState,
    user_id: &str,
    session_id: Option<String>,
) -> Result<pb::Revoked, ApiError> {
    Ok(rpc::call(
        &state.nats,
        subject::rpc::REVOKE,
        &pb::RevokeRequest {
            caller_id: user_id.to_owned(),
            session_id,
        },
        state.rpc_timeout(),
    )
    .await?)
}

/// # `POST /user/token`
/// A fresh token for this session, without the password (same session id).
/// - 200 `{user_id, token, expires_at}`.
/// - 401 `session_revoked` once the session is revoked.
pub async fn refresh(
    State(state): State<EdgeState>,
    caller: AuthSession,
) -> Result<Json<LoginJson>, ApiError> {
    let sid = session_of(&caller)?.to_owned();
    let session: pb::Session = rpc::call(
        &state.nats,
        subject::rpc::REFRESH,
        &pb::RefreshRequest {
            caller_id: caller.user_id,
            session_id: sid,
        },
        state.rpc_timeout(),
    )
    .await
    .map_err(|e| match e {
        rpc::RpcError::Remote { code, .. } if code == "not_found" => ApiError::unauthorized(
            "session_revoked",
            "this session was logged out; log in again",
        ),
        e => e.into(),
    })?;
    Ok(Json(LoginJson {
        user_id: session.user_id,
        token: session.token,
        expires_at: rfc3339_ms(session.expires_at_ms),
        session_id: Some(session.session_id).filter(|s| !s.is_empty()),
    }))
}
