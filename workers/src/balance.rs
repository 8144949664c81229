//! Sharing the partitions among the live workers.
//!
//! Every worker announces itself in the lease bucket (`worker.<instance>`,
//! renewed every quarter TTL, aging out with the bucket's `max_age` when it
//! dies) and follows the others' announcements. Its fair share is
//! `ceil(partitions / live workers)`: it takes free partitions only while
//! below it, and above it hands one partition over (gracefully: its resume
//! point recorded, its lease released) every half second, so a worker that
//! joins gets its share within seconds and one that dies leaves its share to
//! the rest. Without this the first worker up held every partition and the
//! others only stood by.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use async_nats::jetstream::kv::Operation;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// Key prefix of the workers' announcements in the lease bucket.
const WORKER_PREFIX: &str = "worker.";
/// At most one partition handed over this often.
const SHED_EVERY: Duration = Duration::from_millis(500);

/// This worker's partitions against its fair share.
#[derive(Debug)]
pub(crate) struct Balance {
    owned: AtomicUsize,
    fair: AtomicUsize,
    last_shed: Mutex<Option<Instant>>,
}

impl Balance {
    /// Alone until it has counted the others: every partition is fair game.
    pub(crate) fn new(partitions: u32) -> Self {
        Self {
            owned: AtomicUsize::new(0),
            fair: AtomicUsize::new(partitions as usize),
            last_shed: Mutex::new(None),
        }
    }

    /// Whether to try for a free partition.
    pub(crate) fn wants_more(&self) -> bool {
        self.owned.load(Ordering::Acquire) < self.fair.load(Ordering::Acquire)
    }

    pub(crate) fn took(&self) {
        self.owned.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn gave_up(&self) {
        self.owned.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether the caller's partition should be handed over now (over the
    /// share, and none handed over in the last [`SHED_EVERY`]).
    pub(crate) fn should_shed(&self) -> bool {
        if self.owned.load(Ordering::Acquire) <= self.fair.load(Ordering::Acquire) {
            return false;
        }
        let mut last = self
            .last_shed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < SHED_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn set_live(&self, partitions: u32, live: usize) {
        let fair = (partitions as usize).div_ceil(live.max(1));
        self.fair.store(fair, Ordering::Release);
        metrics::gauge!("msgr_worker_partitions_fair_share").set(fair as f64);
    }
}

/// Announces this worker and keeps its share current, until `shutdown`.
/// The others are followed with a watch on their announcements: one that
/// stops announcing is counted out a TTL after its last one, as its leases
/// age out, so the survivors' shares grow in time to take its partitions.
pub(crate) async fn run(
    ctx: std::sync::Arc<WorkerContext>,
    balance: std::sync::Arc<Balance>,
    shutdown: CancellationToken,
) {
    let key = format!("{WORKER_PREFIX}{}", ctx.instance_id);
    let ttl = ctx.lease_ttl();
    let mut tick = tokio::time::interval(ttl / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut watch: Option<async_nats::jetstream::kv::Watch> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Leaving: the others need not wait for the entry to age out.
                let _ = ctx.leases.purge(&key).await;
                return;
            }
            entry = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match entry {
                    Some(Ok(e)) if e.key.starts_with(WORKER_PREFIX) => {
                        if e.operation == Operation::Put {
                            seen.insert(e.key, Instant::now());
                        } else {
                            seen.remove(&e.key);
                        }
                    }
                    Some(Ok(_)) => {}
                    // Opened again at the next tick.
                    Some(Err(_)) | None => watch = None,
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = ctx
            .leases
            .put(
                &key,
                bytes::Bytes::copy_from_slice(ctx.instance_id.as_bytes()),
            )
            .await
        {
            tracing::debug!(error = %e, "could not announce this worker");
        }
        if watch.is_none() {
            match ctx
                .leases
                .watch_with_history(format!("{WORKER_PREFIX}*"))
                .await
            {
                Ok(w) => watch = Some(w),
                Err(e) => tracing::debug!(error = %e, "could not watch the workers"),
            }
        }
        // Its leases age out a TTL after its last renewal: so does its count.
        seen.retain(|_, t| t.elapsed() < ttl);
        balance.set_live(ctx.config.partitions, seen.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_the_partitions_over_the_live_workers_rounded_up() {
        let b = Balance::new(16);
        assert!(b.wants_more());
        b.set_live(16, 3);
        assert_eq!(b.fair.load(Ordering::Acquire), 6);
        for _ in 0..6 {
            assert!(b.wants_more());
            b.took();
        }
        assert!(!b.wants_more());
        assert!(!b.should_shed(), "at its share, it keeps what it has");
        b.set_live(16, 4);
        assert!(b.should_shed(), "over its share of 4");
        assert!(!b.should_shed(), "one at a time");
        b.gave_up();
        b.gave_up();
        assert!(!b.wants_more());
        b.set_live(16, 1);
        assert!(b.wants_more(), "alone again: everything");
    }
}
