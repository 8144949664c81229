//! Changes to stored messages (edits, deletes for everyone, reactions), the
//! "changed since" query, blocking and presence privacy (as in
//! `msgr-store-sqlite`'s `changes`).

use deadpool_postgres::GenericClient;
use msgr_core::store::{
    ChangeKind, HistoryPage, MessageChange, OpOutcome, Reaction, Rejection, StoreError,
    StoreResult, StoredMessage,
};

use crate::messages::{
    all_members, member, message_at, row_to_message, view, windows_clause, MESSAGE_SELECT,
};
use crate::users::user_exists;
use crate::{exec, i, query, query_opt, u};

/// Puts each message's reactions on it: one query for the whole slice, for
/// exactly its seqs (a page of changes is scattered over the conversation).
pub(crate) async fn fill_reactions(
    c: &impl GenericClient,
    conv: &str,
    msgs: &mut [StoredMessage],
) -> StoreResult<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let at: std::collections::HashMap<u64, usize> =
        msgs.iter().enumerate().map(|(n, m)| (m.seq, n)).collect();
    let seqs: Vec<i64> = at.keys().map(|s| i(*s)).collect();
    let rows = query(
        c,
        "SELECT seq, user_id, emoji FROM reactions
         WHERE conversation_id = $1 AND seq = ANY($2) ORDER BY seq, at, user_id",
        &[&conv, &seqs],
    )
    .await?;
    for r in rows {
        if let Some(&n) = at.get(&u(r.get(0))) {
            msgs[n].reactions.push(Reaction {
                user_id: r.get(1),
                emoji: r.get(2),
            });
        }
    }
    Ok(())
}

/// The conversation's change counter (0 if unknown).
pub(crate) async fn conversation_rev(c: &impl GenericClient, conv: &str) -> StoreResult<u64> {
    Ok(query_opt(
        c,
        "SELECT last_rev FROM conversations WHERE conversation_id = $1",
        &[&conv],
    )
    .await?
    .map_or(0, |r| u(r.get(0))))
}

/// Why `sender` may not send to `to` in a direct chat, if a block stands
/// between them (the sender's own block first: they can lift it).
pub(crate) async fn block_between(
    c: &impl GenericClient,
    sender: &str,
    to: &str,
) -> StoreResult<Option<Rejection>> {
    let rows = query(
        c,
        "SELECT blocker_id FROM blocks WHERE (blocker_id = $1 AND blocked_id = $2)
         OR (blocker_id = $2 AND blocked_id = $1)",
        &[&sender, &to],
    )
    .await?;
    let blockers: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(if blockers.iter().any(|b| b == sender) {
        Some(Rejection::YouBlocked)
    } else if blockers.is_empty() {
        None
    } else {
        Some(Rejection::RecipientUnavailable)
    })
}

