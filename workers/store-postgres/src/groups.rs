//! Groups: creation, membership over time (a member sees what was sent
//! while they were one), admins and the promotion when the last one leaves.
//! Every change locks the conversation row first, as the sequencer's group
//! appends do, so the seq a change takes effect at is exact.

use deadpool_postgres::{GenericClient, Object};
use msgr_core::store::{GroupError, GroupInfo, GroupMember, GroupRole, MembershipChange};

use crate::users::user_exists;
use crate::{exec, query, query_opt, unavailable};

fn store_err(e: msgr_core::store::StoreError) -> GroupError {
    GroupError::Store(e)
}

pub(crate) async fn group_info(
    c: &impl GenericClient,
    group_id: &str,
) -> msgr_core::store::StoreResult<Option<GroupInfo>> {
    let Some(head) = query_opt(
        c,
        "SELECT coalesce(title, ''), created_by FROM conversations
         WHERE conversation_id = $1 AND kind = 'group'",
        &[&group_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let (name, created_by): (String, Option<String>) = (head.get(0), head.get(1));
    let rows = query(
        c,
        "SELECT user_id, role, joined_at FROM members
         WHERE conversation_id = $1 AND left_seq IS NULL ORDER BY joined_at, user_id",
        &[&group_id],
    )
    .await?;
    let members = rows
        .iter()
        .map(|r| GroupMember {
            user_id: r.get(0),
            role: if r.get::<_, String>(1) == "admin" {
                GroupRole::Admin
            } else {
                GroupRole::Member
            },
            joined_at_ms: r.get(2),
        })
        .collect();
    Ok(Some(GroupInfo {
        group_id: group_id.to_owned(),
        name,
        created_by: created_by.unwrap_or_default(),
        members,
    }))
}

/// Locks the group's conversation row; `NotFound` if there is no such group.
async fn lock_group(c: &impl GenericClient, group_id: &str) -> Result<(), GroupError> {
    query_opt(
        c,
        "SELECT 1 FROM conversations WHERE conversation_id = $1 AND kind = 'group' FOR UPDATE",
        &[&group_id],
    )
    .await
    .map_err(store_err)?
    .map(|_| ())
    .ok_or(GroupError::NotFound)
}

/// The user's current role in a locked group, or `NotMember`.
async fn role_of(
    c: &impl GenericClient,
    group_id: &str,
    user_id: &str,
) -> Result<GroupRole, GroupError> {
    let role: Option<String> = query_opt(
        c,
        "SELECT role FROM members WHERE conversation_id = $1 AND user_id = $2 AND left_seq IS NULL",
        &[&group_id, &user_id],
    )
    .await
    .map_err(store_err)?
    .map(|r| r.get(0));
    match role.as_deref() {
        Some("admin") => Ok(GroupRole::Admin),
        Some(_) => Ok(GroupRole::Member),
        None => Err(GroupError::NotMember),
    }
}

async fn active_count(c: &impl GenericClient, group_id: &str) -> Result<usize, GroupError> {
    let n: i64 = query_opt(
        c,
        "SELECT count(*) FROM members WHERE conversation_id = $1 AND left_seq IS NULL",
        &[&group_id],
    )
    .await
    .map_err(store_err)?
    .map_or(0, |r| r.get(0));
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Inserts or re-activates a membership starting after the current last seq.
async fn join(
    c: &impl GenericClient,
    group_id: &str,
    user_id: &str,
    role: &str,
    at_ms: i64,
) -> Result<(), GroupError> {
    // Joining again: the window they had is kept (if anything was sent in it).
    exec(
        c,
        "INSERT INTO member_windows (conversation_id, user_id, joined_seq, left_seq)
         SELECT conversation_id, user_id, joined_seq, left_seq FROM members
         WHERE conversation_id = $1 AND user_id = $2 AND left_seq > joined_seq
         ON CONFLICT DO NOTHING",
        &[&group_id, &user_id],
    )
    .await
    .map_err(store_err)?;
    exec(
        c,
        "INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq, joined_at, joined_seq, left_seq)
         SELECT $1, $2, $3, last_seq, last_seq, $4, last_seq, NULL FROM conversations WHERE conversation_id = $1
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET
           role = excluded.role, delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq,
           joined_at = excluded.joined_at, joined_seq = excluded.joined_seq, left_seq = NULL",
        &[&group_id, &user_id, &role, &at_ms],
    )
    .await
    .map_err(store_err)?;
    Ok(())
}

pub(crate) async fn create(
    conn: &mut Object,
    group_id: &str,
    name: &str,
    creator: &str,
    others: &[String],
    at_ms: i64,
) -> Result<GroupInfo, GroupError> {
    let tx = conn
        .transaction()
        .await
        .map_err(|e| store_err(unavailable(e)))?;
    for u in std::iter::once(creator).chain(others.iter().map(String::as_str)) {
        if !user_exists(&tx, u).await.map_err(store_err)? {
            return Err(GroupError::UnknownUser(u.to_owned()));
        }
    }
    exec(
        &tx,
        "INSERT INTO conversations (conversation_id, kind, title, last_seq, updated_at, created_by)
         VALUES ($1, 'group', $2, 0, $3, $4)",
        &[&group_id, &name, &at_ms, &creator],
    )
    .await
    .map_err(store_err)?;
    join(&tx, group_id, creator, "admin", at_ms).await?;
    for u in others {
        join(&tx, group_id, u, "member", at_ms).await?;
    }
    let info = group_info(&tx, group_id)
        .await
        .map_err(store_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().await.map_err(|e| store_err(unavailable(e)))?;
    Ok(info)
}

pub(crate) async fn add_member(
    conn: &mut Object,
    group_id: &str,
    actor: &str,
    user_id: &str,
    max_members: usize,
    at_ms: i64,
) -> Result<MembershipChange, GroupError> {
    let tx = conn
        .transaction()
        .await
        .map_err(|e| store_err(unavailable(e)))?;
    lock_group(&tx, group_id).await?;
    if role_of(&tx, group_id, actor).await? != GroupRole::Admin {
        return Err(GroupError::NotAdmin);
    }
    if !user_exists(&tx, user_id).await.map_err(store_err)? {
        return Err(GroupError::UnknownUser(user_id.to_owned()));
    }
    let changed = match role_of(&tx, group_id, user_id).await {
        Ok(_) => false,
        Err(GroupError::NotMember) => {
            if active_count(&tx, group_id).await? + 1 > max_members {
                return Err(GroupError::TooManyMembers(max_members));
            }
            join(&tx, group_id, user_id, "member", at_ms).await?;
            true
        }
        Err(e) => return Err(e),
    };
    let group = group_info(&tx, group_id)
        .await
        .map_err(store_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().await.map_err(|e| store_err(unavailable(e)))?;
    Ok(MembershipChange {
        group,
        changed,
        promoted: None,
    })
}

pub(crate) async fn remove_member(
    conn: &mut Object,
    group_id: &str,
    actor: &str,
    user_id: &str,
) -> Result<MembershipChange, GroupError> {
    let tx = conn
        .transaction()
        .await
        .map_err(|e| store_err(unavailable(e)))?;
    lock_group(&tx, group_id).await?;
    let actor_role = role_of(&tx, group_id, actor).await?;
    if actor != user_id && actor_role != GroupRole::Admin {
        return Err(GroupError::NotAdmin);
    }
    let removed_role = role_of(&tx, group_id, user_id).await?;
    // Removal takes effect at the current last seq: everything sequenced
    // after this transaction is invisible to them.
    exec(
        &tx,
        "UPDATE members SET left_seq = (SELECT last_seq FROM conversations WHERE conversation_id = $1)
         WHERE conversation_id = $1 AND user_id = $2",
        &[&group_id, &user_id],
    )
    .await
    .map_err(store_err)?;
    let mut promoted = None;
    if removed_role == GroupRole::Admin {
        let admins: i64 = query_opt(
            &tx,
            "SELECT count(*) FROM members WHERE conversation_id = $1 AND left_seq IS NULL AND role = 'admin'",
            &[&group_id],
        )
        .await
        .map_err(store_err)?
        .map_or(0, |r| r.get(0));
        if admins == 0 {
            promoted = query_opt(
                &tx,
                "SELECT user_id FROM members WHERE conversation_id = $1 AND left_seq IS NULL
                 ORDER BY joined_at, user_id LIMIT 1",
                &[&group_id],
            )
            .await
            .map_err(store_err)?
            .map(|r| r.get::<_, String>(0));
            if let Some(p) = &promoted {
                exec(
                    &tx,
                    "UPDATE members SET role = 'admin' WHERE conversation_id = $1 AND user_id = $2",
                    &[&group_id, p],
                )
                .await
                .map_err(store_err)?;
            }
        }
    }
    let group = group_info(&tx, group_id)
        .await
        .map_err(store_err)?
        .ok_or(GroupError::NotFound)?;
    tx.commit().await.map_err(|e| store_err(unavailable(e)))?;
    Ok(MembershipChange {
        group,
        changed: true,
        promoted,
    })
}
