//! Direct-chat history.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use msgr_core::id;
use msgr_nats::{rpc, subject};
use msgr_schemas::client::HistoryJson;
use msgr_schemas::pb::v1 as pb;

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::routes::{limit_param, num_param};
use crate::state::EdgeState;

/// # `GET /messages/{user_id}/{receiver_id}?limit=&before=&after=`
/// - 200 `{conversation_id, messages, has_more}`, ascending by `seq`. Without
///   `before`/`after`, the latest page.
/// - 403 `forbidden`: the caller is not `user_id`.
/// - 404 `user_not_found`: no such `receiver_id`.
/// - 400 `invalid_query`: bad numbers.
pub async fn history(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path((user_id, receiver_id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HistoryJson>, ApiError> {
    if user_id != caller {
        return Err(ApiError::forbidden());
    }
    state.limits.read(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = limit_param(q.get("limit").map(String::as_str))?;
    let before = num_param(q.get("before").map(String::as_str), "before")?;
    let after = num_param(q.get("after").map(String::as_str), "after")?;
    if !id::is_user_id(&receiver_id) || receiver_id == caller {
        return Err(ApiError::not_found("user_not_found", "no such user"));
    }
    let conversation_id = id::direct_conversation_id(&caller, &receiver_id);
    let page: pb::HistoryPage = rpc::call(
        &state.nats,
        subject::rpc::HISTORY,
        &pb::HistoryRequest {
            caller_id: caller,
            conversation_id,
            limit,
            before,
            after,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(HistoryJson {
        conversation_id: page.conversation_id,
        messages: page
            .messages
            .into_iter()
            .map(crate::convert::message)
            .collect(),
        has_more: page.has_more,
    }))
}
