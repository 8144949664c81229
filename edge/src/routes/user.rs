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

use crate::error::ApiError;
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
    let session: Result<pb::Session, _> = rpc::call(
        &state.nats,
        subject::rpc::LOGIN,
        &pb::LoginRequest {
            username: req.username,
            password: req.password,
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
    }))
}
