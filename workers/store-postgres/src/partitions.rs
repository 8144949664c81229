//! Sequencer claims on partitions: the fencing token a batch must carry, and
//! the point in the command log where a new holder resumes.

use deadpool_postgres::{GenericClient, Object};
use msgr_core::store::{Fence, PartitionClaim, StoreError, StoreResult};

use crate::{exec, i, query_opt, u, unavailable};

/// A newer epoch than any before for `partition`; the resume point is kept
/// unless the log is another one. The row lock serialises the claim with
/// the batches of the partition in flight.
pub(crate) async fn claim(
    conn: &mut Object,
    partition: u32,
    holder: &str,
    log: &str,
    now_ms: i64,
) -> StoreResult<PartitionClaim> {
    let tx = conn.transaction().await.map_err(unavailable)?;
    let p = i64::from(partition);
    // Make sure the row exists, then lock it.
    exec(
        &tx,
        "INSERT INTO partition_claims (partition, epoch, holder, log, position, claimed_at)
         VALUES ($1, 0, $2, $3, 0, $4) ON CONFLICT (partition) DO NOTHING",
        &[&p, &holder, &log, &now_ms],
    )
    .await?;
    let row = query_opt(
        &tx,
        "SELECT epoch, log, position FROM partition_claims WHERE partition = $1 FOR UPDATE",
        &[&p],
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable("claim row vanished".to_owned()))?;
    let (epoch, old_log, position): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    let epoch = epoch + 1;
    let position = if old_log == log { position } else { 0 };
    exec(
        &tx,
        "UPDATE partition_claims SET epoch = $2, holder = $3, log = $4, position = $5, claimed_at = $6
         WHERE partition = $1",
        &[&p, &epoch, &holder, &log, &position, &now_ms],
    )
    .await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(PartitionClaim {
        partition,
        epoch: u(epoch),
        resume_after: u(position),
    })
}

/// First thing in a batch's transaction: locks the claim row, refuses a
/// stale fence ([`StoreError::Fenced`]; the caller then writes nothing),
/// records the resume point.
pub(crate) async fn check_and_advance(c: &impl GenericClient, fence: &Fence) -> StoreResult<()> {
    let p = i64::from(fence.partition);
    let current: i64 = query_opt(
        c,
        "SELECT epoch FROM partition_claims WHERE partition = $1 FOR UPDATE",
        &[&p],
    )
    .await?
    .map_or(0, |r| r.get(0));
    if u(current) != fence.epoch {
        return Err(StoreError::Fenced {
            partition: fence.partition,
            current: u(current),
            batch: fence.epoch,
        });
    }
    exec(
        c,
        "UPDATE partition_claims SET position = GREATEST(position, $2) WHERE partition = $1",
        &[&p, &i(fence.done_through)],
    )
    .await?;
    Ok(())
}
