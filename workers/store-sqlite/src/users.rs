//! Accounts: creation (unique canonical usernames), look-ups, prefix search.

use msgr_core::store::{StoreError, StoreResult, UserRecord};
use rusqlite::{params, Connection, OptionalExtension};

use crate::unavailable;

const USER_SELECT: &str =
    "SELECT user_id, username, display_name, password_hash, created_at FROM users";

pub(crate) fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        password_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

pub(crate) fn user_exists(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1 AND username NOT LIKE '~%'")?
        .query_row([user_id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn create(conn: &Connection, user: &UserRecord) -> StoreResult<()> {
    let res = conn.execute(
        "INSERT INTO users (user_id, username, display_name, password_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            user.user_id,
            user.username,
            user.display_name,
            user.password_hash,
            user.created_at_ms
        ],
    );
    match res {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Conflict("username taken".to_owned()))
        }
        Err(e) => Err(unavailable(e)),
    }
}

pub(crate) fn by_username(conn: &Connection, username: &str) -> StoreResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("{USER_SELECT} WHERE username = ?1"))
        .and_then(|mut s| s.query_row([username], row_to_user).optional())
        .map_err(unavailable)
}

pub(crate) fn by_ids(conn: &Connection, ids: &[String]) -> StoreResult<Vec<UserRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "{USER_SELECT} WHERE user_id = ?1 AND username NOT LIKE '~%'"
        ))
        .map_err(unavailable)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(u) = stmt
            .query_row([id], row_to_user)
            .optional()
            .map_err(unavailable)?
        {
            out.push(u);
        }
    }
    Ok(out)
}

pub(crate) fn search(conn: &Connection, prefix: &str, limit: u32) -> StoreResult<Vec<UserRecord>> {
    // A range scan on the unique index: usernames only hold ASCII below
    // DEL, so `prefix || DEL` bounds every name with that prefix.
    let mut stmt = conn
        .prepare_cached(&format!(
            "{USER_SELECT} WHERE username >= ?1 AND username < ?1 || char(127) ORDER BY username LIMIT ?2"
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![prefix, limit], row_to_user)
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

/// A deleted account: the profile goes (username freed, name and password
/// hash cleared); the id stays on the messages others received. A deleted
/// row's username starts with `~`, which no username may.
pub(crate) fn delete(conn: &Connection, user_id: &str) -> StoreResult<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE users SET username = '~deleted-' || user_id, display_name = '', password_hash = ''
             WHERE user_id = ?1 AND username NOT LIKE '~%'",
        )
        .and_then(|mut st| st.execute([user_id]))
        .map_err(unavailable)?;
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")
        .and_then(|mut st| st.execute([user_id]))
        .map_err(unavailable)?;
    // Whom they blocked, and who blocked them, goes with the account.
    conn.prepare_cached("DELETE FROM blocks WHERE blocker_id = ?1 OR blocked_id = ?1")
        .and_then(|mut s| s.execute([user_id]))
        .map_err(unavailable)?;
    // User ids are unique tokens: a direct chat's id names both members.
    conn.prepare_cached(
        "UPDATE conversations SET closed = 1
         WHERE kind = 'direct' AND instr(conversation_id, ?1) > 0",
    )
    .and_then(|mut st| st.execute([user_id]))
    .map_err(unavailable)?;
    Ok(n > 0)
}
