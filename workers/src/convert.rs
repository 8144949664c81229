//! Domain ⇄ protobuf conversions for the bus (the only place they live).

use msgr_core::store::{
    ChatEntry, GroupInfo, MediaRecord, MessageStatus, MessageView, ReceiptKind, StoredMessage,
    Target, UserRecord,
};
use msgr_schemas::pb::v1 as pb;

/// A stored message as published on the bus.
pub(crate) fn message(m: &StoredMessage, status: Option<MessageStatus>) -> pb::StoredMessage {
    pb::StoredMessage {
        message_id: m.message_id.clone(),
        client_msg_id: m.client_msg_id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq: m.seq,
        sender_id: m.sender_id.clone(),
        target: Some(match &m.target {
            Target::User(u) => pb::stored_message::Target::ToUser(u.clone()),
            Target::Group(g) => pb::stored_message::Target::ToGroup(g.clone()),
        }),
        text: m.text.clone(),
        media: m.media.as_ref().map(media),
        sent_at_ms: m.sent_at_ms,
        status: match status {
            None => pb::MessageStatus::Unspecified,
            Some(MessageStatus::Sent) => pb::MessageStatus::Sent,
            Some(MessageStatus::Delivered) => pb::MessageStatus::Delivered,
            Some(MessageStatus::Read) => pb::MessageStatus::Read,
        } as i32,
        reply_to: m.reply_to.as_ref().map(|q| pb::Quote {
            seq: q.seq,
            sender_id: q.sender_id.clone(),
            text: q.text.clone(),
            has_media: q.has_media,
            deleted: q.deleted,
        }),
        edited_at_ms: m.edited_at_ms,
        deleted_at_ms: m.deleted_at_ms,
        reactions: m
            .reactions
            .iter()
            .map(|r| pb::Reaction {
                user_id: r.user_id.clone(),
                emoji: r.emoji.clone(),
            })
            .collect(),
        rev: m.rev,
    }
}

/// A message with the caller's view of its status.
pub(crate) fn view(v: &MessageView) -> pb::StoredMessage {
    message(&v.message, v.status)
}

pub(crate) fn receipt_status(k: ReceiptKind) -> pb::ReceiptStatus {
    match k {
        ReceiptKind::Delivered => pb::ReceiptStatus::Delivered,
        ReceiptKind::Read => pb::ReceiptStatus::Read,
    }
}

pub(crate) fn user(u: &UserRecord) -> pb::User {
    pb::User {
        user_id: u.user_id.clone(),
        username: u.username.clone(),
        display_name: u.display_name.clone(),
    }
}

pub(crate) fn chat(c: &ChatEntry) -> pb::Chat {
    pb::Chat {
        conversation_id: c.conversation_id.clone(),
        kind: c.kind.as_str().to_owned(),
        peer_id: c.peer_id.clone(),
        group_id: c.group_id.clone(),
        title: c.title.clone(),
        last_message: c.last_message.as_ref().map(view),
        last_seq: c.last_seq,
        unread_count: c.unread_count,
        updated_at_ms: c.updated_at_ms,
    }
}

pub(crate) fn media(m: &MediaRecord) -> pb::Media {
    pb::Media {
        media_id: m.media_id.clone(),
        content_type: m.content_type.clone(),
        size: m.size,
        has_thumbnail: m.has_thumbnail,
        sha256: m.sha256.clone(),
    }
}

pub(crate) fn group(g: &GroupInfo) -> pb::Group {
    pb::Group {
        group_id: g.group_id.clone(),
        name: g.name.clone(),
        created_by: g.created_by.clone(),
        members: g
            .members
            .iter()
            .map(|m| pb::GroupMember {
                user_id: m.user_id.clone(),
                role: m.role.as_str().to_owned(),
                joined_at_ms: m.joined_at_ms,
            })
            .collect(),
    }
}
