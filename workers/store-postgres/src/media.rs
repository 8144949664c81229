//! Media metadata, and who may read an object: its uploader, and members who
//! saw a message carrying it.

use deadpool_postgres::GenericClient;
use msgr_core::store::{MediaRecord, StoreError, StoreResult};
use tokio_postgres::Row;

use crate::{exec, i, is_unique_violation, query_opt, u, unavailable};

pub(crate) const MEDIA_COLUMNS: &str =
    "media_id, uploader_id, content_type, size, sha256, has_thumbnail, created_at";

fn row_to_media(r: &Row) -> MediaRecord {
    MediaRecord {
        media_id: r.get(0),
        uploader_id: r.get(1),
        content_type: r.get(2),
        size: u(r.get(3)),
        sha256: r.get(4),
        has_thumbnail: r.get(5),
        created_at_ms: r.get(6),
    }
}

/// The media `user_id` may read (see `Store::media_for`).
pub(crate) async fn media_for(
    c: &impl GenericClient,
    media_id: &str,
    user_id: &str,
) -> StoreResult<Option<MediaRecord>> {
    let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = $1");
    let Some(m) = query_opt(c, &sql, &[&media_id])
        .await?
        .as_ref()
        .map(row_to_media)
    else {
        return Ok(None);
    };
    if m.uploader_id == user_id {
        return Ok(Some(m));
    }
    let seen = query_opt(
        c,
        "SELECT 1 FROM media_refs r JOIN members mb ON mb.conversation_id = r.conversation_id
         WHERE r.media_id = $1 AND mb.user_id = $2
           AND ((mb.joined_seq < r.seq AND (mb.left_seq IS NULL OR r.seq <= mb.left_seq))
             OR EXISTS (SELECT 1 FROM member_windows w
                        WHERE w.conversation_id = r.conversation_id AND w.user_id = mb.user_id
                          AND w.joined_seq < r.seq AND r.seq <= w.left_seq))
         LIMIT 1",
        &[&media_id, &user_id],
    )
    .await?
    .is_some();
    Ok(seen.then_some(m))
}

pub(crate) async fn create(c: &impl GenericClient, media: &MediaRecord) -> StoreResult<()> {
    let st = c
        .prepare_cached(&format!(
            "INSERT INTO media ({MEDIA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .await
        .map_err(unavailable)?;
    match c
        .execute(
            &st,
            &[
                &media.media_id,
                &media.uploader_id,
                &media.content_type,
                &i(media.size),
                &media.sha256,
                &media.has_thumbnail,
                &media.created_at_ms,
            ],
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            Err(StoreError::Conflict("media id exists".to_owned()))
        }
        Err(e) => Err(unavailable(e)),
    }
}

pub(crate) async fn set_thumbnail(c: &impl GenericClient, media_id: &str) -> StoreResult<()> {
    exec(
        c,
        "UPDATE media SET has_thumbnail = TRUE WHERE media_id = $1",
        &[&media_id],
    )
    .await
    .map(|_| ())
}

pub(crate) async fn removals(c: &impl GenericClient, limit: usize) -> StoreResult<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = crate::query(
        c,
        "SELECT media_id FROM media_removals ORDER BY at, media_id LIMIT $1",
        &[&limit],
    )
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn removed(c: &impl GenericClient, media_id: &str) -> StoreResult<()> {
    exec(
        c,
        "DELETE FROM media_removals WHERE media_id = $1",
        &[&media_id],
    )
    .await
    .map(|_| ())
}
