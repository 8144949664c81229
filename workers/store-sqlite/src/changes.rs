//! Changes to stored messages (edits, deletes for everyone, reactions), the
//! "changed since" query, blocking and presence privacy.

use msgr_core::store::{
    ChangeKind, HistoryPage, MessageChange, OpOutcome, Reaction, Rejection, StoreError,
    StoreResult, StoredMessage,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::messages::{
    all_members, member, message_at, row_to_message, view, windows_clause, MESSAGE_SELECT,
};
use crate::unavailable;
use crate::users::user_exists;

/// Puts each message's reactions on it: one query for the whole slice, for
/// exactly its seqs (a page of changes is scattered over the conversation).
pub(crate) fn fill_reactions(
    conn: &Connection,
    conv: &str,
    msgs: &mut [StoredMessage],
) -> rusqlite::Result<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let at: std::collections::HashMap<u64, usize> =
        msgs.iter().enumerate().map(|(i, m)| (m.seq, i)).collect();
    // The seqs are integers read from the store, so inlining them is safe;
    // not cached: the text differs from page to page.
    let list = at.keys().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, user_id, emoji FROM reactions
         WHERE conversation_id = ?1 AND seq IN ({list}) ORDER BY seq, at, user_id"
    ))?;
    let rows = stmt.query_map([conv], |r| Ok((r.get::<_, u64>(0)?, r.get(1)?, r.get(2)?)))?;
    for row in rows {
        let (seq, user_id, emoji) = row?;
        if let Some(&i) = at.get(&seq) {
            msgs[i].reactions.push(Reaction { user_id, emoji });
        }
    }
    Ok(())
}

