//! Messages and receipts: the sequencer's appends (dense seq, dedupe by
//! `(sender, client_msg_id)`, chat index) and watermarks, history pages with
//! statuses, and the chat list.

use deadpool_postgres::GenericClient;
use msgr_core::id;
use msgr_core::store::{
    ChatEntry, ChatPage, ConversationKind, HistoryPage, MediaRecord, MemberState, MessageStatus,
    MessageView, NewMessage, OpOutcome, Page, Quote, ReceiptKind, Rejection, StoreError,
    StoreResult, StoredMessage, Target, WatermarkUpdate, QUOTE_CHARS,
};
use tokio_postgres::Row;

use crate::media::media_for;
use crate::users::user_exists;
use crate::{exec, i, query, query_opt, u};

/// Messages with their media's metadata.
pub(crate) const MESSAGE_SELECT: &str =
    "SELECT m.message_id, m.client_msg_id, m.conversation_id, m.seq, m.sender_id,
     m.to_user, m.to_group, m.text, m.media_id, m.sent_at,
     md.uploader_id, md.content_type, md.size, md.sha256, md.has_thumbnail, md.created_at,
     m.reply_seq, m.reply_sender, m.reply_text, m.reply_media, m.reply_deleted,
     m.edited_at, m.deleted_at, m.rev
     FROM messages m LEFT JOIN media md ON md.media_id = m.media_id";

pub(crate) fn row_to_message(r: &Row) -> StoredMessage {
    let to_user: Option<String> = r.get(5);
    let to_group: Option<String> = r.get(6);
    let target = match (to_user, to_group) {
        (Some(u), _) => Target::User(u),
        (None, Some(g)) => Target::Group(g),
        (None, None) => Target::User(String::new()),
    };
    let media_id: Option<String> = r.get(8);
    let uploader: Option<String> = r.get(10);
    let media = match (&media_id, uploader) {
        (Some(id), Some(uploader_id)) => Some(MediaRecord {
            media_id: id.clone(),
            uploader_id,
            content_type: r.get(11),
            size: u(r.get(12)),
            sha256: r.get(13),
            has_thumbnail: r.get(14),
            created_at_ms: r.get(15),
        }),
        _ => None,
    };
    let reply_seq: Option<i64> = r.get(16);
    StoredMessage {
        message_id: r.get(0),
        client_msg_id: r.get(1),
        conversation_id: r.get(2),
        seq: u(r.get(3)),
        sender_id: r.get(4),
        target,
        text: r.get(7),
        media_id,
        sent_at_ms: r.get(9),
        media,
        reply_to: reply_seq.map(|seq| Quote {
            seq: u(seq),
            sender_id: r.get::<_, Option<String>>(17).unwrap_or_default(),
            text: r.get(18),
            has_media: r.get(19),
            deleted: r.get(20),
        }),
        edited_at_ms: r.get(21),
        deleted_at_ms: r.get(22),
        reactions: Vec::new(),
        rev: u(r.get(23)),
    }
}

pub(crate) async fn message_at(
    c: &impl GenericClient,
    conv: &str,
    seq: u64,
) -> StoreResult<Option<StoredMessage>> {
    let sql = format!("{MESSAGE_SELECT} WHERE m.conversation_id = $1 AND m.seq = $2");
    let mut m = query_opt(c, &sql, &[&conv, &i(seq)])
        .await?
        .as_ref()
        .map(row_to_message);
    if let Some(m) = m.as_mut() {
        crate::changes::fill_reactions(c, conv, std::slice::from_mut(m)).await?;
    }
    Ok(m)
}

/// The quote a reply by `sender` keeps of `seq`: it must exist, be one the
/// sender saw, and not be deleted.
async fn quote(
    c: &impl GenericClient,
    conv: &str,
    sender: &str,
    seq: u64,
) -> StoreResult<Option<Quote>> {
    // A direct chat's first message has no member rows yet: nothing to quote.
    if !member(c, conv, sender).await?.is_some_and(|m| m.saw(seq)) {
        return Ok(None);
    }
    let row = query_opt(
        c,
        "SELECT sender_id, text, media_id IS NOT NULL, deleted_at FROM messages
         WHERE conversation_id = $1 AND seq = $2",
        &[&conv, &i(seq)],
    )
    .await?;
    Ok(row.and_then(|r| {
        let deleted: Option<i64> = r.get(3);
        deleted.is_none().then(|| Quote {
            seq,
            sender_id: r.get(0),
            text: r
                .get::<_, Option<String>>(1)
                .map(|t| msgr_core::validate::truncate_chars(&t, QUOTE_CHARS)),
            has_media: r.get(2),
            deleted: false,
        })
    }))
}

