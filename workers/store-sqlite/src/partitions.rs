//! Sequencer claims on partitions: the fencing token a batch must carry, and
//! the point in the command log where a new holder resumes.

use msgr_core::store::{Fence, PartitionClaim, StoreError, StoreResult};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::unavailable;

/// A newer epoch than any before for `partition`; the resume point is kept
/// unless the log is another one.
pub(crate) fn claim(
    conn: &mut Connection,
    partition: u32,
    holder: &str,
    log: &str,
    now_ms: i64,
) -> StoreResult<PartitionClaim> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let current: Option<(u64, String, u64)> = tx
        .prepare_cached("SELECT epoch, log, position FROM partition_claims WHERE partition = ?1")
        .and_then(|mut s| {
            s.query_row([partition], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(unavailable)?;
    let (epoch, position) = match current {
        Some((epoch, old_log, position)) => (epoch + 1, if old_log == log { position } else { 0 }),
        None => (1, 0),
    };
    tx.prepare_cached(
        "INSERT INTO partition_claims (partition, epoch, holder, log, position, claimed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch, holder = excluded.holder,
           log = excluded.log, position = excluded.position, claimed_at = excluded.claimed_at",
    )
    .and_then(|mut s| s.execute(params![partition, epoch, holder, log, position, now_ms]))
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(PartitionClaim {
        partition,
        epoch,
        resume_after: position,
    })
}

/// Inside a batch's transaction: `Ok(Err(Fenced))` if the fence is stale
/// (the batch must then write nothing), else records its resume point.
pub(crate) fn check_and_advance(
    tx: &Connection,
    fence: &Fence,
) -> rusqlite::Result<Result<(), StoreError>> {
    let epoch: Option<u64> = tx
        .prepare_cached("SELECT epoch FROM partition_claims WHERE partition = ?1")?
        .query_row([fence.partition], |r| r.get(0))
        .optional()?;
    let current = epoch.unwrap_or(0);
    if current != fence.epoch {
        return Ok(Err(StoreError::Fenced {
            partition: fence.partition,
            current,
            batch: fence.epoch,
        }));
    }
    tx.prepare_cached(
        "UPDATE partition_claims SET position = max(position, ?2) WHERE partition = ?1",
    )?
    .execute(params![fence.partition, fence.done_through])?;
    Ok(Ok(()))
}
