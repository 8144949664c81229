//! Bus protobuf → client JSON (the only direction the edge needs).

use msgr_core::time::rfc3339_ms;
use msgr_schemas::client::{
    ChatJson, MediaJson, MessageJson, QuoteJson, ReactionJson, ReceiptStatusJson, UserJson,
};
use msgr_schemas::pb::v1 as pb;

pub(crate) fn message(m: pb::StoredMessage) -> MessageJson {
    let status = match m.status() {
        pb::MessageStatus::Unspecified => None,
        pb::MessageStatus::Sent => Some("sent".to_owned()),
        pb::MessageStatus::Delivered => Some("delivered".to_owned()),
        pb::MessageStatus::Read => Some("read".to_owned()),
    };
    let (to_user, to_group) = match m.target {
        Some(pb::stored_message::Target::ToUser(u)) => (Some(u), None),
        Some(pb::stored_message::Target::ToGroup(g)) => (None, Some(g)),
        None => (None, None),
    };
    MessageJson {
        media: m.media.map(|md| MediaJson {
            url: format!("/media/{}", md.media_id),
            thumbnail_url: md
                .has_thumbnail
                .then(|| format!("/media/{}/thumbnail", md.media_id)),
            media_id: md.media_id,
            content_type: md.content_type,
            size: md.size,
        }),
        message_id: m.message_id,
        client_msg_id: m.client_msg_id,
        conversation_id: m.conversation_id,
        seq: m.seq,
        sender_id: m.sender_id,
        to_user,
        to_group,
        text: m.text,
        sent_at: rfc3339_ms(m.sent_at_ms),
        status,
        reply_to: m.reply_to.map(|q| QuoteJson {
            seq: q.seq,
            sender_id: q.sender_id,
            text: q.text,
            has_media: q.has_media,
            deleted: q.deleted,
        }),
        edited_at: m.edited_at_ms.map(rfc3339_ms),
        deleted_at: m.deleted_at_ms.map(rfc3339_ms),
        reactions: reactions(m.reactions),
        rev: m.rev,
    }
}

/// Reactions grouped by emoji: most used first, then first used first.
fn reactions(list: Vec<pb::Reaction>) -> Vec<ReactionJson> {
    let mut out: Vec<ReactionJson> = Vec::new();
    for r in list {
        match out.iter_mut().find(|g| g.emoji == r.emoji) {
            Some(g) => {
                g.count += 1;
                g.user_ids.push(r.user_id);
            }
            None => out.push(ReactionJson {
                emoji: r.emoji,
                count: 1,
                user_ids: vec![r.user_id],
            }),
        }
    }
    // Stable: equal counts keep their first-use order.
    out.sort_by_key(|g| std::cmp::Reverse(g.count));
    out
}

pub(crate) fn user(u: pb::User) -> UserJson {
    UserJson {
        user_id: u.user_id,
        username: u.username,
        display_name: u.display_name,
    }
}

pub(crate) fn chat(c: pb::Chat) -> ChatJson {
    ChatJson {
        conversation_id: c.conversation_id,
        kind: c.kind,
        peer_id: c.peer_id,
        group_id: c.group_id,
        title: c.title,
        last_message: c.last_message.map(message),
        last_seq: c.last_seq,
        unread_count: c.unread_count,
        updated_at: rfc3339_ms(c.updated_at_ms),
    }
}

pub(crate) fn receipt_status(s: pb::ReceiptStatus) -> ReceiptStatusJson {
    match s {
        pb::ReceiptStatus::Read => ReceiptStatusJson::Read,
        _ => ReceiptStatusJson::Delivered,
    }
}