/// The conversation's change counter (0 if unknown).
pub(crate) fn conversation_rev(conn: &Connection, conv: &str) -> rusqlite::Result<u64> {
    Ok(conn
        .prepare_cached("SELECT last_rev FROM conversations WHERE conversation_id = ?1")?
        .query_row([conv], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Why `sender` may not send to `to` in a direct chat, if a block stands
/// between them (the sender's own block first: they can lift it).
pub(crate) fn block_between(
    conn: &Connection,
    sender: &str,
    to: &str,
) -> rusqlite::Result<Option<Rejection>> {
    let blockers: Vec<String> = conn
        .prepare_cached(
            "SELECT blocker_id FROM blocks WHERE (blocker_id = ?1 AND blocked_id = ?2)
             OR (blocker_id = ?2 AND blocked_id = ?1)",
        )?
        .query_map([sender, to], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(if blockers.iter().any(|b| b == sender) {
        Some(Rejection::YouBlocked)
    } else if blockers.is_empty() {
        None
    } else {
        Some(Rejection::RecipientUnavailable)
    })
}

/// What a change needs of its message: sender, text, media id, sent at,
/// deleted at.
type TargetRow = (String, Option<String>, Option<String>, i64, Option<i64>);

/// Applies one change inside the sequencer's transaction.
pub(crate) fn change(tx: &Connection, c: &MessageChange) -> rusqlite::Result<OpOutcome> {
    let seen: Option<(String, u64)> = tx
        .prepare_cached(
            "SELECT conversation_id, seq FROM client_changes WHERE actor_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row([&c.actor_id, &c.client_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((conv, seq)) = seen {
        return match message_at(tx, &conv, seq)? {
            Some(message) => Ok(OpOutcome::Changed {
                message,
                fresh: false,
                orphaned_media: None,
            }),
            None => Err(rusqlite::Error::QueryReturnedNoRows),
        };
    }
    // No seq that large exists, and SQLite cannot bind it: refuse it here
    // rather than fail the whole batch.
    if i64::try_from(c.seq).is_err() {
        return Ok(OpOutcome::Rejected(Rejection::UnknownMessage));
    }
    // Only current members change anything (a former member's view is frozen).
    let actor = match member(tx, &c.conversation_id, &c.actor_id)? {
        Some(m) if m.left_seq.is_none() => m,
        _ => return Ok(OpOutcome::Rejected(Rejection::NotMember)),
    };
    let row: Option<TargetRow> = tx
        .prepare_cached(
            "SELECT sender_id, text, media_id, sent_at, deleted_at FROM messages
             WHERE conversation_id = ?1 AND seq = ?2",
        )?
        .query_row(params![c.conversation_id, c.seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((sender, text, media_id, sent_at, deleted_at)) = row else {
        return Ok(OpOutcome::Rejected(Rejection::UnknownMessage));
    };
    if !actor.saw(c.seq) {
        return Ok(OpOutcome::Rejected(Rejection::UnknownMessage));
    }
    if deleted_at.is_some() {
        return Ok(OpOutcome::Rejected(Rejection::MessageDeleted));
    }
    if let Some(r) = msgr_core::store::check_change(c, &sender, text.is_some(), sent_at) {
        return Ok(OpOutcome::Rejected(r));
    }
    if let Some(peer) = msgr_core::store::blocked_change_peer(c) {
        if let Some(r) = block_between(tx, &c.actor_id, peer)? {
            return Ok(OpOutcome::Rejected(r));
        }
    }
    let rev: u64 = tx
        .prepare_cached(
            "UPDATE conversations SET last_rev = last_rev + 1 WHERE conversation_id = ?1
             RETURNING last_rev",
        )?
        .query_row([&c.conversation_id], |r| r.get(0))?;
    let mut orphaned_media = None;
    match &c.kind {
        ChangeKind::Edit(new_text) => {
            tx.prepare_cached(
                "UPDATE messages SET text = ?3, edited_at = ?4, rev = ?5
                 WHERE conversation_id = ?1 AND seq = ?2",
            )?
            .execute(params![c.conversation_id, c.seq, new_text, c.at_ms, rev])?;
        }
        ChangeKind::Delete => {
            tx.prepare_cached(
                "UPDATE messages SET text = NULL, media_id = NULL, edited_at = NULL,
                 deleted_at = ?3, rev = ?4 WHERE conversation_id = ?1 AND seq = ?2",
            )?
            .execute(params![c.conversation_id, c.seq, c.at_ms, rev])?;
            tx.prepare_cached("DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2")?
                .execute(params![c.conversation_id, c.seq])?;
            // Quotes of it go too; those replies changed, so they carry the rev.
            tx.prepare_cached(
                "UPDATE messages SET reply_text = NULL, reply_media = 0, reply_deleted = 1, rev = ?3
                 WHERE conversation_id = ?1 AND reply_seq = ?2",
            )?
            .execute(params![c.conversation_id, c.seq, rev])?;
            if let Some(id) = media_id {
                tx.prepare_cached(
                    "DELETE FROM media_refs WHERE media_id = ?1 AND conversation_id = ?2 AND seq = ?3",
                )?
                .execute(params![id, c.conversation_id, c.seq])?;
                let referenced = tx
                    .prepare_cached("SELECT 1 FROM media_refs WHERE media_id = ?1 LIMIT 1")?
                    .query_row([&id], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !referenced {
                    tx.prepare_cached("DELETE FROM media WHERE media_id = ?1")?
                        .execute([&id])?;
                    tx.prepare_cached(
                        "INSERT INTO media_removals (media_id, at) VALUES (?1, ?2)
                         ON CONFLICT (media_id) DO NOTHING",
                    )?
                    .execute(params![id, c.at_ms])?;
                    orphaned_media = Some(id);
                }
            }
        }
        ChangeKind::React(emoji) => {
            match emoji {
                Some(e) => tx
                    .prepare_cached(
                        "INSERT INTO reactions (conversation_id, seq, user_id, emoji, at)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (conversation_id, seq, user_id)
                         DO UPDATE SET emoji = excluded.emoji, at = excluded.at",
                    )?
                    .execute(params![c.conversation_id, c.seq, c.actor_id, e, c.at_ms])?,
                None => tx
                    .prepare_cached(
                        "DELETE FROM reactions WHERE conversation_id = ?1 AND seq = ?2 AND user_id = ?3",
                    )?
                    .execute(params![c.conversation_id, c.seq, c.actor_id])?,
            };
            tx.prepare_cached(
                "UPDATE messages SET rev = ?3 WHERE conversation_id = ?1 AND seq = ?2",
            )?
            .execute(params![c.conversation_id, c.seq, rev])?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO client_changes (actor_id, client_msg_id, conversation_id, seq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![c.actor_id, c.client_msg_id, c.conversation_id, c.seq])?;
    match message_at(tx, &c.conversation_id, c.seq)? {
        Some(message) => Ok(OpOutcome::Changed {
            message,
            fresh: true,
            orphaned_media,
        }),
        None => Err(rusqlite::Error::QueryReturnedNoRows),
    }
}

/// See [`msgr_core::store::Store::changes`].
pub(crate) fn changes(
    conn: &Connection,
    conv: &str,
    caller: &str,
    after_rev: u64,
    limit: u32,
) -> rusqlite::Result<HistoryPage> {
    let limit = limit.clamp(1, 1000);
    let after_rev = after_rev.min(i64::MAX as u64); // what SQLite can bind
    let members = all_members(conn, conv)?;
    let Some(me) = members.iter().find(|m| m.user_id == caller) else {
        return Ok(HistoryPage {
            messages: Vec::new(),
            has_more: false,
            rev: 0,
        });
    };
    let hi = me.left_seq.unwrap_or(u64::MAX >> 1);
    // `rev > 0` spelled out: a planner may use the partial index on changed
    // messages only when the query implies its condition, whatever `after`.
    let mut rows: Vec<StoredMessage> = conn
        .prepare_cached(&format!(
            "{MESSAGE_SELECT} WHERE m.conversation_id = ?1 AND m.rev > 0 AND m.rev > ?2
             AND m.seq > ?3 AND m.seq <= ?4{} ORDER BY m.rev, m.seq LIMIT ?5",
            windows_clause(me)
        ))?
        .query_map(
            params![conv, after_rev, me.first_joined(), hi, limit + 1],
            row_to_message,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    fill_reactions(conn, conv, &mut rows)?;
    Ok(HistoryPage {
        messages: rows
            .into_iter()
            .map(|m| view(m, caller, &members))
            .collect(),
        has_more,
        rev: conversation_rev(conn, conv)?,
    })
}

pub(crate) fn block(conn: &Connection, user: &str, other: &str, at_ms: i64) -> StoreResult<bool> {
    if user == other {
        return Err(StoreError::Conflict("you cannot block yourself".to_owned()));
    }
    if !user_exists(conn, other).map_err(unavailable)? {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached(
        "INSERT OR IGNORE INTO blocks (blocker_id, blocked_id, at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut s| s.execute(params![user, other, at_ms]))
    .map(|n| n == 1)
    .map_err(unavailable)
}

pub(crate) fn unblock(conn: &Connection, user: &str, other: &str) -> StoreResult<bool> {
    conn.prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 AND blocked_id = ?2")
        .and_then(|mut s| s.execute([user, other]))
        .map(|n| n == 1)
        .map_err(unavailable)
}

pub(crate) fn blocked(conn: &Connection, user: &str) -> StoreResult<Vec<String>> {
    conn.prepare_cached(
        "SELECT blocked_id FROM blocks WHERE blocker_id = ?1 ORDER BY at, blocked_id",
    )
    .and_then(|mut s| s.query_map([user], |r| r.get(0))?.collect())
    .map_err(unavailable)
}

pub(crate) fn set_presence_visible(
    conn: &Connection,
    user: &str,
    visible: bool,
) -> StoreResult<()> {
    match conn
        .prepare_cached("UPDATE users SET presence_visible = ?2 WHERE user_id = ?1")
        .and_then(|mut s| s.execute(params![user, visible]))
        .map_err(unavailable)?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(crate) fn presence_visible(conn: &Connection, user: &str) -> StoreResult<bool> {
    conn.prepare_cached(
        "SELECT presence_visible FROM users WHERE user_id = ?1 AND username NOT LIKE '~%'",
    )
    .and_then(|mut s| s.query_row([user], |r| r.get(0)).optional())
    .map(|v| v.unwrap_or(false))
    .map_err(unavailable)
}

pub(crate) fn presence_allowed(
    conn: &Connection,
    caller: &str,
    others: &[String],
) -> StoreResult<Vec<String>> {
    let mut allowed = Vec::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT 1 FROM users u
             WHERE u.user_id = ?2 AND u.presence_visible = 1 AND u.username NOT LIKE '~%'
               AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = ?2 AND blocked_id = ?1)
               AND EXISTS (SELECT 1 FROM members a JOIN members b ON b.conversation_id = a.conversation_id
                           WHERE a.user_id = ?1 AND b.user_id = ?2
                             AND a.left_seq IS NULL AND b.left_seq IS NULL)",
        )
        .map_err(unavailable)?;
    for other in others {
        if other != caller
            && stmt
                .query_row([caller, other.as_str()], |_| Ok(()))
                .optional()
                .map_err(unavailable)?
                .is_some()
        {
            allowed.push(other.clone());
        }
    }
    Ok(allowed)
}
