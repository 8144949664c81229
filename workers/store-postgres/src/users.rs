//! Accounts: creation (unique canonical usernames), look-ups, prefix search.

use deadpool_postgres::GenericClient;
use msgr_core::store::{StoreError, StoreResult, UserRecord};
use tokio_postgres::Row;

use crate::{is_unique_violation, query, query_opt, unavailable};

const USER_SELECT: &str =
    "SELECT user_id, username, display_name, password_hash, created_at FROM users";

fn row_to_user(r: &Row) -> UserRecord {
    UserRecord {
        user_id: r.get(0),
        username: r.get(1),
        display_name: r.get(2),
        password_hash: r.get(3),
        created_at_ms: r.get(4),
    }
}

pub(crate) async fn user_exists(c: &impl GenericClient, user_id: &str) -> StoreResult<bool> {
    Ok(query_opt(
        c,
        "SELECT 1 FROM users WHERE user_id = $1 AND username NOT LIKE '~%'",
        &[&user_id],
    )
    .await?
    .is_some())
}

pub(crate) async fn create(c: &impl GenericClient, user: &UserRecord) -> StoreResult<()> {
    let st = c
        .prepare_cached(
            "INSERT INTO users (user_id, username, display_name, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .map_err(unavailable)?;
    match c
        .execute(
            &st,
            &[
                &user.user_id,
                &user.username,
                &user.display_name,
                &user.password_hash,
                &user.created_at_ms,
            ],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict("username taken".to_owned())),
        Err(e) => Err(unavailable(e)),
    }
}

pub(crate) async fn by_username(
    c: &impl GenericClient,
    username: &str,
) -> StoreResult<Option<UserRecord>> {
    let sql = format!("{USER_SELECT} WHERE username = $1");
    Ok(query_opt(c, &sql, &[&username])
        .await?
        .as_ref()
        .map(row_to_user))
}

pub(crate) async fn by_ids(c: &impl GenericClient, ids: &[String]) -> StoreResult<Vec<UserRecord>> {
    // One query for all; answered in the order asked, unknown ids left out.
    let sql = format!("{USER_SELECT} WHERE user_id = ANY($1) AND username NOT LIKE '~%'");
    let rows = query(c, &sql, &[&ids]).await?;
    let mut found: std::collections::HashMap<String, UserRecord> = rows
        .iter()
        .map(row_to_user)
        .map(|u| (u.user_id.clone(), u))
        .collect();
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

pub(crate) async fn search(
    c: &impl GenericClient,
    prefix: &str,
    limit: u32,
) -> StoreResult<Vec<UserRecord>> {
    // A range scan on the unique index (bytewise collation): usernames only
    // hold ASCII below DEL, so `prefix || DEL` bounds every name with it.
    let sql = format!(
        "{USER_SELECT} WHERE username >= $1 AND username < $1 || chr(127) ORDER BY username LIMIT $2"
    );
    let rows = query(c, &sql, &[&prefix, &i64::from(limit)]).await?;
    Ok(rows.iter().map(row_to_user).collect())
}

/// A deleted account: the profile goes (username freed, name and password
/// hash cleared); the id stays on the messages others received. A deleted
/// row's username starts with `~`, which no username may.
pub(crate) async fn delete(c: &impl GenericClient, user_id: &str) -> StoreResult<bool> {
    let n = crate::exec(
        c,
        "UPDATE users SET username = '~deleted-' || user_id, display_name = '', password_hash = ''
         WHERE user_id = $1 AND username NOT LIKE '~%'",
        &[&user_id],
    )
    .await?;
    crate::exec(c, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
    // Whom they blocked, and who blocked them, goes with the account.
    crate::exec(
        c,
        "DELETE FROM blocks WHERE blocker_id = $1 OR blocked_id = $1",
        &[&user_id],
    )
    .await?;
    // User ids are unique tokens: a direct chat's id names both members.
    crate::exec(
        c,
        "UPDATE conversations SET closed = TRUE
         WHERE kind = 'direct' AND strpos(conversation_id, $1) > 0",
        &[&user_id],
    )
    .await?;
    Ok(n > 0)
}
