//! The JSON client contract (`docs/API.md`, v1): REST bodies and WebSocket frames.
//!
//! Frames from clients are parsed in two steps by the edge (JSON value, then the
//! typed frame) so that malformed JSON, an unknown `type` and wrong field types
//! each get their own error code.

use serde::{Deserialize, Serialize};

/// `{"error": {"code", "message"}}`: the body of every non-2xx REST response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /user/register` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterBody {
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `POST /user/login` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

/// A user's public profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserJson {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
}

/// `POST /user/login` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginJson {
    pub user_id: String,
    pub token: String,
    pub expires_at: String,
    /// The session (signed-in device) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `media` object of a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MediaJson {
    pub media_id: String,
    pub content_type: String,
    pub size: u64,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

/// A message, in the one shape used everywhere (push, ack source, history).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageJson {
    pub message_id: String,
    pub client_msg_id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub sender_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaJson>,
    pub sent_at: String,
    /// Present on messages the caller sent: `sent`, `delivered` or `read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// What this message replies to, quoted when it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<QuoteJson>,
    /// When its text was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// When it was deleted for everyone (then it has no text and no media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Reactions grouped by emoji, most used first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionJson>,
    /// The conversation's change counter at this message's latest change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rev: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The quote a reply carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuoteJson {
    pub seq: u64,
    pub sender_id: String,
    /// The first 100 characters of its text (cut ones end with "…").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_media: bool,
    /// The quoted message was deleted for everyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Everyone who reacted to a message with one emoji.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReactionJson {
    pub emoji: String,
    pub count: u64,
    pub user_ids: Vec<String>,
}

/// `GET /messages/{user_id}/{receiver_id}` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryJson {
    pub conversation_id: String,
    pub messages: Vec<MessageJson>,
    pub has_more: bool,
    /// The conversation's change counter now: ask
    /// `GET /conversations/{id}/changes?after=<rev>` later to catch up on
    /// edits, deletions and reactions.
    #[serde(default)]
    pub rev: u64,
}

/// One entry of the chat list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatJson {
    pub conversation_id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<MessageJson>,
    pub last_seq: u64,
    pub unread_count: u64,
    pub updated_at: String,
}

/// `GET /chat/{user_id}` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatsJson {
    pub chats: Vec<ChatJson>,
    pub next_cursor: Option<String>,
}

/// Receipt status as spelled on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatusJson {
    Delivered,
    Read,
}

/// `{"type":"send",…}` from a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendFrame {
    pub client_msg_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// The seq of an earlier message of the conversation this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_seq: Option<u64>,
}

/// `{"type":"edit",…}`, `{"type":"delete",…}` and `{"type":"react",…}` from
/// a client: a change to the message `seq` of `conversation_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeFrame {
    pub client_msg_id: String,
    pub conversation_id: String,
    pub seq: u64,
    /// The new text (`edit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The reaction (`react`); `null` or absent removes the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

/// `{"type":"presence","user_ids":[…]}` from a client: watch these users'
/// presence (replacing what this connection watched before).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceFrame {
    pub user_ids: Vec<String>,
}

/// `{"type":"receipt",…}` from a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptFrame {
    pub conversation_id: String,
    pub status: ReceiptStatusJson,
    pub up_to_seq: u64,
}

/// `{"type":"typing",…}` from a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypingFrame {
    pub conversation_id: String,
}

/// Frames a server pushes to a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Ack {
        client_msg_id: String,
        message_id: String,
        conversation_id: String,
        seq: u64,
        sent_at: String,
    },
    Message {
        message: Box<MessageJson>,
    },
    Receipt {
        conversation_id: String,
        user_id: String,
        status: ReceiptStatusJson,
        up_to_seq: u64,
        at: String,
    },
    Typing {
        conversation_id: String,
        user_id: String,
    },
    /// A message changed: edited, deleted for everyone, or reacted to.
    MessageUpdate {
        /// `edited`, `deleted` or `reaction`.
        change: String,
        actor_id: String,
        /// The actor's id for the change (to match it to the request).
        client_msg_id: String,
        /// The message as it is now.
        message: Box<MessageJson>,
    },
    /// A watched user's presence. `online` false with no `last_seen`:
    /// unknown or hidden.
    Presence {
        user_id: String,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<String>,
    },
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        /// The conversation of a refused receipt (which has no id of its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation_id: Option<String>,
    },
    Pong,
}
