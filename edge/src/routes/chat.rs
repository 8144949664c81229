//! The chat list.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use msgr_nats::{rpc, subject};
use msgr_schemas::client::ChatsJson;
use msgr_schemas::pb::v1 as pb;

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::routes::limit_param;
use crate::state::EdgeState;

/// # `GET /chat/{user_id}?limit=&cursor=`
/// - 200 `{chats, next_cursor}`, latest activity first.
/// - 403 `forbidden`: only the user themself may read their chat list.
/// - 400 `invalid_query`: bad `limit` or `cursor`.
pub async fn list(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(user_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<ChatsJson>, ApiError> {
    if user_id != caller {
        return Err(ApiError::forbidden());
    }
    state.limits.read(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = limit_param(q.get("limit").map(String::as_str))?;
    let cursor = q.get("cursor").filter(|c| !c.is_empty()).cloned();
    if cursor.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(ApiError::bad_request("invalid_query", "bad cursor"));
    }
    let page: pb::ChatPage = rpc::call(
        &state.nats,
        subject::rpc::CHATS,
        &pb::ChatsRequest {
            caller_id: caller,
            limit,
            cursor,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(ChatsJson {
        chats: page.chats.into_iter().map(crate::convert::chat).collect(),
        next_cursor: page.next_cursor,
    }))
}
