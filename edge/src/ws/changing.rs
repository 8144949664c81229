//! Changes to sent messages: `edit`, `delete` (for everyone) and `react`
//! frames, published to the conversation's partition like sends so they
//! take their place in its order. The workers decide (only the sender edits
//! or deletes, within the window; only members react); the answer is a
//! `message_update` to every member's connections, or an `error` with the
//! `client_msg_id` to the connection that asked.

use std::sync::Arc;

use msgr_core::id;
use msgr_schemas::client::ChangeFrame;
use msgr_schemas::pb::v1 as pb;

use super::frame::{Change, FrameError};
use super::sending::sending_error;
use super::session::{error_frame, Session};
use crate::state::EdgeState;

/// # `{"type":"edit"|"delete"|"react"}`
/// Errors here: `unknown_conversation`, `not_member` (a direct chat not
/// the caller's), `rate_limited`, `unavailable`; the workers answer the rest.
pub(super) async fn change(
    state: &EdgeState,
    session: &Arc<Session>,
    kind: Change,
    f: ChangeFrame,
) -> Result<(), FrameError> {
    let me = session.user_id.clone();
    let cmid = f.client_msg_id;
    let conv = f.conversation_id;
    if !id::is_conversation_id(&conv) {
        return Err(sending_error(
            "unknown_conversation",
            "no such conversation",
            &cmid,
        ));
    }
    if let Some((a, b)) = id::direct_members(&conv) {
        if a != me && b != me {
            return Err(sending_error(
                "not_member",
                "you are not a member of this conversation",
                &cmid,
            ));
        }
    }
    if !session.track_change(&cmid) {
        return Err(sending_error(
            "rate_limited",
            "too many changes awaiting an answer",
            &cmid,
        ));
    }
    if state.limits.send(&me).is_err() {
        session.take_change(&cmid);
        return Err(sending_error(
            "rate_limited",
            "too many messages; retry later with the same client_msg_id",
            &cmid,
        ));
    }
    let change = match kind {
        Change::Edit => pb::change_command::Change::EditText(f.text.unwrap_or_default()),
        Change::Delete => pb::change_command::Change::Delete(true),
        Change::React => pb::change_command::Change::ReactEmoji(f.emoji.unwrap_or_default()),
    };
    let cmd = pb::ChangeCommand {
        actor_id: me.clone(),
        client_msg_id: cmid.clone(),
        conversation_id: conv.clone(),
        seq: f.seq,
        change: Some(change),
        received_at_ms: msgr_core::time::now_ms(),
    };
    let partition = id::partition_of(&conv, state.partitions);
    let Ok(ack) = state
        .commands
        .submit(partition, pb::command::Command::Change(cmd))
        .await
    else {
        session.take_change(&cmid);
        return Err(sending_error(
            "unavailable",
            "could not accept the change; retry",
            &cmid,
        ));
    };
    let session = Arc::clone(session);
    tokio::spawn(async move {
        if !matches!(ack.await, Ok(Ok(_))) && session.take_change(&cmid) {
            session.post(error_frame(sending_error(
                "unavailable",
                "could not accept the change; retry with the same client_msg_id",
                &cmid,
            )));
        }
    });
    Ok(())
}
