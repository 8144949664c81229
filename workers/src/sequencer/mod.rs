//! The sequencer/persister, with receipts and fan-out.
//!
//! Each conversation partition has one lease (`seq.<p>` in `MSGR_LEASES`):
//! only its holder sequences the partition, so the commands of a
//! conversation are applied in stream order by one process at a time; any
//! number of workers may run, the others stand by and take over when the
//! holder's lease ages out.
//!
//! Taking a partition over (a "seat"):
//! 1. claim it in the store: a new, higher epoch that fences out every
//!    earlier holder (a batch carrying an older epoch commits nothing, so a
//!    paused or cut-off holder can never write after its successor started),
//!    and the stream position through which everything was applied and
//!    announced;
//! 2. make a consumer of its own, `SEQ_<p>_<epoch>`, starting right after
//!    that position, and delete the previous holders' consumers (their open
//!    pull requests die with them). Nothing waits for `ack_wait`: commands a
//!    dead holder pulled but never acked are simply read again from the
//!    stream, in order, and the store's dedupe turns those it had already
//!    applied into duplicates whose events are announced again.
//!
//! A holder seats itself again whenever a command may have been lost in
//! transit to it: after a reconnect, on a gap in the consumer's delivery
//! sequence (before applying anything after the gap), or when its pull
//! subscription dies. Per batch (what is already buffered, up to `batch_max`):
//! 1. decode each command; undecodable ones are terminated (poison);
//! 2. apply all of them in one store transaction under the claim's fence
//!    (dense seq, idempotency by `(sender, client_msg_id)`, watermarks that
//!    only rise, and the resume point through the batches before it);
//! 3. publish each stored message to every member's inbox (the sender's too:
//!    that becomes the `ack`), advanced watermarks as receipt events, and
//!    refusals to the sender;
//! 4. only then ack the JetStream messages.
//!
//! Layout: this module holds the seats and the batches; `decode` turns bus
//! commands into store operations, `emit` announces their outcomes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures_util::{FutureExt, StreamExt};
use msgr_core::store::{Fence, StoreError};
use msgr_nats::lease::{Lease, LeaseError};
use msgr_nats::stream as streams;
use tokio_util::sync::CancellationToken;

use crate::balance::Balance;
use crate::context::WorkerContext;

mod decode;
mod emit;

use crate::deliver::Outbox;
use decode::{decode, Poison, Windows};
pub use emit::IntegratorEvents;
use emit::{emit, reject, Events, MemberCache};

/// Runs the sequencer role: one ownership loop per partition, and the
/// announcement that shares the partitions among the live workers.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let balance = Arc::new(Balance::new(ctx.config.partitions));
    metrics::gauge!("msgr_worker_partitions").set(f64::from(ctx.config.partitions));
    // Counters alerted on exist from the start, at 0, so rates are defined.
    for c in [
        "msgr_worker_fenced_batches_total",
        "msgr_worker_reseats_total",
        "msgr_worker_partitions_handed_over_total",
    ] {
        metrics::counter!(c).increment(0);
    }
    for p in 0..ctx.config.partitions {
        metrics::gauge!("msgr_worker_partition_held", "partition" => p.to_string()).set(0.0);
    }
    let _announce = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(crate::balance::run(
        Arc::clone(&ctx),
        Arc::clone(&balance),
        shutdown.clone(),
    )));
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..ctx.config.partitions {
        tasks.spawn(partition_loop(
            Arc::clone(&ctx),
            Arc::clone(&balance),
            p,
            shutdown.clone(),
        ));
    }
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                return Err(anyhow::anyhow!("partition task panicked: {e}"));
            }
        }
    }
    Ok(())
}

