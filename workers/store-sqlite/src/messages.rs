//! Messages and receipts: the sequencer's appends (dense seq, dedupe by
//! `(sender, client_msg_id)`, chat index) and watermarks, history pages with
//! statuses, and the chat list.

use msgr_core::id;
use msgr_core::store::{
    ChatEntry, ChatPage, ConversationKind, HistoryPage, MediaRecord, MemberState, MessageStatus,
    MessageView, NewMessage, OpOutcome, Page, Quote, ReceiptKind, Rejection, StoreError,
    StoreResult, StoredMessage, Target, WatermarkUpdate, QUOTE_CHARS,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::media::media_for;
use crate::unavailable;
use crate::users::user_exists;

pub(crate) const MESSAGE_COLUMNS: &str =
    "message_id, client_msg_id, conversation_id, seq, sender_id, to_user, to_group, text, media_id, sent_at,
     reply_seq, reply_sender, reply_text, reply_media";

/// Messages with their media's metadata.
pub(crate) const MESSAGE_SELECT: &str =
    "SELECT m.message_id, m.client_msg_id, m.conversation_id, m.seq, m.sender_id,
     m.to_user, m.to_group, m.text, m.media_id, m.sent_at,
     md.uploader_id, md.content_type, md.size, md.sha256, md.has_thumbnail, md.created_at,
     m.reply_seq, m.reply_sender, m.reply_text, m.reply_media, m.reply_deleted,
     m.edited_at, m.deleted_at, m.rev
     FROM messages m LEFT JOIN media md ON md.media_id = m.media_id";

pub(crate) fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let to_user: Option<String> = r.get(5)?;
    let to_group: Option<String> = r.get(6)?;
    let target = match (to_user, to_group) {
        (Some(u), _) => Target::User(u),
        (None, Some(g)) => Target::Group(g),
        (None, None) => Target::User(String::new()),
    };
    let media_id: Option<String> = r.get(8)?;
    let uploader: Option<String> = r.get(10)?;
    let media = match (&media_id, uploader) {
        (Some(id), Some(uploader_id)) => Some(MediaRecord {
            media_id: id.clone(),
            uploader_id,
            content_type: r.get(11)?,
            size: r.get(12)?,
            sha256: r.get(13)?,
            has_thumbnail: r.get(14)?,
            created_at_ms: r.get(15)?,
        }),
        _ => None,
    };
    let reply_seq: Option<u64> = r.get(16)?;
    let reply_to = match reply_seq {
        Some(seq) => Some(Quote {
            seq,
            sender_id: r.get::<_, Option<String>>(17)?.unwrap_or_default(),
            text: r.get(18)?,
            has_media: r.get(19)?,
            deleted: r.get(20)?,
        }),
        None => None,
    };
    Ok(StoredMessage {
        message_id: r.get(0)?,
        client_msg_id: r.get(1)?,
        conversation_id: r.get(2)?,
        seq: r.get(3)?,
        sender_id: r.get(4)?,
        target,
        text: r.get(7)?,
        media_id,
        sent_at_ms: r.get(9)?,
        media,
        reply_to,
        edited_at_ms: r.get(21)?,
        deleted_at_ms: r.get(22)?,
        reactions: Vec::new(),
        rev: r.get(23)?,
    })
}

pub(crate) fn message_at(
    conn: &Connection,
    conv: &str,
    seq: u64,
) -> rusqlite::Result<Option<StoredMessage>> {
    let mut m = conn
        .prepare_cached(&format!(
            "{MESSAGE_SELECT} WHERE m.conversation_id = ?1 AND m.seq = ?2"
        ))?
        .query_row(params![conv, seq], row_to_message)
        .optional()?;
    if let Some(m) = m.as_mut() {
        crate::changes::fill_reactions(conn, conv, std::slice::from_mut(m))?;
    }
    Ok(m)
}