pub(crate) async fn is_member(
    c: &impl GenericClient,
    conv: &str,
    user_id: &str,
) -> StoreResult<bool> {
    Ok(query_opt(
        c,
        "SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2 AND left_seq IS NULL",
        &[&conv, &user_id],
    )
    .await?
    .is_some())
}

pub(crate) async fn append(c: &impl GenericClient, m: &NewMessage) -> StoreResult<OpOutcome> {
    let seen = query_opt(
        c,
        "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = $1 AND client_msg_id = $2",
        &[&m.sender_id, &m.client_msg_id],
    )
    .await?;
    if let Some(row) = seen {
        let (conv, seq): (String, i64) = (row.get(0), row.get(1));
        return match message_at(c, &conv, u(seq)).await? {
            Some(orig) => Ok(OpOutcome::Duplicate(orig)),
            None => Err(StoreError::Corrupt(format!(
                "dedupe entry without its message: {conv} seq {seq}"
            ))),
        };
    }
    let (to_user, to_group) = match &m.target {
        Target::User(to) => {
            if id::direct_conversation_id(&m.sender_id, to) != m.conversation_id
                || to == &m.sender_id
            {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            if let Some(r) = crate::changes::block_between(c, &m.sender_id, to).await? {
                return Ok(OpOutcome::Rejected(r));
            }
            (Some(to.as_str()), None)
        }
        Target::Group(g) => {
            if g != &m.conversation_id {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            // Lock the conversation first, as membership changes do: a
            // removal committed before this point is seen below, one after
            // it waits for this batch.
            query_opt(
                c,
                "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
                &[g],
            )
            .await?;
            if !is_member(c, g, &m.sender_id).await? {
                return Ok(OpOutcome::Rejected(Rejection::NotMember));
            }
            (None, Some(g.as_str()))
        }
    };
    let media = match &m.media_id {
        Some(id) => match media_for(c, id, &m.sender_id).await? {
            Some(md) => Some(md),
            None => return Ok(OpOutcome::Rejected(Rejection::UnknownMedia)),
        },
        None => None,
    };
    let reply_to = match m.reply_to_seq {
        Some(seq) => match quote(c, &m.conversation_id, &m.sender_id, seq).await? {
            Some(q) => Some(q),
            None => return Ok(OpOutcome::Rejected(Rejection::UnknownMessage)),
        },
        None => None,
    };
    let next = query_opt(
        c,
        "UPDATE conversations SET last_seq = last_seq + 1, updated_at = GREATEST(updated_at, $2)
         WHERE conversation_id = $1 AND NOT closed RETURNING last_seq",
        &[&m.conversation_id, &m.sent_at_ms],
    )
    .await?;
    let seq: u64 = match next {
        Some(row) => u(row.get(0)),
        // The first message of a direct chat creates it (an account deleted
        // later closes its chats, so an open one needs no user checks).
        None => match to_user {
            Some(to) => {
                if !user_exists(c, to).await? || !user_exists(c, &m.sender_id).await? {
                    return Ok(OpOutcome::Rejected(Rejection::UnknownRecipient));
                }
                exec(
                    c,
                    "INSERT INTO conversations (conversation_id, kind, last_seq, updated_at)
                     VALUES ($1, 'direct', 1, $2)",
                    &[&m.conversation_id, &m.sent_at_ms],
                )
                .await?;
                for who in [m.sender_id.as_str(), to] {
                    exec(
                        c,
                        "INSERT INTO members (conversation_id, user_id, joined_at) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&m.conversation_id, &who, &m.sent_at_ms],
                    )
                    .await?;
                }
                1
            }
            // A member of a group whose conversation row is missing: corrupt.
            None => {
                return Err(StoreError::Corrupt(format!(
                    "group {} has no conversation row",
                    m.conversation_id
                )))
            }
        },
    };
    let seq_i = i(seq);
    exec(
        c,
        "INSERT INTO messages (message_id, client_msg_id, conversation_id, seq, sender_id, to_user,
           to_group, text, media_id, sent_at, reply_seq, reply_sender, reply_text, reply_media)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &m.message_id,
            &m.client_msg_id,
            &m.conversation_id,
            &seq_i,
            &m.sender_id,
            &to_user,
            &to_group,
            &m.text,
            &m.media_id,
            &m.sent_at_ms,
            &reply_to.as_ref().map(|q| i(q.seq)),
            &reply_to.as_ref().map(|q| q.sender_id.as_str()),
            &reply_to.as_ref().and_then(|q| q.text.as_deref()),
            &reply_to.as_ref().is_some_and(|q| q.has_media),
        ],
    )
    .await?;
    exec(
        c,
        "INSERT INTO client_msgs (sender_id, client_msg_id, conversation_id, seq) VALUES ($1, $2, $3, $4)",
        &[&m.sender_id, &m.client_msg_id, &m.conversation_id, &seq_i],
    )
    .await?;
    if let Some(id) = &m.media_id {
        exec(
            c,
            "INSERT INTO media_refs (media_id, conversation_id, seq) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[id, &m.conversation_id, &seq_i],
        )
        .await?;
    }
    // Sending reads everything before it, on every device of the sender.
    exec(
        c,
        "UPDATE members SET read_seq = GREATEST(read_seq, $3), delivered_seq = GREATEST(delivered_seq, $3)
         WHERE conversation_id = $1 AND user_id = $2",
        &[&m.conversation_id, &m.sender_id, &seq_i],
    )
    .await?;
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

pub(crate) async fn receipt(c: &impl GenericClient, w: &WatermarkUpdate) -> StoreResult<OpOutcome> {
    let Some(row) = query_opt(
        c,
        "SELECT last_seq FROM conversations WHERE conversation_id = $1",
        &[&w.conversation_id],
    )
    .await?
    else {
        return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
    };
    let last_seq = u(row.get(0));
    let Some(row) = query_opt(
        c,
        "SELECT delivered_seq, read_seq FROM members
         WHERE conversation_id = $1 AND user_id = $2 AND left_seq IS NULL",
        &[&w.conversation_id, &w.user_id],
    )
    .await?
    else {
        return Ok(OpOutcome::Rejected(Rejection::NotMember));
    };
    let (delivered, read) = (u(row.get(0)), u(row.get(1)));
    let up = w.up_to_seq.min(last_seq);
    let (new_delivered, new_read) = match w.kind {
        ReceiptKind::Delivered => (delivered.max(up), read),
        ReceiptKind::Read => (delivered.max(up), read.max(up)),
    };
    if new_delivered == delivered && new_read == read {
        return Ok(OpOutcome::Unchanged);
    }
    exec(
        c,
        "UPDATE members SET delivered_seq = $3, read_seq = $4 WHERE conversation_id = $1 AND user_id = $2",
        &[&w.conversation_id, &w.user_id, &i(new_delivered), &i(new_read)],
    )
    .await?;
    Ok(OpOutcome::Advanced {
        delivered: (new_delivered != delivered).then_some(new_delivered),
        read: (new_read != read).then_some(new_read),
        at_ms: w.at_ms,
    })
}

pub(crate) async fn all_members(
    c: &impl GenericClient,
    conv: &str,
) -> StoreResult<Vec<MemberState>> {
    let rows = query(
        c,
        "SELECT user_id, delivered_seq, read_seq, joined_seq, left_seq FROM members
         WHERE conversation_id = $1 ORDER BY joined_at, user_id",
        &[&conv],
    )
    .await?;
    let mut members: Vec<MemberState> = rows.iter().map(row_to_member).collect();
    let windows = query(
        c,
        "SELECT user_id, joined_seq, left_seq FROM member_windows
         WHERE conversation_id = $1 ORDER BY user_id, joined_seq",
        &[&conv],
    )
    .await?;
    for w in &windows {
        let user: String = w.get(0);
        if let Some(m) = members.iter_mut().find(|m| m.user_id == user) {
            m.earlier.push((u(w.get(1)), u(w.get(2))));
        }
    }
    Ok(members)
}

fn row_to_member(r: &Row) -> MemberState {
    MemberState {
        user_id: r.get(0),
        delivered_seq: u(r.get(1)),
        read_seq: u(r.get(2)),
        joined_seq: u(r.get(3)),
        left_seq: r.get::<_, Option<i64>>(4).map(u),
        earlier: Vec::new(),
    }
}

/// One member's state (with their earlier windows), if they ever were one.
pub(crate) async fn member(
    c: &impl GenericClient,
    conv: &str,
    user: &str,
) -> StoreResult<Option<MemberState>> {
    let Some(row) = query_opt(
        c,
        "SELECT user_id, delivered_seq, read_seq, joined_seq, left_seq FROM members
         WHERE conversation_id = $1 AND user_id = $2",
        &[&conv, &user],
    )
    .await?
    else {
        return Ok(None);
    };
    let mut m = row_to_member(&row);
    m.earlier = query(
        c,
        "SELECT joined_seq, left_seq FROM member_windows
         WHERE conversation_id = $1 AND user_id = $2 ORDER BY joined_seq",
        &[&conv, &user],
    )
    .await?
    .iter()
    .map(|r| (u(r.get(0)), u(r.get(1))))
    .collect();
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

pub(crate) async fn history(
    c: &impl GenericClient,
    conv: &str,
    caller: &str,
    page: Page,
) -> StoreResult<HistoryPage> {
    let limit = u64::from(page.limit.clamp(1, 1000));
    let members = all_members(c, conv).await?;
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
        "{MESSAGE_SELECT} WHERE m.conversation_id = $1 AND m.seq > $2 AND m.seq < $3{}
         ORDER BY m.seq {} LIMIT $4",
        windows_clause(me),
        if descending { "DESC" } else { "ASC" }
    );
    let rows = query(c, &sql, &[&conv, &i(lo), &i(hi), &i(limit + 1)]).await?;
    let mut msgs: Vec<StoredMessage> = rows.iter().map(row_to_message).collect();
    let has_more = msgs.len() as u64 > limit;
    msgs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if descending {
        msgs.reverse();
    }
    crate::changes::fill_reactions(c, conv, &mut msgs).await?;
    Ok(HistoryPage {
        messages: msgs
            .into_iter()
            .map(|m| view(m, caller, &members))
            .collect(),
        has_more,
        rev: crate::changes::conversation_rev(c, conv).await?,
    })
}

fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ms, conv) = cursor.split_once(':')?;
    Some((ms.parse().ok()?, conv.to_owned()))
}