/// Acquires partition `p` whenever it is free and processes it while held.
async fn partition_loop(
    ctx: Arc<WorkerContext>,
    balance: Arc<Balance>,
    p: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let key = format!("seq.{p}");
    let health_key = format!("partition {p}");
    let ttl = ctx.lease_ttl();
    while !shutdown.is_cancelled() {
        // At its share, a worker leaves free partitions to the others.
        let attempt = if balance.wants_more() {
            Lease::acquire(&ctx.leases, &key, &ctx.instance_id, ttl).await
        } else {
            Err(LeaseError::Taken)
        };
        match attempt {
            Ok(lease) => {
                ctx.health.clear(&health_key);
                tracing::debug!(partition = p, "sequencer lease acquired");
                metrics::gauge!("msgr_worker_partitions_owned").increment(1.0);
                let held =
                    metrics::gauge!("msgr_worker_partition_held", "partition" => p.to_string());
                held.set(1.0);
                balance.took();
                let res = own_partition(&ctx, &balance, p, lease, &shutdown).await;
                balance.gave_up();
                held.set(0.0);
                metrics::gauge!("msgr_worker_partitions_owned").decrement(1.0);
                if let Err(e) = res {
                    tracing::warn!(partition = p, error = %e, "partition processing stopped");
                }
            }
            Err(LeaseError::Taken) => ctx.health.clear(&health_key),
            Err(LeaseError::Store(e)) => {
                // The bucket may be gone (a restarted server): have it
                // re-created rather than failing here until someone restarts us.
                ctx.bus_check.notify_one();
                ctx.health
                    .set(&health_key, format!("cannot take its lease: {e}"));
                tracing::warn!(partition = p, error = %e, "lease store error")
            }
        }
        // Standby: check again a few times per TTL, with jitter so standbys
        // do not all ask at once.
        let jitter = Duration::from_millis(u64::from(p) * 7 % 100);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(ttl / 4 + jitter) => {}
        }
    }
    Ok(())
}

/// How a pull session of a held partition ended.
enum PullEnd {
    /// Shutting down, or handed over to even out the workers' shares; the
    /// lease was released.
    Released,
    /// A command may have been lost in transit, or the subscription died:
    /// seat again (the lease is still held).
    Reseat(String),
}

/// Keeps `lease` renewed for `d` (or until shutdown: `Ok(false)`).
async fn hold(
    ctx: &WorkerContext,
    lease: &mut Lease,
    d: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep((ctx.lease_ttl() / 4).min(deadline - tokio::time::Instant::now())) => {}
        }
        if let Err(e) = lease.renew(&ctx.leases).await {
            if matches!(e, LeaseError::Taken) || !lease.is_valid() {
                return Err(anyhow::anyhow!("lease lost: {e}"));
            }
        }
    }
    Ok(true)
}

/// A partition's claim and the consumer pulled under it.
struct Seat {
    epoch: u64,
    /// Stream position through which every command was applied and announced.
    done: u64,
    consumer: jetstream::consumer::PullConsumer,
    messages: jetstream::consumer::pull::Stream,
}

/// Claims partition `p` in the store and makes this holder's consumer.
async fn seat(ctx: &WorkerContext, p: u32) -> anyhow::Result<Seat> {
    let log = streams::command_log_identity(&ctx.js).await?;
    let claim = ctx
        .store
        .claim_partition(p, &ctx.instance_id, &log)
        .await
        .map_err(|e| anyhow::anyhow!("claiming it in the store: {e}"))?;
    let consumer = streams::seat_sequencer(
        &ctx.js,
        p,
        claim.epoch,
        claim.resume_after,
        ctx.config.batch_max.max(1),
    )
    .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(ctx.config.batch_max)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("pulling: {e}"))?;
    tracing::debug!(
        partition = p,
        epoch = claim.epoch,
        resume_after = claim.resume_after,
        "seated"
    );
    Ok(Seat {
        epoch: claim.epoch,
        done: claim.resume_after,
        consumer,
        messages,
    })
}

/// Processes partition `p` while `lease` stays valid, seating again
/// whenever a command may have been lost in transit, without giving the
/// lease up.
async fn own_partition(
    ctx: &WorkerContext,
    balance: &Balance,
    p: u32,
    mut lease: Lease,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let health_key = format!("partition {p}");
    let mut link = ctx.link.clone();
    let mut last_seat: Option<Instant> = None;
    loop {
        // Seat only on a lease just renewed: a holder that lost it (its
        // renewals were starved by quick re-seats) would otherwise go on
        // seating, deleting the real holder's consumer each time.
        if let Some(t) = last_seat {
            // Seats that end at once (a consumer deleted under it) are paced.
            if t.elapsed() < Duration::from_millis(500) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if let Err(e) = lease.renew(&ctx.leases).await {
                if matches!(e, LeaseError::Taken) || !lease.is_valid() {
                    return Err(anyhow::anyhow!("lease lost: {e}"));
                }
            }
        }
        last_seat = Some(Instant::now());
        let seat = match seat(ctx, p).await {
            Ok(s) => {
                ctx.health.clear(&health_key);
                s
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot seat the partition; retrying");
                ctx.bus_check.notify_one();
                ctx.health.set(&health_key, format!("cannot take it: {e}"));
                if !hold(ctx, &mut lease, Duration::from_millis(500), shutdown).await? {
                    lease.release(&ctx.leases).await;
                    return Ok(());
                }
                continue;
            }
        };
        match pull(ctx, balance, p, &mut lease, &mut link, seat, shutdown).await? {
            PullEnd::Released => return Ok(()),
            PullEnd::Reseat(why) => {
                metrics::counter!("msgr_worker_reseats_total").increment(1);
                tracing::info!(partition = p, why, "seating the partition again");
            }
        }
    }
}

