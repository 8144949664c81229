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

use crate::auth::{AuthSession, AuthUser};
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
            let current = caller.session_id.as_deref() == Some(s.session_id.as_str());
            session_json(s, Some(current))
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

/// A session as the API shows it, with `current` (whether it is the asking
/// token's) when given.
fn session_json(s: pb::SessionInfo, current: Option<bool>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "session_id": s.session_id,
        "created_at": rfc3339_ms(s.created_at_ms),
        "expires_at": rfc3339_ms(s.expires_at_ms),
        "user_agent": s.user_agent,
    });
    if let Some(current) = current {
        v["current"] = current.into();
    }
    v
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

/// # `DELETE /user`
/// Deletes the caller's account, confirmed by its password (`{"password"}`):
/// it leaves its groups, every session ends (sockets closed with 4001), the
/// profile goes and the username is free again; the messages others
/// received stay with them.
/// - 204.
/// - 401 `invalid_credentials`: wrong password (nothing changes).
/// - 429 `rate_limited`: too many attempts from this address, or too many
///   wrong passwords (locked as a login would be).
pub async fn delete_account(
    State(state): State<EdgeState>,
    ConnectInfo(crate::tls::Peer(peer)): ConnectInfo<crate::tls::Peer>,
    headers: HeaderMap,
    AuthUser(caller): AuthUser,
    body: Body,
) -> Result<StatusCode, ApiError> {
    #[derive(serde::Deserialize)]
    struct Confirm {
        password: String,
    }
    let req: Confirm = json_body(body, state.config.max_body_bytes).await?;
    // A password check like a login's: the same rate and lock, or a stolen
    // token would be a password oracle (and argon2 a CPU drain).
    let addr = state.limits.client_addr(peer, &headers);
    state.limits.password_check(&caller, addr)?;
    let deleted: Result<pb::Deleted, _> = rpc::call(
        &state.nats,
        subject::rpc::DELETE_ACCOUNT,
        &pb::DeleteAccountRequest {
            caller_id: caller.clone(),
            password: req.password,
        },
        state.rpc_timeout(),
    )
    .await;
    if let Err(rpc::RpcError::Remote { code, .. }) = &deleted {
        if code == "invalid_credentials" {
            state.limits.password_check_outcome(&caller, addr, false);
        }
    }
    deleted?;
    Ok(StatusCode::NO_CONTENT)
}

/// # `GET /user/export`
/// Everything the server holds for the caller, as one JSON document
/// (streamed: `{"exported_at","user","sessions","chats":[{"chat","messages":[…]}]}`,
/// every message the caller can read, oldest first). Media bytes are not
/// inlined: each media message has its `url`.
/// - 200 `application/json` (an attachment).
pub async fn export(
    State(state): State<EdgeState>,
    AuthUser(caller): AuthUser,
) -> Result<axum::response::Response, ApiError> {
    state.limits.read(&caller)?;
    // What can fail before the first byte fails with a status.
    let users: pb::Users = rpc::call(
        &state.nats,
        subject::rpc::USERS,
        &pb::UsersRequest {
            user_ids: vec![caller.clone()],
        },
        state.rpc_timeout(),
    )
    .await?;
    let me = users
        .users
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("user_not_found", "no such user"))?;
    let sessions: pb::SessionList = rpc::call(
        &state.nats,
        subject::rpc::SESSIONS,
        &pb::SessionsRequest {
            caller_id: caller.clone(),
        },
        state.rpc_timeout(),
    )
    .await?;
    // Bounded: the writer waits for the client to take each chunk.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if let Err(e) = write_export(&state, &caller, me, sessions, &tx).await {
            tracing::warn!(user = %caller, error = %e, "export cut short");
            let _ = tx.send(Err(std::io::Error::other(e))).await;
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let mut resp = axum::response::Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"msgr-export.json\""),
    );
    Ok(resp)
}

/// Pages through the caller's chats and each chat's history, writing JSON.
async fn write_export(
    state: &EdgeState,
    caller: &str,
    me: pb::User,
    sessions: pb::SessionList,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
) -> Result<(), String> {
    let send = |v: Vec<u8>| async move {
        tx.send(Ok(bytes::Bytes::from(v)))
            .await
            .map_err(|_| "the client went away".to_owned())
    };
    let sessions: Vec<_> = sessions
        .sessions
        .into_iter()
        .map(|s| session_json(s, None))
        .collect();
    let head = serde_json::json!({
        "exported_at": rfc3339_ms(msgr_core::time::now_ms()),
        "user": crate::convert::user(me),
        "sessions": sessions,
    })
    .to_string();
    // Open the object again to append the chats.
    let mut head = head.into_bytes();
    head.pop();
    head.extend_from_slice(br#","chats":["#);
    send(head).await?;
    let mut cursor: Option<String> = None;
    let mut first = true;
    loop {
        let page: pb::ChatPage = rpc::call(
            &state.nats,
            subject::rpc::CHATS,
            &pb::ChatsRequest {
                caller_id: caller.to_owned(),
                limit: 200,
                cursor: cursor.clone(),
            },
            state.rpc_timeout(),
        )
        .await
        .map_err(|e| e.to_string())?;
        for chat in page.chats {
            let (conversation_id, group_id) = (chat.conversation_id.clone(), chat.group_id.clone());
            let mut out = Vec::new();
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(br#"{"chat":"#);
            out.extend(serde_json::to_vec(&crate::convert::chat(chat)).unwrap_or_default());
            out.extend_from_slice(br#","messages":["#);
            send(out).await?;
            let mut after = 0u64;
            let mut first_message = true;
            loop {
                // A group through the group page: it also serves former
                // members what they saw, where history wants a current one.
                let (messages, has_more) = match &group_id {
                    Some(g) => {
                        let p: pb::GroupPage = rpc::call(
                            &state.nats,
                            subject::rpc::GROUP_GET,
                            &pb::GetGroupRequest {
                                caller_id: caller.to_owned(),
                                group_id: g.clone(),
                                limit: 200,
                                before: None,
                                after: Some(after),
                            },
                            state.rpc_timeout(),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        (p.messages, p.has_more)
                    }
                    None => {
                        let p: pb::HistoryPage = rpc::call(
                            &state.nats,
                            subject::rpc::HISTORY,
                            &pb::HistoryRequest {
                                caller_id: caller.to_owned(),
                                conversation_id: conversation_id.clone(),
                                limit: 200,
                                before: None,
                                after: Some(after),
                                changes_after: None,
                            },
                            state.rpc_timeout(),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        (p.messages, p.has_more)
                    }
                };
                let mut out = Vec::new();
                for m in messages {
                    after = after.max(m.seq);
                    if !first_message {
                        out.push(b',');
                    }
                    first_message = false;
                    out.extend(serde_json::to_vec(&crate::convert::message(m)).unwrap_or_default());
                }
                send(out).await?;
                if !has_more {
                    break;
                }
            }
            send(b"]}".to_vec()).await?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    send(b"]}".to_vec()).await
}
