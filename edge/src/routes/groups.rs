//! Groups: create, read, add, remove/leave, and per-member receipts of a message.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use msgr_core::id;
use msgr_nats::{rpc, subject};
use msgr_schemas::pb::v1 as pb;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::routes::{json_body, limit_param, num_param};
use crate::state::EdgeState;

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct MemberBody {
    user_id: String,
}

/// `{"group_id","conversation_id","name","members":[{"user_id","role"}]}`.
pub(crate) fn group_json(g: &pb::Group) -> Value {
    json!({
        "group_id": g.group_id,
        "conversation_id": g.group_id,
        "name": g.name,
        "created_by": g.created_by,
        "members": g.members.iter().map(|m| json!({"user_id": m.user_id, "role": m.role})).collect::<Vec<_>>(),
    })
}

fn check_group_id(group_id: &str) -> Result<(), ApiError> {
    if id::is_group_id(group_id) {
        Ok(())
    } else {
        Err(ApiError::not_found("not_found", "no such group"))
    }
}

/// # `POST /groups/create`
/// `{"name","members":[user_id…]}` → 201 with the group; the caller is its admin.
/// - 400 `invalid_name`, `user_not_found` (a member id that is no user),
///   `too_many_members`, `invalid_json`, `invalid_request`.
pub async fn create(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: CreateBody = json_body(body, state.config.max_body_bytes).await?;
    let g: pb::Group = rpc::call(
        &state.nats,
        subject::rpc::GROUP_CREATE,
        &pb::CreateGroupRequest {
            caller_id: caller,
            name: req.name,
            member_ids: req.members,
        },
        state.rpc_timeout(),
    )
    .await
    .map_err(bad_member_is_400)?;
    Ok((StatusCode::CREATED, Json(group_json(&g))))
}

/// In a create body an unknown member is a bad request, not a missing resource.
fn bad_member_is_400(e: rpc::RpcError) -> ApiError {
    let mut e = ApiError::from(e);
    if matches!(e.code.as_str(), "user_not_found" | "too_many_members") {
        e.status = StatusCode::BAD_REQUEST;
    }
    e
}

/// # `GET /groups/{group_id}?limit=&before=&after=`
/// → `{"group","messages","has_more","rev"}`. Members only (403 `forbidden`), and a
/// removed member sees only what was sent while they were in. 404 `not_found`.
pub async fn get(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(group_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.limits.read(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = limit_param(q.get("limit").map(String::as_str))?;
    let before = num_param(q.get("before").map(String::as_str), "before")?;
    let after = num_param(q.get("after").map(String::as_str), "after")?;
    check_group_id(&group_id)?;
    let page: pb::GroupPage = rpc::call(
        &state.nats,
        subject::rpc::GROUP_GET,
        &pb::GetGroupRequest {
            caller_id: caller,
            group_id,
            limit,
            before,
            after,
        },
        state.rpc_timeout(),
    )
    .await?;
    let group = page.group.as_ref().map(group_json).unwrap_or(Value::Null);
    let messages: Vec<_> = page
        .messages
        .into_iter()
        .map(crate::convert::message)
        .collect();
    Ok(Json(
        json!({"group": group, "messages": messages, "has_more": page.has_more, "rev": page.rev}),
    ))
}

/// # `POST /groups/{group_id}/add` `{"user_id"}`
/// → 200 with the group. Admins only: 403 `not_admin` (403 `forbidden` for
/// non-members), 404 `not_found` / `user_not_found`, 400 `too_many_members`.
pub async fn add(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(group_id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let req: MemberBody = json_body(body, state.config.max_body_bytes).await?;
    check_group_id(&group_id)?;
    let g: pb::Group = rpc::call(
        &state.nats,
        subject::rpc::GROUP_ADD,
        &pb::GroupMemberRequest {
            caller_id: caller,
            group_id,
            user_id: req.user_id,
        },
        state.rpc_timeout(),
    )
    .await
    .map_err(|e| {
        let mut e = ApiError::from(e);
        if e.code == "too_many_members" {
            e.status = StatusCode::BAD_REQUEST;
        }
        e
    })?;
    Ok(Json(group_json(&g)))
}

/// # `DELETE /groups/{group_id}/remove` `{"user_id"}` or `?user_id=`
/// → 200 with the group. Admins remove anyone, anyone removes themself; the
/// last admin leaving promotes the oldest member. 403 `not_admin` /
/// `forbidden`, 404 `not_found` / `not_member`.
pub async fn remove(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(group_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let user_id = match q.get("user_id") {
        Some(u) => u.clone(),
        None => {
            json_body::<MemberBody>(body, state.config.max_body_bytes)
                .await?
                .user_id
        }
    };
    check_group_id(&group_id)?;
    let g: pb::Group = rpc::call(
        &state.nats,
        subject::rpc::GROUP_REMOVE,
        &pb::GroupMemberRequest {
            caller_id: caller,
            group_id,
            user_id,
        },
        state.rpc_timeout(),
    )
    .await
    .map_err(|e| {
        let mut e = ApiError::from(e);
        if e.code == "not_member" {
            e.status = StatusCode::NOT_FOUND;
        }
        e
    })?;
    Ok(Json(group_json(&g)))
}

/// # `GET /groups/{group_id}/messages/{seq}/receipts`
/// → `{"seq","sender_id","members":[{"user_id","delivered","read"}]}` for every
/// member who was in the group when the message was sent (sender excluded):
/// the "message info" screen. 404 `not_found` if the caller cannot see it.
pub async fn receipts(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path((group_id, seq)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_group_id(&group_id)?;
    let seq = num_param(Some(&seq), "seq")?.unwrap_or(0);
    let r: pb::MessageReceipts = rpc::call(
        &state.nats,
        subject::rpc::GROUP_RECEIPTS,
        &pb::MessageReceiptsRequest {
            caller_id: caller,
            group_id,
            seq,
        },
        state.rpc_timeout(),
    )
    .await?;
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| json!({"user_id": m.user_id, "delivered": m.delivered, "read": m.read}))
        .collect();
    Ok(Json(
        json!({"seq": r.seq, "sender_id": r.sender_id, "members": members}),
    ))
}