/// Applies one change inside the sequencer's transaction.
pub(crate) async fn change(c: &impl GenericClient, ch: &MessageChange) -> StoreResult<OpOutcome> {
    let seen = query_opt(
        c,
        "SELECT conversation_id, seq FROM client_changes WHERE actor_id = $1 AND client_msg_id = $2",
        &[&ch.actor_id, &ch.client_msg_id],
    )
    .await?;
    if let Some(row) = seen {
        let (conv, seq): (String, i64) = (row.get(0), row.get(1));
        return match message_at(c, &conv, u(seq)).await? {
            Some(message) => Ok(OpOutcome::Changed {
                message,
                fresh: false,
                orphaned_media: None,
            }),
            None => Err(StoreError::Corrupt(format!(
                "change entry without its message: {conv} seq {seq}"
            ))),
        };
    }
    // The conversation row first, as appends and membership changes lock it.
    if query_opt(
        c,
        "SELECT 1 FROM conversations WHERE conversation_id = $1 FOR UPDATE",
        &[&ch.conversation_id],
    )
    .await?
    .is_none()
    {
        return Ok(OpOutcome::Rejected(Rejection::NotMember));
    }
    // Only current members change anything (a former member's view is frozen).
    let actor = match member(c, &ch.conversation_id, &ch.actor_id).await? {
        Some(m) if m.left_seq.is_none() => m,
        _ => return Ok(OpOutcome::Rejected(Rejection::NotMember)),
    };
    let seq_i = i(ch.seq);
    let Some(row) = query_opt(
        c,
        "SELECT sender_id, text, media_id, sent_at, deleted_at FROM messages
         WHERE conversation_id = $1 AND seq = $2",
        &[&ch.conversation_id, &seq_i],
    )
    .await?
    else {
        return Ok(OpOutcome::Rejected(Rejection::UnknownMessage));
    };
    let (sender, text, media_id, sent_at, deleted_at): (
        String,
        Option<String>,
        Option<String>,
        i64,
        Option<i64>,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if !actor.saw(ch.seq) {
        return Ok(OpOutcome::Rejected(Rejection::UnknownMessage));
    }
    if deleted_at.is_some() {
        return Ok(OpOutcome::Rejected(Rejection::MessageDeleted));
    }
    if let Some(r) = msgr_core::store::check_change(ch, &sender, text.is_some(), sent_at) {
        return Ok(OpOutcome::Rejected(r));
    }
    if let Some(peer) = msgr_core::store::blocked_change_peer(ch) {
        if let Some(r) = block_between(c, &ch.actor_id, peer).await? {
            return Ok(OpOutcome::Rejected(r));
        }
    }
    let rev: i64 = query_opt(
        c,
        "UPDATE conversations SET last_rev = last_rev + 1 WHERE conversation_id = $1
         RETURNING last_rev",
        &[&ch.conversation_id],
    )
    .await?
    .map_or(0, |r| r.get(0));
    let conv = &ch.conversation_id;
    let mut orphaned_media = None;
    match &ch.kind {
        ChangeKind::Edit(new_text) => {
            exec(
                c,
                "UPDATE messages SET text = $3, edited_at = $4, rev = $5
                 WHERE conversation_id = $1 AND seq = $2",
                &[conv, &seq_i, new_text, &ch.at_ms, &rev],
            )
            .await?;
        }
        ChangeKind::Delete => {
            exec(
                c,
                "UPDATE messages SET text = NULL, media_id = NULL, edited_at = NULL,
                 deleted_at = $3, rev = $4 WHERE conversation_id = $1 AND seq = $2",
                &[conv, &seq_i, &ch.at_ms, &rev],
            )
            .await?;
            exec(
                c,
                "DELETE FROM reactions WHERE conversation_id = $1 AND seq = $2",
                &[conv, &seq_i],
            )
            .await?;
            // Quotes of it go too; those replies changed, so they carry the rev.
            exec(
                c,
                "UPDATE messages SET reply_text = NULL, reply_media = FALSE, reply_deleted = TRUE,
                 rev = $3 WHERE conversation_id = $1 AND reply_seq = $2",
                &[conv, &seq_i, &rev],
            )
            .await?;
            if let Some(id) = media_id {
                exec(
                    c,
                    "DELETE FROM media_refs WHERE media_id = $1 AND conversation_id = $2 AND seq = $3",
                    &[&id, conv, &seq_i],
                )
                .await?;
                let referenced = query_opt(
                    c,
                    "SELECT 1 FROM media_refs WHERE media_id = $1 LIMIT 1",
                    &[&id],
                )
                .await?
                .is_some();
                if !referenced {
                    exec(c, "DELETE FROM media WHERE media_id = $1", &[&id]).await?;
                    exec(
                        c,
                        "INSERT INTO media_removals (media_id, at) VALUES ($1, $2)
                         ON CONFLICT (media_id) DO NOTHING",
                        &[&id, &ch.at_ms],
                    )
                    .await?;
                    orphaned_media = Some(id);
                }
            }
        }
        ChangeKind::React(emoji) => {
            match emoji {
                Some(e) => {
                    exec(
                        c,
                        "INSERT INTO reactions (conversation_id, seq, user_id, emoji, at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (conversation_id, seq, user_id)
                         DO UPDATE SET emoji = EXCLUDED.emoji, at = EXCLUDED.at",
                        &[conv, &seq_i, &ch.actor_id, e, &ch.at_ms],
                    )
                    .await?
                }
                None => {
                    exec(
                        c,
                        "DELETE FROM reactions WHERE conversation_id = $1 AND seq = $2 AND user_id = $3",
                        &[conv, &seq_i, &ch.actor_id],
                    )
                    .await?
                }
            };
            exec(
                c,
                "UPDATE messages SET rev = $3 WHERE conversation_id = $1 AND seq = $2",
                &[conv, &seq_i, &rev],
            )
            .await?;
        }
    }
    exec(
        c,
        "INSERT INTO client_changes (actor_id, client_msg_id, conversation_id, seq) VALUES ($1, $2, $3, $4)",
        &[&ch.actor_id, &ch.client_msg_id, conv, &seq_i],
    )
    .await?;
    match message_at(c, conv, ch.seq).await? {
        Some(message) => Ok(OpOutcome::Changed {
            message,
            fresh: true,
            orphaned_media,
        }),
        None => Err(StoreError::Corrupt(format!(
            "message {conv} seq {} vanished",
            ch.seq
        ))),
    }
}

/// See [`msgr_core::store::Store::changes`].
pub(crate) async fn changes(
    c: &impl GenericClient,
    conv: &str,
    caller: &str,
    after_rev: u64,
    limit: u32,
) -> StoreResult<HistoryPage> {
    let limit = limit.clamp(1, 1000);
    let members = all_members(c, conv).await?;
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
    let rows = query(
        c,
        &format!(
            "{MESSAGE_SELECT} WHERE m.conversation_id = $1 AND m.rev > 0 AND m.rev > $2
             AND m.seq > $3 AND m.seq <= $4{} ORDER BY m.rev, m.seq LIMIT $5",
            windows_clause(me)
        ),
        &[
            &conv,
            &i(after_rev),
            &i(me.first_joined()),
            &i(hi),
            &i(u64::from(limit) + 1),
        ],
    )
    .await?;
    let mut msgs: Vec<StoredMessage> = rows.iter().map(row_to_message).collect();
    let has_more = msgs.len() > limit as usize;
    msgs.truncate(limit as usize);
    fill_reactions(c, conv, &mut msgs).await?;
    Ok(HistoryPage {
        messages: msgs
            .into_iter()
            .map(|m| view(m, caller, &members))
            .collect(),
        has_more,
        rev: conversation_rev(c, conv).await?,
    })
}

pub(crate) async fn block(
    c: &impl GenericClient,
    user: &str,
    other: &str,
    at_ms: i64,
) -> StoreResult<bool> {
    if user == other {
        return Err(StoreError::Conflict("you cannot block yourself".to_owned()));
    }
    if !user_exists(c, other).await? {
        return Err(StoreError::NotFound);
    }
    Ok(exec(
        c,
        "INSERT INTO blocks (blocker_id, blocked_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&user, &other, &at_ms],
    )
    .await?
        == 1)
}

pub(crate) async fn unblock(c: &impl GenericClient, user: &str, other: &str) -> StoreResult<bool> {
    Ok(exec(
        c,
        "DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2",
        &[&user, &other],
    )
    .await?
        == 1)
}

pub(crate) async fn blocked(c: &impl GenericClient, user: &str) -> StoreResult<Vec<String>> {
    Ok(query(
        c,
        "SELECT blocked_id FROM blocks WHERE blocker_id = $1 ORDER BY at, blocked_id",
        &[&user],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub(crate) async fn set_presence_visible(
    c: &impl GenericClient,
    user: &str,
    visible: bool,
) -> StoreResult<()> {
    match exec(
        c,
        "UPDATE users SET presence_visible = $2 WHERE user_id = $1",
        &[&user, &visible],
    )
    .await?
    {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

pub(crate) async fn presence_visible(c: &impl GenericClient, user: &str) -> StoreResult<bool> {
    Ok(query_opt(
        c,
        "SELECT presence_visible FROM users WHERE user_id = $1 AND username NOT LIKE '~%'",
        &[&user],
    )
    .await?
    .is_some_and(|r| r.get(0)))
}

pub(crate) async fn presence_allowed(
    c: &impl GenericClient,
    caller: &str,
    others: &[String],
) -> StoreResult<Vec<String>> {
    let mut allowed = Vec::new();
    for other in others {
        if other == caller {
            continue;
        }
        let ok = query_opt(
            c,
            "SELECT 1 FROM users u
             WHERE u.user_id = $2 AND u.presence_visible AND u.username NOT LIKE '~%'
               AND NOT EXISTS (SELECT 1 FROM blocks WHERE blocker_id = $2 AND blocked_id = $1)
               AND EXISTS (SELECT 1 FROM members a JOIN members b ON b.conversation_id = a.conversation_id
                           WHERE a.user_id = $1 AND b.user_id = $2
                             AND a.left_seq IS NULL AND b.left_seq IS NULL)",
            &[&caller, &other.as_str()],
        )
        .await?
        .is_some();
        if ok {
            allowed.push(other.clone());
        }
    }
    Ok(allowed)
}