/// Pulls and applies batches while the lease holds. `Err` when the lease is
/// lost (or the store fenced this holder out); the partition then goes back
/// to whoever takes it next.
async fn pull(
    ctx: &WorkerContext,
    balance: &Balance,
    p: u32,
    lease: &mut Lease,
    link: &mut tokio::sync::watch::Receiver<msgr_nats::connect::Link>,
    mut seat: Seat,
    shutdown: &CancellationToken,
) -> anyhow::Result<PullEnd> {
    use jetstream::consumer::pull::MessagesErrorKind as K;
    let mut renew = tokio::time::interval(ctx.lease_ttl() / 4);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    // The renewal and the lag gauge are round trips to the JetStream API,
    // which take milliseconds on a busy server: they run beside the batches,
    // never between them. The lease (or bus trouble, below) still gates
    // every commit.
    let mut renewals = tokio::task::JoinSet::new();
    let _lag = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(report_lag(
        seat.consumer.clone(),
        p,
        ctx.health.clone(),
        Duration::from_secs(ctx.config.stall_secs.max(1)),
    )));
    let generation = link.borrow_and_update().generation();
    // The consumer is new: its deliveries are numbered from 1, and any
    // number skipped was delivered to us but lost on the way.
    let mut last_delivery = 0u64;
    // Pull errors are expected while the link is down (the client re-issues
    // its pull request on reconnect); ones that persist with the link up
    // mean the subscription is dead.
    let mut failing_since: Option<Instant> = None;
    // Since when renewals have failed for want of the bucket (no leader
    // during an election, a node lost), not because someone else holds it.
    // Meanwhile nobody else can take the lease either, and the store's fence
    // would refuse this holder's commits if someone had: so it goes on for a
    // while instead of stalling the partition for the election.
    let mut bucket_trouble: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                release(ctx, p, lease, &seat, &mut renewals).await;
                return Ok(PullEnd::Released);
            }
            _ = renew.tick(), if renewals.is_empty() => {
                if balance.should_shed() {
                    tracing::info!(partition = p, "handing the partition over to even out the workers' shares");
                    metrics::counter!("msgr_worker_partitions_handed_over_total").increment(1);
                    release(ctx, p, lease, &seat, &mut renewals).await;
                    return Ok(PullEnd::Released);
                }
                let renewal = lease.renewal(&ctx.leases);
                renewals.spawn(async move {
                    let started = Instant::now();
                    let r = renewal.await;
                    metrics::histogram!("msgr_worker_lease_renew_seconds")
                        .record(started.elapsed().as_secs_f64());
                    r
                });
            }
            Some(done) = renewals.join_next(), if !renewals.is_empty() => {
                match done {
                    Ok(Ok(r)) => {
                        lease.renewed(r);
                        bucket_trouble = None;
                    }
                    Ok(Err(e)) => {
                        if matches!(e, LeaseError::Taken) {
                            return Err(anyhow::anyhow!("lease lost: {e}"));
                        }
                        let since = *bucket_trouble.get_or_insert_with(Instant::now);
                        if !lease.is_valid() && since.elapsed() > BUCKET_TROUBLE_TOLERATED {
                            return Err(anyhow::anyhow!("lease lost: {e}"));
                        }
                        ctx.bus_check.notify_one();
                        tracing::warn!(partition = p, error = %e, "lease renewal failed; retrying");
                    }
                    Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal task failed; retrying"),
                }
            }
            changed = link.changed() => {
                if changed.is_err() {
                    return Ok(PullEnd::Reseat("the NATS client closed".to_owned()));
                }
                let now = link.borrow_and_update().clone();
                if now.is_up() && now.generation() != generation {
                    return Ok(PullEnd::Reseat("reconnected to NATS".to_owned()));
                }
            }
            first = seat.messages.next() => {
                let first = match first {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        if matches!(e.kind(), K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded) {
                            return Ok(PullEnd::Reseat(e.to_string()));
                        }
                        let link_up = ctx.nats.connection_state() == async_nats::connection::State::Connected;
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if link_up && since.elapsed() > PULL_ERRORS_TOLERATED {
                            return Ok(PullEnd::Reseat(e.to_string()));
                        }
                        tracing::debug!(partition = p, error = %e, "pull error");
                        continue;
                    }
                    None => return Ok(PullEnd::Reseat("the message stream ended".to_owned())),
                };
                failing_since = None;
                let mut bytes = first.payload.len();
                let mut batch = vec![first];
                // A message may be a batch of many commands: bound the
                // transaction by bytes too.
                while batch.len() < ctx.config.batch_max && bytes < BATCH_MAX_BYTES {
                    match seat.messages.next().now_or_never() {
                        Some(Some(Ok(m))) => {
                            bytes += m.payload.len();
                            batch.push(m);
                        }
                        _ => break,
                    }
                }
                // Nothing after a lost delivery may be applied before it:
                // seat again, and the new consumer starts before it.
                for m in &batch {
                    let Ok(info) = m.info() else {
                        return Ok(PullEnd::Reseat("a delivery without its metadata".to_owned()));
                    };
                    if info.consumer_sequence != last_delivery + 1 {
                        return Ok(PullEnd::Reseat(format!(
                            "delivery {} came after {last_delivery}: one was lost on the way",
                            info.consumer_sequence
                        )));
                    }
                    last_delivery = info.consumer_sequence;
                }
                // Never commit on a lease that may have passed to a standby
                // (the fence would refuse it anyway); the batch stays unacked
                // and the next holder reads it again.
                let may_act_until = lease.valid_until().max(
                    bucket_trouble.map_or(lease.valid_until(), |t| t + BUCKET_TROUBLE_TOLERATED),
                );
                if Instant::now() >= may_act_until {
                    return Err(anyhow::anyhow!("lease expired before commit"));
                }
                let fence = Fence { partition: p, epoch: seat.epoch, done_through: seat.done };
                match process_batch(ctx, batch, may_act_until, fence).await {
                    Ok(through) => seat.done = seat.done.max(through),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Gives partition `p` up in order: the newest renewal applied (or the
/// purge would fail and the lease only age out), the resume point recorded
/// (so the next holder does not announce the last batch again), the lease
/// released (so it need not wait for the TTL).
async fn release(
    ctx: &WorkerContext,
    p: u32,
    lease: &mut Lease,
    seat: &Seat,
    renewals: &mut tokio::task::JoinSet<Result<msgr_nats::lease::Renewed, LeaseError>>,
) {
    if let Ok(Some(Ok(Ok(r)))) =
        tokio::time::timeout(Duration::from_secs(1), renewals.join_next()).await
    {
        lease.renewed(r);
    }
    if lease.is_valid() {
        let fence = Fence {
            partition: p,
            epoch: seat.epoch,
            done_through: seat.done,
        };
        if let Err(e) = ctx.store.apply_batch(Some(fence), Vec::new()).await {
            tracing::debug!(partition = p, error = %e, "could not record the resume point");
        }
    }
    lease.release(&ctx.leases).await;
}

/// A sequencer transaction takes at most about this many bytes of commands.
const BATCH_MAX_BYTES: usize = 512 * 1024;

/// How long pull errors may last with the link up before the subscription
/// counts as dead and is opened again.
const PULL_ERRORS_TOLERATED: Duration = Duration::from_secs(3);

/// How long a holder goes on while its lease bucket cannot be reached (a
/// JetStream leader election takes 4-9 s). Safe because every commit is
/// fenced in the store; bounded so a holder cut off for good gives up.
const BUCKET_TROUBLE_TOLERATED: Duration = Duration::from_secs(20);

/// Publishes the partition's consumer lag every 5 s until aborted.
async fn report_lag(
    mut consumer: jetstream::consumer::PullConsumer,
    p: u32,
    health: msgr_nats::health::Health,
    stall: Duration,
) {
    /// Clears the stall report when the holder lets go of the partition.
    struct Stalled(msgr_nats::health::Health, String);
    impl Drop for Stalled {
        fn drop(&mut self) {
            self.0.clear(&self.1);
        }
    }
    let stalled = Stalled(health, format!("partition {p} progress"));
    let mut every = tokio::time::interval(stall.min(Duration::from_secs(5)));
    // The ack floor, and since when it has not moved while commands waited:
    // a store that hangs fails nothing, so no error path would report it.
    let mut floor = (0u64, Instant::now());
    loop {
        every.tick().await;
        let Ok(info) = consumer.info().await else {
            continue;
        };
        metrics::gauge!("msgr_worker_consumer_lag", "partition" => p.to_string())
            .set(info.num_pending as f64);
        let waiting = info.num_pending + info.num_ack_pending as u64;
        if info.ack_floor.stream_sequence != floor.0 || waiting == 0 {
            floor = (info.ack_floor.stream_sequence, Instant::now());
            stalled.0.clear(&stalled.1);
        } else if floor.1.elapsed() >= stall {
            stalled.0.set(
                &stalled.1,
                format!(
                    "commands waiting: {waiting}, none applied for {} s",
                    floor.1.elapsed().as_secs()
                ),
            );
        }
    }
}

/// Applies one batch under `fence` and acks it; returns the highest stream
/// sequence it covered. A failing store is retried in place (so nothing
/// newer overtakes the batch) while the lease lasts; `Err` when the lease
/// ran out or the store fenced this holder out (nothing is acked then: the
/// next holder reads the batch again).
async fn process_batch(
    ctx: &WorkerContext,
    batch: Vec<jetstream::Message>,
    may_act_until: Instant,
    fence: Fence,
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let now = msgr_core::time::now_ms();
    let through = batch
        .iter()
        .filter_map(|m| m.info().ok().map(|i| i.stream_sequence))
        .max()
        .unwrap_or(0);
    let mut ops = Vec::with_capacity(batch.len());
    let mut decoded = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    let mut rejected_early = Vec::new();
    let windows = Windows {
        edit_ms: i64::try_from(ctx.config.edit_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        delete_ms: i64::try_from(ctx.config.delete_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
    };
    for msg in batch {
        match decode(&msg, now, windows, ctx.config.partitions) {
            Ok(commands) => {
                for c in commands {
                    match c {
                        Ok((op, d)) => {
                            ops.push(op);
                            decoded.push(d);
                        }
                        Err(Poison { reason, answer }) => {
                            // One bad command of a batch: refused alone.
                            metrics::counter!("msgr_worker_commands_total", "outcome" => "poison")
                                .increment(1);
                            tracing::warn!(subject = %msg.subject, reason, "refusing an undecodable command");
                            if let Some(a) = answer {
                                rejected_early.push(a);
                            }
                        }
                    }
                }
                accepted.push(msg);
            }
            Err(Poison { reason, answer }) => {
                metrics::counter!("msgr_worker_commands_total", "outcome" => "poison").increment(1);
                tracing::warn!(subject = %msg.subject, reason, "terminating undecodable command");
                if let Some(a) = answer {
                    rejected_early.push(a);
                }
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "term failed");
                }
            }
        }
    }
    let mut out = Outbox::default();
    for a in rejected_early {
        reject(
            ctx,
            &mut out,
            &a,
            "invalid_frame",
            "the command could not be processed",
        );
    }
    if ops.is_empty() {
        out.flush(ctx).await;
        for msg in &accepted {
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "ack failed; the batch will be redelivered");
            }
        }
        return Ok(through);
    }
    metrics::histogram!("msgr_worker_batch_size").record(ops.len() as f64);
    let mut backoff = Duration::from_millis(50);
    let outcomes = loop {
        match ctx.store.apply_batch(Some(fence), ops.clone()).await {
            Ok(o) => {
                ctx.health.clear("store");
                break o;
            }
            Err(e @ StoreError::Fenced { .. }) => {
                metrics::counter!("msgr_worker_fenced_batches_total").increment(1);
                return Err(anyhow::anyhow!("a newer holder took the partition: {e}"));
            }
            Err(e) if Instant::now() < may_act_until => {
                ctx.health.set("store", format!("writes fail: {e}"));
                tracing::error!(error = %e, "store batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // Unacked, the batch returns to whoever holds the lease next.
                return Err(anyhow::anyhow!(
                    "store batch failed and the lease ran out: {e}"
                ));
            }
        }
    };
    let persisted = Instant::now();
    metrics::histogram!("msgr_worker_persist_seconds").record((persisted - started).as_secs_f64());
    let mut cache = MemberCache::new();
    let mut events = Events::new(fence.partition);
    for (outcome, d) in outcomes.iter().zip(&decoded) {
        emit(ctx, &mut out, &mut events, &mut cache, outcome, d, now).await;
    }
    // One publish per edge (and one for integrators) for the whole batch.
    out.flush(ctx).await;
    events.flush(ctx).await;
    for msg in &accepted {
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "ack failed; the command will be redelivered and deduplicated");
        }
    }
    // The fan-out and the acks hold the partition too: a NATS client whose
    // outbound buffer is full would show here, not in the persist time.
    metrics::histogram!("msgr_worker_emit_seconds").record(persisted.elapsed().as_secs_f64());
    Ok(through)
}
