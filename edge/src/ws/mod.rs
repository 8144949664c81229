//! `WS /messages/send`: one socket per device carries both directions.
//!
//! # Layout
//! - [`frame`]: parsing and validating client frames.
//! - [`session`]: one connection, served by one task.
//! - [`mailbox`]: a connection's bounded queue of frames to write.
//! - [`inbox`]: this edge's per-user inbox subscriptions, shared by a user's devices.
//! - `sending`: sends and their lost-ack answering; `changing`: edits,
//!   deletes and reactions.
//! - [`presence`]: who is online across edges, and who watches whom.

mod changing;
mod frame;
mod inbox;
mod mailbox;
pub mod presence;
mod routes;
mod sending;
mod session;

pub use inbox::{Inbox, InboxMode};
pub use presence::Presence;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fastwebsockets::upgrade::IncomingUpgrade;

use crate::auth::WsAuthUser;
use crate::error::ApiError;
use crate::state::EdgeState;

/// # `WS /messages/send`
/// - 401 `unauthorized` / `token_expired` before the upgrade without a valid token
///   (header, or `?token=` for browsers).
/// - 429 `too_many_connections` (with `Retry-After`) when the user already
///   holds `connections_per_user` sockets on this edge.
/// - 503 `too_many_connections` when this edge is full.
pub async fn upgrade(
    State(state): State<EdgeState>,
    auth: Result<WsAuthUser, ApiError>,
    ws: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    let WsAuthUser {
        user_id,
        session_id,
    } = match auth {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let Ok(ws) = ws else {
        return ApiError::bad_request("not_websocket", "this endpoint needs a WebSocket upgrade")
            .into_response();
    };
    let Some(place) = state.limits.open_connection(&user_id) else {
        return ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                "this account has too many connections open here; close one",
            )
        }
        .into_response();
    };
    let Ok(permit) = std::sync::Arc::clone(&state.connections).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "edge is full; retry later",
        )
        .into_response();
    };
    let (response, fut) = match ws.upgrade() {
        Ok(x) => x,
        Err(e) => return ApiError::bad_request("not_websocket", e.to_string()).into_response(),
    };
    let tracker = state.tracker.clone();
    let task = async move {
        match fut.await {
            Ok(mut ws) => {
                ws.set_auto_close(true);
                ws.set_auto_pong(true);
                ws.set_max_message_size(state.config.max_frame_bytes);
                session::run(state, user_id, session_id, ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
        drop(permit);
        drop(place);
    };
    tracker.spawn(task);
    response.into_response()
}
