//! Sessions (signed-in devices): created at login, extended by a refresh,
//! revoked by their user.

use deadpool_postgres::GenericClient;
use msgr_core::store::{SessionRecord, StoreError, StoreResult};

use crate::{exec, query};

pub(crate) async fn create(c: &impl GenericClient, s: &SessionRecord) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO sessions (session_id, user_id, created_at, expires_at, user_agent)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &s.session_id,
            &s.user_id,
            &s.created_at_ms,
            &s.expires_at_ms,
            &s.user_agent,
        ],
    )
    .await
    .map(|_| ())
}

pub(crate) async fn live(
    c: &impl GenericClient,
    user_id: &str,
    now: i64,
) -> StoreResult<Vec<SessionRecord>> {
    Ok(query(
        c,
        "SELECT session_id, user_id, created_at, expires_at, user_agent FROM sessions
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
         ORDER BY created_at DESC, session_id",
        &[&user_id, &now],
    )
    .await?
    .iter()
    .map(|r| SessionRecord {
        session_id: r.get(0),
        user_id: r.get(1),
        created_at_ms: r.get(2),
        expires_at_ms: r.get(3),
        user_agent: r.get(4),
    })
    .collect())
}

pub(crate) async fn extend(
    c: &impl GenericClient,
    user_id: &str,
    session_id: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    let n = exec(
        c,
        "UPDATE sessions SET expires_at = GREATEST(expires_at, $4)
         WHERE session_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $3",
        &[&session_id, &user_id, &now, &expires_at],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) async fn revoke(
    c: &impl GenericClient,
    user_id: &str,
    session_id: Option<&str>,
    now: i64,
) -> StoreResult<Vec<String>> {
    // One statement: the rows it marks are the ones it returns.
    let mut ids: Vec<String> = query(
        c,
        "UPDATE sessions SET revoked_at = $3
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $3
           AND ($2::TEXT IS NULL OR session_id = $2)
         RETURNING session_id",
        &[&user_id, &session_id, &now],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    ids.sort();
    Ok(ids)
}