pub(crate) async fn chats(
    c: &impl GenericClient,
    user_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> StoreResult<ChatPage> {
    let limit = limit.clamp(1, 200);
    let (c_ms, c_conv) = match cursor {
        None => (None, None),
        Some(cur) => {
            let (ms, conv) = parse_cursor(cur).ok_or(StoreError::NotFound)?;
            (Some(ms), Some(conv))
        }
    };
    let rows = query(
        c,
        "SELECT c.conversation_id, c.kind, c.title, c.last_seq, c.updated_at, m.read_seq, m.joined_seq
         FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id
         WHERE m.user_id = $1 AND m.left_seq IS NULL
           AND ($2::BIGINT IS NULL OR c.updated_at < $2
                OR (c.updated_at = $2 AND c.conversation_id < $3::TEXT COLLATE \"C\"))
         ORDER BY c.updated_at DESC, c.conversation_id DESC
         LIMIT $4",
        &[&user_id, &c_ms, &c_conv, &(i64::from(limit) + 1)],
    )
    .await?;
    let has_more = rows.len() > limit as usize;
    let mut chats = Vec::with_capacity(rows.len().min(limit as usize));
    for r in rows.iter().take(limit as usize) {
        let conv: String = r.get(0);
        let kind: String = r.get(1);
        let title: Option<String> = r.get(2);
        let (last_seq, updated_at, read_seq, joined_seq) =
            (u(r.get(3)), r.get::<_, i64>(4), u(r.get(5)), u(r.get(6)));
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
            let name: String = query_opt(
                c,
                "SELECT display_name FROM users WHERE user_id = $1",
                &[&peer],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or_default();
            (ConversationKind::Direct, Some(peer), None, name)
        };
        // Only what the caller may see: nothing from before they joined.
        let last_message = if last_seq > joined_seq {
            let members = all_members(c, &conv).await?;
            message_at(c, &conv, last_seq)
                .await?
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
pub(crate) async fn by_client_id(
    c: &impl GenericClient,
    sender_id: &str,
    client_msg_id: &str,
) -> StoreResult<Option<StoredMessage>> {
    let seen = query_opt(
        c,
        "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = $1 AND client_msg_id = $2",
        &[&sender_id, &client_msg_id],
    )
    .await?;
    match seen {
        Some(row) => message_at(c, &row.get::<_, String>(0), u(row.get(1))).await,
        None => Ok(None),
    }
}
