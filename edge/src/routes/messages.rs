//! Direct-chat history, and what changed in any conversation since a rev.

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
            changes_after: None,
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(history_json(page)))
}

fn history_json(page: pb::HistoryPage) -> HistoryJson {
    HistoryJson {
        conversation_id: page.conversation_id,
        messages: page
            .messages
            .into_iter()
            .map(crate::convert::message)
            .collect(),
        has_more: page.has_more,
        rev: page.rev,
    }
}

/// # `GET /conversations/{conversation_id}/changes?after=&limit=`
/// The messages of a direct chat or group that were edited, deleted or
/// reacted to after rev `after` (default 0), as they are now, ascending by
/// `rev`, each once; `rev` is the conversation's counter now. A client that
/// was offline calls it with the `rev` it last saw (from a page, or a
/// `message_update`) and ends in the state of one that saw every event.
/// - 403 `forbidden` / 404 `not_found`: not a conversation of the caller's.
/// - 400 `invalid_query`: bad numbers.
pub async fn changes(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(conversation_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<HistoryJson>, ApiError> {
    state.limits.read(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = limit_param(q.get("limit").map(String::as_str))?;
    let after = num_param(q.get("after").map(String::as_str), "after")?.unwrap_or(0);
    if !id::is_conversation_id(&conversation_id) {
        return Err(ApiError::not_found("not_found", "no such conversation"));
    }
    let page: pb::HistoryPage = rpc::call(
        &state.nats,
        subject::rpc::HISTORY,
        &pb::HistoryRequest {
            caller_id: caller,
            conversation_id,
            limit,
            before: None,
            after: None,
            changes_after: Some(after),
        },
        state.rpc_timeout(),
    )
    .await?;
    Ok(Json(history_json(page)))
}
