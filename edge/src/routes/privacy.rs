//! Blocking and presence privacy (answered by the workers' account role).

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use msgr_nats::{rpc, subject};
use msgr_schemas::pb::v1 as pb;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::routes::json_body;
use crate::state::EdgeState;

async fn set_block(
    state: &EdgeState,
    caller: String,
    user_id: String,
    block: bool,
) -> Result<Json<Value>, ApiError> {
    if !msgr_core::id::is_user_id(&user_id) {
        return Err(ApiError::not_found("user_not_found", "no such user"));
    }
    let list: pb::BlockList = rpc::call(
        &state.nats,
        subject::rpc::BLOCK,
        &pb::BlockRequest {
            caller_id: caller,
            user_id,
            block,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(json!({ "user_ids": list.user_ids })))
}

/// # `GET /user/blocks`
/// → 200 `{"user_ids"}`: whom the caller blocks, earliest first.
pub async fn list(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
) -> Result<Json<Value>, ApiError> {
    state.limits.read(&caller)?;
    let list: pb::BlockList = rpc::call(
        &state.nats,
        subject::rpc::BLOCKED,
        &pb::BlockedRequest { caller_id: caller },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(json!({ "user_ids": list.user_ids })))
}

/// # `POST /user/blocks` `{"user_id"}`
/// Blocks a user: they can no longer send to the caller in a direct chat
/// (nor start one; their sends get `recipient_unavailable`), nor see the
/// caller's presence. Groups are unaffected. Blocking twice is no error.
/// - 200 `{"user_ids"}`: whom the caller blocks now.
/// - 404 `user_not_found`; 400 `invalid_request` (yourself).
pub async fn block(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Req {
        user_id: String,
    }
    let req: Req = json_body(body, state.config.max_body_bytes).await?;
    set_block(&state, caller, req.user_id, true).await
}

/// # `DELETE /user/blocks/{user_id}`
/// Lifts a block (no error if there was none). → 200 `{"user_ids"}`.
pub async fn unblock(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_block(&state, caller, user_id, false).await
}

fn privacy_json(s: &pb::PresenceSettings) -> Json<Value> {
    Json(json!({ "presence": if s.visible { "everyone" } else { "nobody" } }))
}

/// # `GET /user/privacy`
/// → 200 `{"presence": "everyone" | "nobody"}`: who sees the caller's
/// online state and last seen (everyone they have a chat with, or nobody).
pub async fn get(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
) -> Result<Json<Value>, ApiError> {
    let s: pb::PresenceSettings = rpc::call(
        &state.nats,
        subject::rpc::PRESENCE,
        &pb::PresenceSettingsRequest {
            caller_id: caller,
            visible: None,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(privacy_json(&s))
}

/// # `PUT /user/privacy` `{"presence": "everyone" | "nobody"}`
/// → 200 with the settings now. `nobody` hides the caller's presence at
/// once from everyone watching it. 400 `invalid_request` for another value.
pub async fn set(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Req {
        presence: String,
    }
    let req: Req = json_body(body, state.config.max_body_bytes).await?;
    let visible = match req.presence.as_str() {
        "everyone" => true,
        "nobody" => false,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "presence is \"everyone\" or \"nobody\"",
            ))
        }
    };
    let s: pb::PresenceSettings = rpc::call(
        &state.nats,
        subject::rpc::PRESENCE,
        &pb::PresenceSettingsRequest {
            caller_id: caller,
            visible: Some(visible),
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(privacy_json(&s))
}
