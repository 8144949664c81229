//! Accounts: register and log in (both answered by the account service).

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
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
pub async fn register(
    State(state): State<EdgeState>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
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
pub async fn login(
    State(state): State<EdgeState>,
    body: Body,
) -> Result<Json<LoginJson>, ApiError> {
    let req: LoginBody = json_body(body, state.config.max_body_bytes).await?;
    let session: pb::Session = rpc::call(
        &state.nats,
        subject::rpc::LOGIN,
        &pb::LoginRequest {
            username: req.username,
            password: req.password,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(LoginJson {
        user_id: session.user_id,
        token: session.token,
        expires_at: rfc3339_ms(session.expires_at_ms),
    }))
}
