//! Groups: creation, membership over time (a member sees what was sent
//! while they were one), admins and the promotion when the last one leaves.

use msgr_core::store::{GroupError, GroupInfo, GroupMember, GroupRole, MembershipChange};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::unavailable;
use crate::users::user_exists;

pub(crate) fn group_info(conn: &Connection, group_id: &str) -> rusqlite::Result<Option<GroupInfo>> {
    let head: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT coalesce(title, ''), created_by FROM conversations
             WHERE conversation_id = ?1 AND kind = 'group'",
        )?
        .query_row([group_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((name, created_by)) = head else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached(
            "SELECT user_id, role, joined_at FROM members
             WHERE conversation_id = ?1 AND left_seq IS NULL ORDER BY joined_at, user_id",
        )?
        .query_map([group_id], |r| {
            let role: String = r.get(1)?;
            Ok(GroupMember {
                user_id: r.get(0)?,
                role: if role == "admin" {
                    GroupRole::Admin
                } else {
                    GroupRole::Member
                },
                joined_at_ms: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(GroupInfo {
        group_id: group_id.to_owned(),
        name,
        created_by: created_by.unwrap_or_default(),
        members,
    }))
}

pub(crate) fn group_err(e: rusqlite::Error) -> GroupError {
    GroupError::Store(unavailable(e))
}

/// The caller's current role in a group, or the right error.
pub(crate) fn role_of(
    tx: &rusqlite::Transaction<'_>,
    group_id: &str,
    user_id: &str,
) -> Result<GroupRole, GroupError> {
    let exists: bool = tx
        .prepare_cached("SELECT 1 FROM conversations WHERE conversation_id = ?1 AND kind = 'group'")
        .and_then(|mut s| s.query_row([group_id], |_| Ok(())).optional())
        .map_err(group_err)?
        .is_some();
    if !exists {
        return Err(GroupError::NotFound);
    }
    let role: Option<String> = tx
        .prepare_cached(
            "SELECT role FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )
        .and_then(|mut s| s.query_row([group_id, user_id], |r| r.get(0)).optional())
        .map_err(group_err)?;
    match role.as_deref() {
        Some("admin") => Ok(GroupRole::Admin),
        Some(_) => Ok(GroupRole::Member),
        None => Err(GroupError::NotMember),
    }
}

pub(crate) fn active_count(
    tx: &rusqlite::Transaction<'_>,
    group_id: &str,
) -> Result<usize, GroupError> {
    tx.prepare_cached(
        "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL",
    )
    .and_then(|mut s| s.query_row([group_id], |r| r.get::<_, i64>(0)))
    .map(|n| usize::try_from(n).unwrap_or(0))
    .map_err(group_err)
}

/// Inserts or re-activates a membership starting after the current last seq.
pub(crate) fn join(
    tx: &rusqlite::Transaction<'_>,
    group_id: &str,
    user_id: &str,
    role: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let last_seq: u64 = tx
        .prepare_cached("SELECT last_seq FROM conversations WHERE conversation_id = ?1")?
        .query_row([group_id], |r| r.get(0))?;
    // Joining again: the window they had is kept (if anything was sent in it).
    tx.prepare_cached(
        "INSERT OR IGNORE INTO member_windows (conversation_id, user_id, joined_seq, left_seq)
         SELECT conversation_id, user_id, joined_seq, left_seq FROM members
         WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq > joined_seq",
    )?
    .execute(params![group_id, user_id])?;
    tx.prepare_cached(
        "INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq, joined_at, joined_seq, left_seq)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?4, NULL)
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET
           role = excluded.role, delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq,
           joined_at = excluded.joined_at, joined_seq = excluded.joined_seq, left_seq = NULL",
    )?
    .execute(params![group_id, user_id, role, last_seq, at_ms])?;
    Ok(())
}

pub(crate) fn create(
    conn: &mut Connection,
    group_id: &str,
    name: &str,
    creator: &str,
    others: &[String],
    at_ms: i64,
) -> Result<GroupInfo, GroupError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(group_err)?;
    for u in std::iter::once(creator).chain(others.iter().map(String::as_str)) {
        if !user_exists(&tx, u).map_err(group_err)? {
            return Err(GroupError::UnknownUser(u.to_owned()));
        }
    }
    tx.prepare_cached(
        "INSERT INTO conversations (conversation_id, kind, title, last_seq, updated_at, created_by)
         VALUES (?1, 'group', ?2, 0, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![group_id, name, at_ms, creator]))
    .map_err(group_err)?;
    join(&tx, group_id, creator, "admin", at_ms).map_err(group_err)?;
    for u in others {
        join(&tx, group_id, u, "member", at_ms).map_err(group_err)?;
    }
    let info = group_info(&tx, group_id)
        .map_err(group_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().map_err(group_err)?;
    Ok(info)
}

pub(crate) fn add_member(
    conn: &mut Connection,
    group_id: &str,
    actor: &str,
    user_id: &str,
    max_members: usize,
    at_ms: i64,
) -> Result<MembershipChange, GroupError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(group_err)?;
    if role_of(&tx, group_id, actor)? != GroupRole::Admin {
        return Err(GroupError::NotAdmin);
    }
    if !user_exists(&tx, user_id).map_err(group_err)? {
        return Err(GroupError::UnknownUser(user_id.to_owned()));
    }
    let changed = match role_of(&tx, group_id, user_id) {
        Ok(_) => false,
        Err(GroupError::NotMember) => {
            if active_count(&tx, group_id)? + 1 > max_members {
                return Err(GroupError::TooManyMembers(max_members));
            }
            join(&tx, group_id, user_id, "member", at_ms).map_err(group_err)?;
            true
        }
        Err(e) => return Err(e),
    };
    let group = group_info(&tx, group_id)
        .map_err(group_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().map_err(group_err)?;
    Ok(MembershipChange {
        group,
        changed,
        promoted: None,
    })
}

pub(crate) fn remove_member(
    conn: &mut Connection,
    group_id: &str,
    actor: &str,
    user_id: &str,
) -> Result<MembershipChange, GroupError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(group_err)?;
    let actor_role = role_of(&tx, group_id, actor)?;
    if actor != user_id && actor_role != GroupRole::Admin {
        return Err(GroupError::NotAdmin);
    }
    let removed_role = role_of(&tx, group_id, user_id)?;
    // Removal takes effect at the current last seq: everything sequenced
    // after this transaction is invisible to them.
    tx.prepare_cached(
        "UPDATE members SET left_seq = (SELECT last_seq FROM conversations WHERE conversation_id = ?1)
         WHERE conversation_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut s| s.execute(params![group_id, user_id]))
    .map_err(group_err)?;
    let mut promoted = None;
    if removed_role == GroupRole::Admin {
        let admins: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL AND role = 'admin'",
            )
            .and_then(|mut s| s.query_row([group_id], |r| r.get(0)))
            .map_err(group_err)?;
        if admins == 0 {
            promoted = tx
                .prepare_cached(
                    "SELECT user_id FROM members WHERE conversation_id = ?1 AND left_seq IS NULL
                     ORDER BY joined_at, user_id LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([group_id], |r| r.get::<_, String>(0))
                        .optional()
                })
                .map_err(group_err)?;
            if let Some(p) = &promoted {
                tx.prepare_cached(
                    "UPDATE members SET role = 'admin' WHERE conversation_id = ?1 AND user_id = ?2",
                )
                .and_then(|mut s| s.execute(params![group_id, p]))
                .map_err(group_err)?;
            }
        }
    }
    let group = group_info(&tx, group_id)
        .map_err(group_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().map_err(group_err)?;
    Ok(MembershipChange {
        group,
        changed: true,
        promoted,
    })
}
