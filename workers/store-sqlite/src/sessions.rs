//! Sessions (signed-in devices): created at login, extended by a refresh,
//! revoked by their user.

use msgr_core::store::{SessionRecord, StoreError, StoreResult};
use rusqlite::{params, Connection};

use crate::unavailable;

pub(crate) fn create(conn: &Connection, s: &SessionRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO sessions (session_id, user_id, created_at, expires_at, user_agent)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.session_id,
            s.user_id,
            s.created_at_ms,
            s.expires_at_ms,
            s.user_agent
        ])
    })
    .map(|_| ())
    .map_err(unavailable)
}

pub(crate) fn live(conn: &Connection, user_id: &str, now: i64) -> StoreResult<Vec<SessionRecord>> {
    let mut st = conn
        .prepare_cached(
            "SELECT session_id, user_id, created_at, expires_at, user_agent FROM sessions
             WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
             ORDER BY created_at DESC, session_id",
        )
        .map_err(unavailable)?;
    let rows = st
        .query_map(params![user_id, now], |r| {
            Ok(SessionRecord {
                session_id: r.get(0)?,
                user_id: r.get(1)?,
                created_at_ms: r.get(2)?,
                expires_at_ms: r.get(3)?,
                user_agent: r.get(4)?,
            })
        })
        .map_err(unavailable)?;
    rows.collect::<rusqlite::Result<_>>().map_err(unavailable)
}

pub(crate) fn extend(
    conn: &Connection,
    user_id: &str,
    session_id: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    let n = conn
        .prepare_cached(
            "UPDATE sessions SET expires_at = MAX(expires_at, ?4)
             WHERE session_id = ?1 AND user_id = ?2 AND revoked_at IS NULL AND expires_at > ?3",
        )
        .and_then(|mut st| st.execute(params![session_id, user_id, now, expires_at]))
        .map_err(unavailable)?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(crate) fn revoke(
    conn: &mut Connection,
    user_id: &str,
    session_id: Option<&str>,
    now: i64,
) -> StoreResult<Vec<String>> {
    let tx = conn.transaction().map_err(unavailable)?;
    let ids: Vec<String> = {
        let mut st = tx
            .prepare_cached(
                "SELECT session_id FROM sessions
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?3
                   AND (?2 IS NULL OR session_id = ?2)
                 ORDER BY session_id",
            )
            .map_err(unavailable)?;
        let rows = st
            .query_map(params![user_id, session_id, now], |r| r.get(0))
            .map_err(unavailable)?;
        rows.collect::<rusqlite::Result<_>>().map_err(unavailable)?
    };
    {
        let mut st = tx
            .prepare_cached("UPDATE sessions SET revoked_at = ?2 WHERE session_id = ?1")
            .map_err(unavailable)?;
        for id in &ids {
            st.execute(params![id, now]).map_err(unavailable)?;
        }
    }
    tx.commit().map_err(unavailable)?;
    Ok(ids)
}