pub(crate) fn is_member(conn: &Connection, conv: &str, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )?
        .query_row([conv, user_id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn append(tx: &Connection, m: &NewMessage) -> rusqlite::Result<OpOutcome> {
    let seen: Option<(String, u64)> = tx
        .prepare_cached(
            "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row([&m.sender_id, &m.client_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((conv, seq)) = seen {
        return match message_at(tx, &conv, seq)? {
            Some(orig) => Ok(OpOutcome::Duplicate(orig)),
            None => Err(rusqlite::Error::QueryReturnedNoRows),
        };
    }
    let (to_user, to_group) = match &m.target {
        Target::User(to) => {
            if id::direct_conversation_id(&m.sender_id, to) != m.conversation_id
                || to == &m.sender_id
            {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            if let Some(r) = crate::changes::block_between(tx, &m.sender_id, to)? {
                return Ok(OpOutcome::Rejected(r));
            }
            (Some(to.as_str()), None)
        }
        Target::Group(g) => {
            if g != &m.conversation_id {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            if !is_member(tx, g, &m.sender_id)? {
                return Ok(OpOutcome::Rejected(Rejection::NotMember));
            }
            (None, Some(g.as_str()))
        }
    };
    let media = match &m.media_id {
        Some(id) => match media_for(tx, id, &m.sender_id)? {
            Some(md) => Some(md),
            None => return Ok(OpOutcome::Rejected(Rejection::UnknownMedia)),
        },
        None => None,
    };
    let reply_to = match m.reply_to_seq {
        Some(seq) => match quote(tx, &m.conversation_id, &m.sender_id, seq)? {
            Some(q) => Some(q),
            None => return Ok(OpOutcome::Rejected(Rejection::UnknownMessage)),
        },
        None => None,
    };
    let mut next_seq = tx.prepare_cached(
        "UPDATE conversations SET last_seq = last_seq + 1, updated_at = max(updated_at, ?2)
         WHERE conversation_id = ?1 AND closed = 0 RETURNING last_seq",
    )?;
    let seq: u64 = match next_seq
        .query_row(params![m.conversation_id, m.sent_at_ms], |r| r.get(0))
        .optional()?
    {
        Some(seq) => seq,
        // The first message of a direct chat creates it (an account deleted
        // later closes its chats, so an open one needs no user checks: the
        // hot path is one statement here).
        None => match to_user {
            Some(to) => {
                if !user_exists(tx, to)? || !user_exists(tx, &m.sender_id)? {
                    return Ok(OpOutcome::Rejected(Rejection::UnknownRecipient));
                }
                tx.prepare_cached(
                    "INSERT INTO conversations (conversation_id, kind, last_seq, updated_at)
                     VALUES (?1, 'direct', 1, ?2)",
                )?
                .execute(params![m.conversation_id, m.sent_at_ms])?;
                let mut add = tx.prepare_cached(
                    "INSERT OR IGNORE INTO members (conversation_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
                )?;
                add.execute(params![m.conversation_id, m.sender_id, m.sent_at_ms])?;
                add.execute(params![m.conversation_id, to, m.sent_at_ms])?;
                1
            }
            // A member of a group whose conversation row is missing: corrupt.
            None => return Err(rusqlite::Error::QueryReturnedNoRows),
        },
    };
    tx.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        m.message_id,
        m.client_msg_id,
        m.conversation_id,
        seq,
        m.sender_id,
        to_user,
        to_group,
        m.text,
        m.media_id,
        m.sent_at_ms,
        reply_to.as_ref().map(|q| q.seq),
        reply_to.as_ref().map(|q| q.sender_id.as_str()),
        reply_to.as_ref().and_then(|q| q.text.as_deref()),
        reply_to.as_ref().is_some_and(|q| q.has_media),
    ])?;
    tx.prepare_cached(
        "INSERT INTO client_msgs (sender_id, client_msg_id, conversation_id, seq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![m.sender_id, m.client_msg_id, m.conversation_id, seq])?;
    if let Some(id) = &m.media_id {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO media_refs (media_id, conversation_id, seq) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, m.conversation_id, seq])?;
    }
    // Sending reads everything before it, on every device of the sender.
    tx.prepare_cached(
        "UPDATE members SET read_seq = max(read_seq, ?3), delivered_seq = max(delivered_seq, ?3)
         WHERE conversation_id = ?1 AND user_id = ?2",
    )?
    .execute(params![m.conversation_id, m.sender_id, seq])?;
    Ok(OpOutcome::Stored(StoredMessage {
        message_id: m.message_id.clone(),
        client_msg_id: m.client_msg_id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq,
        sender_id: m.sender_id.clone(),
        target: m.target.clone(),
        text: m.text.clone(),
        media_id: m.media_id.clone(),
        sent_at_ms: m.sent_at_ms,
        media,
        reply_to,
        edited_at_ms: None,
        deleted_at_ms: None,
        reactions: Vec::new(),
        rev: 0,
    }))
}

/// The quote a reply by `sender` keeps of `seq`: it must exist, be one the
/// sender saw, and not be deleted.
fn quote(tx: &Connection, conv: &str, sender: &str, seq: u64) -> rusqlite::Result<Option<Quote>> {
    // A direct chat's first message has no member rows yet: nothing to
    // quote; and no seq beyond i64 exists (nor can SQLite bind one).
    if i64::try_from(seq).is_err() || !member(tx, conv, sender)?.is_some_and(|m| m.saw(seq)) {
        return Ok(None);
    }
    let row: Option<(String, Option<String>, bool, Option<i64>)> = tx
        .prepare_cached(
            "SELECT sender_id, text, media_id IS NOT NULL, deleted_at FROM messages
             WHERE conversation_id = ?1 AND seq = ?2",
        )?
        .query_row(params![conv, seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    Ok(match row {
        Some((sender_id, text, has_media, None)) => Some(Quote {
            seq,
            sender_id,
            text: text.map(|t| msgr_core::validate::truncate_chars(&t, QUOTE_CHARS)),
            has_media,
            deleted: false,
        }),
        _ => None,
    })
}

pub(crate) fn receipt(tx: &Connection, w: &WatermarkUpdate) -> rusqlite::Result<OpOutcome> {
    let last_seq: Option<u64> = tx
        .prepare_cached("SELECT last_seq FROM conversations WHERE conversation_id = ?1")?
        .query_row([&w.conversation_id], |r| r.get(0))
        .optional()?;
    let Some(last_seq) = last_seq else {
        return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
    };
    let current: Option<(u64, u64)> = tx
        .prepare_cached(
            "SELECT delivered_seq, read_seq FROM members
             WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )?
        .query_row([&w.conversation_id, &w.user_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((delivered, read)) = current else {
        return Ok(OpOutcome::Rejected(Rejection::NotMember));
    };
    let up = w.up_to_seq.min(last_seq);
    let (new_delivered, new_read) = match w.kind {
        ReceiptKind::Delivered => (delivered.max(up), read),
        ReceiptKind::Read => (delivered.max(up), read.max(up)),
    };
    if new_delivered == delivered && new_read == read {
        return Ok(OpOutcome::Unchanged);
    }
    tx.prepare_cached(
        "UPDATE members SET delivered_seq = ?3, read_seq = ?4 WHERE conversation_id = ?1 AND user_id = ?2",
    )?
    .execute(params![w.conversation_id, w.user_id, new_delivered, new_read])?;
    Ok(OpOutcome::Advanced {
        delivered: (new_delivered != delivered).then_some(new_delivered),
        read: (new_read != read).then_some(new_read),
        at_ms: w.at_ms,
    })
}

fn row_to_member(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemberState> {
    Ok(MemberState {
        user_id: r.get(0)?,
        delivered_seq: r.get(1)?,
        read_seq: r.get(2)?,
        joined_seq: r.get(3)?,
        left_seq: r.get(4)?,
        earlier: Vec::new(),
    })
}

pub(crate) fn all_members(conn: &Connection, conv: &str) -> rusqlite::Result<Vec<MemberState>> {
    let mut members: Vec<MemberState> = conn
        .prepare_cached(
            "SELECT user_id, delivered_seq, read_seq, joined_seq, left_seq FROM members
             WHERE conversation_id = ?1 ORDER BY joined_at, user_id",
        )?
        .query_map([conv], row_to_member)?
        .collect::<rusqlite::Result<_>>()?;
    let mut windows = conn.prepare_cached(
        "SELECT user_id, joined_seq, left_seq FROM member_windows
         WHERE conversation_id = ?1 ORDER BY user_id, joined_seq",
    )?;
    for w in windows.query_map([conv], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
    })? {
        let (user, j, l) = w?;
        if let Some(m) = members.iter_mut().find(|m| m.user_id == user) {
            m.earlier.push((j, l));
        }
    }
    Ok(members)
}

/// One member's state (with their earlier windows), if they ever were one.
pub(crate) fn member(
    conn: &Connection,
    conv: &str,
    user: &str,
) -> rusqlite::Result<Option<MemberState>> {
    let Some(mut m) = conn
        .prepare_cached(
            "SELECT user_id, delivered_seq, read_seq, joined_seq, left_seq FROM members
             WHERE conversation_id = ?1 AND user_id = ?2",
        )?
        .query_row([conv, user], row_to_member)
        .optional()?
    else {
        return Ok(None);
    };
    m.earlier = conn
        .prepare_cached(
            "SELECT joined_seq, left_seq FROM member_windows
             WHERE conversation_id = ?1 AND user_id = ?2 ORDER BY joined_seq",
        )?
        .query_map([conv, user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(m))
}

/// SQL limiting `m.seq` to the windows of a member who has more than one
/// (the bounds are integers read from the store, so inlining them is safe).
pub(crate) fn windows_clause(me: &MemberState) -> String {
    if me.earlier.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = me
        .windows()
        .iter()
        .map(|(j, l)| match l {
            Some(l) => format!("(m.seq > {j} AND m.seq <= {l})"),
            None => format!("m.seq > {j}"),
        })
        .collect();
    format!(" AND ({})", parts.join(" OR "))
}

/// The caller's view of a message: the status of their own messages is the
/// lowest watermark among everyone else who was a member when it was sent.
pub(crate) fn view(m: StoredMessage, caller: &str, members: &[MemberState]) -> MessageView {
    if m.sender_id != caller {
        return MessageView {
            message: m,
            status: None,
        };
    }
    let (mut delivered, mut read) = (true, true);
    for o in members
        .iter()
        .filter(|o| o.user_id != caller && o.saw(m.seq))
    {
        delivered &= o.delivered_seq >= m.seq;
        read &= o.read_seq >= m.seq;
    }
    let status = if read {
        MessageStatus::Read
    } else if delivered {
        MessageStatus::Delivered
    } else {
        MessageStatus::Sent
    };
    MessageView {
        message: m,
        status: Some(status),
    }
}

pub(crate) fn history(
    conn: &Connection,
    conv: &str,
    caller: &str,
    page: Page,
) -> rusqlite::Result<HistoryPage> {
    let limit = u64::from(page.limit.clamp(1, 1000));
    let fetch = limit + 1;
    let members = all_members(conn, conv)?;
    let Some(me) = members.iter().find(|m| m.user_id == caller) else {
        return Ok(HistoryPage {
            messages: Vec::new(),
            has_more: false,
            rev: 0,
        });
    };
    // Only what was sent while the caller was a member.
    let lo = page.after.unwrap_or(0).max(me.first_joined());
    let hi = page
        .before
        .unwrap_or(u64::MAX >> 1)
        .min(me.left_seq.map_or(u64::MAX >> 1, |l| l + 1));
    let descending = page.after.is_none();
    let sql = format!(
        "{MESSAGE_SELECT} WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq < ?3{}
         ORDER BY m.seq {} LIMIT ?4",
        windows_clause(me),
        if descending { "DESC" } else { "ASC" }
    );
    let mut rows: Vec<StoredMessage> = conn
        .prepare_cached(&sql)?
        .query_map(params![conv, lo, hi, fetch], row_to_message)?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if descending {
        rows.reverse();
    }
    crate::changes::fill_reactions(conn, conv, &mut rows)?;
    Ok(HistoryPage {
        messages: rows
            .into_iter()
            .map(|m| view(m, caller, &members))
            .collect(),
        has_more,
        rev: crate::changes::conversation_rev(conn, conv)?,
    })
}

pub(crate) fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ms, conv) = cursor.split_once(':')?;
    Some((ms.parse().ok()?, conv.to_owned()))
}

/// conversation_id, kind, title, last_seq, updated_at, read_seq, joined_seq.
pub(crate) type ChatRow = (String, String, Option<String>, u64, i64, u64, u64);

pub(crate) fn chats(
    conn: &Connection,
    user_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> StoreResult<ChatPage> {
    let limit = limit.clamp(1, 200);
    let (c_ms, c_conv) = match cursor {
        None => (None, None),
        Some(c) => {
            let (ms, conv) = parse_cursor(c).ok_or(StoreError::NotFound)?;
            (Some(ms), Some(conv))
        }
    };
    let rows: Vec<ChatRow> = conn
        .prepare_cached(
            "SELECT c.conversation_id, c.kind, c.title, c.last_seq, c.updated_at, m.read_seq, m.joined_seq
             FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id
             WHERE m.user_id = ?1 AND m.left_seq IS NULL
               AND (?2 IS NULL OR c.updated_at < ?2 OR (c.updated_at = ?2 AND c.conversation_id < ?3))
             ORDER BY c.updated_at DESC, c.conversation_id DESC
             LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![user_id, c_ms, c_conv, limit + 1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?,
                    r.get(6)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    let has_more = rows.len() > limit as usize;
    let mut chats = Vec::with_capacity(rows.len().min(limit as usize));
    for (conv, kind, title, last_seq, updated_at, read_seq, joined_seq) in
        rows.into_iter().take(limit as usize)
    {
        let (kind, peer_id, group_id, title) = if kind == "group" {
            (
                ConversationKind::Group,
                None,
                Some(conv.clone()),
                title.unwrap_or_default(),
            )
        } else {
            let peer = id::direct_members(&conv)
                .map(|(a, b)| if a == user_id { b } else { a }.to_owned())
                .ok_or_else(|| StoreError::Corrupt(format!("bad direct id {conv}")))?;
            let name: String = conn
                .prepare_cached("SELECT display_name FROM users WHERE user_id = ?1")
                .and_then(|mut s| s.query_row([&peer], |r| r.get(0)).optional())
                .map_err(unavailable)?
                .unwrap_or_default();
            (ConversationKind::Direct, Some(peer), None, name)
        };
        // Only what the caller may see: nothing from before they joined.
        let last_message = if last_seq > joined_seq {
            let members = all_members(conn, &conv).map_err(unavailable)?;
            message_at(conn, &conv, last_seq)
                .map_err(unavailable)?
                .map(|m| view(m, user_id, &members))
        } else {
            None
        };
        chats.push(ChatEntry {
            conversation_id: conv,
            kind,
            peer_id,
            group_id,
            title,
            last_message,
            last_seq,
            unread_count: last_seq.saturating_sub(read_seq),
            updated_at_ms: updated_at,
        });
    }
    let next_cursor = if has_more {
        chats
            .last()
            .map(|c| format!("{}:{}", c.updated_at_ms, c.conversation_id))
    } else {
        None
    };
    Ok(ChatPage { chats, next_cursor })
}

/// A message by its sender's `client_msg_id`.
pub(crate) fn by_client_id(
    conn: &Connection,
    sender_id: &str,
    client_msg_id: &str,
) -> StoreResult<Option<StoredMessage>> {
    let seen: Option<(String, u64)> = conn
        .prepare_cached(
            "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = ?1 AND client_msg_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row([sender_id, client_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(unavailable)?;
    match seen {
        Some((conv, seq)) => message_at(conn, &conv, seq).map_err(unavailable),
        None => Ok(None),
    }
}
