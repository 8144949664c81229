//! User lookup: public profile fields (`user_id`, `username`, `display_name`)
//! only, for finding people to chat with and naming senders and members.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use msgr_core::id;
use msgr_nats::{rpc, subject};
use msgr_schemas::pb::v1 as pb;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::{ApiError, Path};
use crate::state::EdgeState;

/// Most ids one `?ids=` lookup may name.
const MAX_IDS: usize = 200;

/// # `GET /users?query=<prefix>&limit=` or `GET /users?ids=<id>,<id>,…`
/// - `query`: users whose username starts with it (any case), in username
///   order; `limit` default 20, at most 50.
/// - `ids`: those users (unknown ids are left out), at most 200 ids.
/// - 200 `{"users":[{user_id, username, display_name}]}`.
/// - 400 `invalid_query`: neither or both given, an empty or impossible
///   prefix, too many ids, a bad `limit`.
pub async fn find(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    state.limits.lookup(&caller)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let users: pb::Users = match (q.get("query"), q.get("ids")) {
        (Some(prefix), None) => {
            let limit = match crate::routes::num_param(q.get("limit").map(String::as_str), "limit")?
            {
                None => 20,
                Some(n) => u32::try_from(n.clamp(1, 50)).unwrap_or(50),
            };
            rpc::call(
                &state.nats,
                subject::rpc::USER_SEARCH,
                &pb::UserSearchRequest {
                    prefix: prefix.clone(),
                    limit,
                },
                state.rpc_timeout(),
            )
            .await?
        }
        (None, Some(ids)) => {
            let ids: Vec<String> = ids
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if ids.len() > MAX_IDS {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("at most {MAX_IDS} ids per lookup"),
                ));
            }
            lookup(&state, ids).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give either query=<username prefix> or ids=<id>,<id>,…",
            ))
        }
    };
    let users: Vec<_> = users.users.into_iter().map(crate::convert::user).collect();
    Ok(Json(json!({ "users": users })))
}

/// # `GET /users/{user_id}`
/// - 200 `{user_id, username, display_name}`; 404 `not_found`.
pub async fn get(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
    Path(user_id): Path<String>,
) -> Result<Json<msgr_schemas::client::UserJson>, ApiError> {
    state.limits.lookup(&caller)?;
    if !id::is_user_id(&user_id) {
        return Err(ApiError::not_found("not_found", "no such user"));
    }
    lookup(&state, vec![user_id])
        .await?
        .users
        .into_iter()
        .next()
        .map(|u| Json(crate::convert::user(u)))
        .ok_or_else(|| ApiError::not_found("not_found", "no such user"))
}

async fn lookup(state: &EdgeState, user_ids: Vec<String>) -> Result<pb::Users, ApiError> {
    Ok(rpc::call(
        &state.nats,
        subject::rpc::USERS,
        &pb::UsersRequest { user_ids },
        state.rpc_timeout(),
    )
    .await?)
}
