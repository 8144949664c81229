//! Media metadata, and who may read an object: its uploader, and members who
//! saw a message carrying it.

use msgr_core::store::{MediaRecord, StoreError, StoreResult};
use rusqlite::{params, Connection, OptionalExtension};

use crate::unavailable;

pub(crate) const MEDIA_COLUMNS: &str =
    "media_id, uploader_id, content_type, size, sha256, has_thumbnail, created_at";

pub(crate) fn row_to_media(r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRecord> {
    Ok(MediaRecord {
        media_id: r.get(0)?,
        uploader_id: r.get(1)?,
        content_type: r.get(2)?,
        size: r.get(3)?,
        sha256: r.get(4)?,
        has_thumbnail: r.get(5)?,
        created_at_ms: r.get(6)?,
    })
}

/// The media `user_id` may read (see [`Store::media_for`]).
pub(crate) fn media_for(
    conn: &Connection,
    media_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<MediaRecord>> {
    let Some(m) = conn
        .prepare_cached(&format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = ?1"
        ))?
        .query_row([media_id], row_to_media)
        .optional()?
    else {
        return Ok(None);
    };
    if m.uploader_id == user_id {
        return Ok(Some(m));
    }
    let seen = conn
        .prepare_cached(
            "SELECT 1 FROM media_refs r JOIN members mb ON mb.conversation_id = r.conversation_id
             WHERE r.media_id = ?1 AND mb.user_id = ?2
               AND ((mb.joined_seq < r.seq AND (mb.left_seq IS NULL OR r.seq <= mb.left_seq))
                 OR EXISTS (SELECT 1 FROM member_windows w
                            WHERE w.conversation_id = r.conversation_id AND w.user_id = mb.user_id
                              AND w.joined_seq < r.seq AND r.seq <= w.left_seq))
             LIMIT 1",
        )?
        .query_row([media_id, user_id], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(seen.then_some(m))
}

pub(crate) fn create(conn: &Connection, media: &MediaRecord) -> StoreResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO media ({MEDIA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            media.media_id,
            media.uploader_id,
            media.content_type,
            media.size,
            media.sha256,
            media.has_thumbnail,
            media.created_at_ms
        ])
    })
    .map(|_| ())
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict("media id exists".to_owned())
        }
        e => unavailable(e),
    })
}

pub(crate) fn set_thumbnail(conn: &Connection, media_id: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE media SET has_thumbnail = 1 WHERE media_id = ?1")
        .and_then(|mut s| s.execute([media_id]))
        .map(|_| ())
        .map_err(unavailable)
}

pub(crate) fn removals(conn: &Connection, limit: usize) -> StoreResult<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached("SELECT media_id FROM media_removals ORDER BY at, media_id LIMIT ?1")
        .and_then(|mut s| {
            s.query_map([limit], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(unavailable)
}

pub(crate) fn removed(conn: &Connection, media_id: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM media_removals WHERE media_id = ?1")
        .and_then(|mut s| s.execute([media_id]))
        .map(|_| ())
        .map_err(unavailable)
}
