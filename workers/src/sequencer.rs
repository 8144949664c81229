//! The sequencer/persister, with receipts and fan-out.
//!
//! Each conversation partition has one durable pull consumer (`SEQ_<p>`) and
//! one lease (`seq.<p>` in `MSGR_LEASES`). Only the lease holder consumes the
//! partition, so commands of a conversation are applied in stream order by one
//! process at a time; any number of workers may run, the others stand by.
//!
//! Per batch (what is already buffered, up to `batch_max`):
//! 1. decode each command; undecodable ones are terminated (poison);
//! 2. apply all of them to the store in one transaction (dense seq,
//!    idempotency by `(sender, client_msg_id)`, watermarks that only rise);
//! 3. publish each stored message to every member's inbox (the sender's too:
//!    that becomes the `ack`), advanced watermarks as receipt events, and
//!    refusals to the sender;
//! 4. only then ack the JetStream messages. A crash before 4 redelivers the
//!    batch; step 2 then finds duplicates and step 3 re-publishes them.
//!
//! The consumer's `max_ack_pending` equals `batch_max`, so after a takeover
//! the unacked commands of a dead holder come back before anything newer:
//! order survives crashes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use msgr_core::id;
use msgr_core::store::{NewMessage, Op, OpOutcome, ReceiptKind, Target, WatermarkUpdate};
use msgr_nats::lease::{Lease, LeaseError};
use msgr_nats::{stream as streams, subject};
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::convert;

/// Runs the sequencer role: one ownership loop per partition.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..ctx.config.partitions {
        tasks.spawn(partition_loop(Arc::clone(&ctx), p, shutdown.clone()));
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
    p: u32,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let key = format!("seq.{p}");
    let health_key = format!("partition {p}");
    let ttl = ctx.lease_ttl();
    while !shutdown.is_cancelled() {
        match Lease::acquire(&ctx.leases, &key, &ctx.instance_id, ttl).await {
            Ok(lease) => {
                ctx.health.clear(&health_key);
                tracing::debug!(partition = p, "sequencer lease acquired");
                metrics::gauge!("msgr_worker_partitions_owned").increment(1.0);
                let res = own_partition(&ctx, p, lease, &shutdown).await;
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
    /// Shutting down; the lease was handed over.
    Shutdown,
    /// The pull subscription died (consumer gone, errors that persist): the
    /// lease is still held, open it again.
    Lost(String),
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

/// Processes partition `p` while `lease` stays valid, re-opening its pull
/// subscription whenever it dies (the bus restarted, the consumer was
/// re-created) without giving the lease up.
async fn own_partition(
    ctx: &WorkerContext,
    p: u32,
    mut lease: Lease,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let health_key = format!("partition {p}");
    loop {
        let consumer: jetstream::consumer::PullConsumer = match ctx
            .js
            .get_consumer_from_stream(streams::sequencer_consumer(p), streams::IN_STREAM)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                ctx.bus_check.notify_one();
                ctx.health
                    .set(&health_key, format!("cannot open its consumer: {e}"));
                if !hold(ctx, &mut lease, Duration::from_millis(500), shutdown).await? {
                    lease.release(&ctx.leases).await;
                    return Ok(());
                }
                continue;
            }
        };
        ctx.health.clear(&health_key);
        // Commands a previous holder (or this one, before its subscription
        // died) pulled but never acked come back only after ack_wait; pulling
        // before that would let newer commands overtake them.
        let mut consumer = consumer;
        if let Ok(info) = consumer.info().await {
            if info.num_ack_pending > 0 {
                let wait = info.config.ack_wait + Duration::from_millis(500);
                tracing::info!(
                    partition = p,
                    pending = info.num_ack_pending,
                    ?wait,
                    "waiting for unacked commands to come back"
                );
                if !hold(ctx, &mut lease, wait, shutdown).await? {
                    lease.release(&ctx.leases).await;
                    return Ok(());
                }
            }
        }
        let messages = match consumer
            .stream()
            .max_messages_per_batch(ctx.config.batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(10))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "pulling failed; retrying");
                if !hold(ctx, &mut lease, Duration::from_millis(500), shutdown).await? {
                    lease.release(&ctx.leases).await;
                    return Ok(());
                }
                continue;
            }
        };
        match pull(ctx, p, &mut lease, consumer, messages, shutdown).await? {
            PullEnd::Shutdown => return Ok(()),
            PullEnd::Lost(why) => {
                tracing::warn!(
                    partition = p,
                    why,
                    "pull subscription lost; opening it again"
                );
                ctx.bus_check.notify_one();
            }
        }
    }
}

/// Pulls and applies batches while the lease holds. `Err` when the lease is
/// lost; the partition then goes back to whoever takes it next.
async fn pull(
    ctx: &WorkerContext,
    p: u32,
    lease: &mut Lease,
    consumer: jetstream::consumer::PullConsumer,
    mut messages: jetstream::consumer::pull::Stream,
    shutdown: &CancellationToken,
) -> anyhow::Result<PullEnd> {
    use jetstream::consumer::pull::MessagesErrorKind as K;
    let mut renew = tokio::time::interval(ctx.lease_ttl() / 4);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    // The renewal and the lag gauge are round trips to the JetStream API,
    // which take milliseconds on a busy server: they run beside the batches,
    // never between them. `lease.is_valid()` still gates every commit.
    let mut renewals = tokio::task::JoinSet::new();
    let _lag = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(report_lag(consumer, p)));
    // Pull errors are expected while the link is down (the client re-issues
    // its pull request on reconnect); ones that persist with the link up
    // mean the subscription is dead.
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                // Release with the newest revision, or the purge would fail
                // (and the lease would only age out).
                if let Ok(Some(Ok(Ok(r)))) =
                    tokio::time::timeout(Duration::from_secs(1), renewals.join_next()).await
                {
                    lease.renewed(r);
                }
                hand_over(ctx, messages, lease).await;
                lease.release(&ctx.leases).await;
                return Ok(PullEnd::Shutdown);
            }
            _ = renew.tick(), if renewals.is_empty() => {
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
                    Ok(Ok(r)) => lease.renewed(r),
                    Ok(Err(e)) => {
                        if !lease.is_valid() || matches!(e, LeaseError::Taken) {
                            return Err(anyhow::anyhow!("lease lost: {e}"));
                        }
                        ctx.bus_check.notify_one();
                        tracing::warn!(partition = p, error = %e, "lease renewal failed; retrying");
                    }
                    Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal task failed; retrying"),
                }
            }
            first = messages.next() => {
                let first = match first {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        if matches!(e.kind(), K::ConsumerDeleted | K::PushBasedConsumer | K::RequestLimitExceeded) {
                            return Ok(PullEnd::Lost(e.to_string()));
                        }
                        let link_up = ctx.nats.connection_state() == async_nats::connection::State::Connected;
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if link_up && since.elapsed() > PULL_ERRORS_TOLERATED {
                            return Ok(PullEnd::Lost(e.to_string()));
                        }
                        tracing::debug!(partition = p, error = %e, "pull error");
                        continue;
                    }
                    None => return Ok(PullEnd::Lost("the message stream ended".to_owned())),
                };
                failing_since = None;
                let mut batch = vec![first];
                while batch.len() < ctx.config.batch_max {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                // Never commit on a lease that may have passed to a standby;
                // the batch stays unacked and is redelivered to the new holder.
                if !lease.is_valid() {
                    return Err(anyhow::anyhow!("lease expired before commit"));
                }
                process_batch(ctx, batch, lease).await;
            }
        }
    }
}

/// How long pull errors may last with the link up before the subscription
/// counts as dead and is opened again.
const PULL_ERRORS_TOLERATED: Duration = Duration::from_secs(3);

/// Stops pulling before the lease is released. Commands the server has
/// already handed to this holder are applied (the lease is still ours), and
/// the unsubscribe is flushed: a pull request left open would take commands
/// that arrive after the release, and the next holder would find them
/// unacked and have to wait `ack_wait` before it may pull in order.
async fn hand_over(
    ctx: &WorkerContext,
    mut messages: jetstream::consumer::pull::Stream,
    lease: &Lease,
) {
    let mut handed = Vec::new();
    while let Some(Some(Ok(m))) = messages.next().now_or_never() {
        handed.push(m);
    }
    drop(messages);
    // Past the lease they stay unacked and go to the next holder.
    while !handed.is_empty() && lease.is_valid() {
        let rest = handed.split_off(handed.len().min(ctx.config.batch_max.max(1)));
        process_batch(ctx, handed, lease).await;
        handed = rest;
    }
    match tokio::time::timeout(Duration::from_secs(1), ctx.nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "flush before lease release failed"),
        Err(_) => tracing::debug!("flush before lease release timed out"),
    }
}

/// Publishes the partition's consumer lag every 5 s until aborted.
async fn report_lag(mut consumer: jetstream::consumer::PullConsumer, p: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        if let Ok(info) = consumer.info().await {
            metrics::gauge!("msgr_worker_consumer_lag", "partition" => p.to_string())
                .set(info.num_pending as f64);
        }
    }
}

/// What a decoded command was, to route its outcome.
enum Decoded {
    Send(pb::SendCommand),
    Receipt(pb::ReceiptCommand),
}

/// Applies one batch and acks it. A failing store is retried in place (so
/// nothing newer overtakes the batch) while the lease lasts.
async fn process_batch(ctx: &WorkerContext, batch: Vec<jetstream::Message>, lease: &Lease) {
    let started = Instant::now();
    let now = msgr_core::time::now_ms();
    let mut ops = Vec::with_capacity(batch.len());
    let mut decoded = Vec::with_capacity(batch.len());
    let mut accepted = Vec::with_capacity(batch.len());
    let mut rejected_early = Vec::new();
    for msg in batch {
        match decode(&msg, now) {
            Ok((op, d)) => {
                ops.push(op);
                decoded.push(d);
                accepted.push(msg);
            }
            Err(Poison { reason, send }) => {
                metrics::counter!("msgr_worker_commands_total", "outcome" => "poison").increment(1);
                tracing::warn!(subject = %msg.subject, reason, "terminating undecodable command");
                if let Some(cmd) = send {
                    rejected_early.push(cmd);
                }
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "term failed");
                }
            }
        }
    }
    for cmd in rejected_early {
        reject(
            ctx,
            &cmd,
            "invalid_frame",
            "the command could not be processed",
        )
        .await;
    }
    if ops.is_empty() {
        return;
    }
    metrics::histogram!("msgr_worker_batch_size").record(ops.len() as f64);
    let mut backoff = Duration::from_millis(50);
    let outcomes = loop {
        match ctx.store.apply(ops.clone()).await {
            Ok(o) => {
                ctx.health.clear("store");
                break o;
            }
            Err(e) if lease.is_valid() => {
                ctx.health.set("store", format!("writes fail: {e}"));
                tracing::error!(error = %e, "store batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // Unacked, the batch returns to whoever holds the lease next.
                tracing::error!(error = %e, "store batch failed and the lease ran out");
                return;
            }
        }
    };
    let persisted = Instant::now();
    metrics::histogram!("msgr_worker_persist_seconds").record((persisted - started).as_secs_f64());
    let mut cache = MemberCache::new();
    for (outcome, d) in outcomes.iter().zip(&decoded) {
        emit(ctx, &mut cache, outcome, d, now).await;
    }
    for msg in &accepted {
        if let Err(e) = msg.ack().await {
            tracing::warn!(error = %e, "ack failed; the command will be redelivered and deduplicated");
        }
    }
    // The fan-out and the acks hold the partition too: a NATS client whose
    // outbound buffer is full would show here, not in the persist time.
    metrics::histogram!("msgr_worker_emit_seconds").record(persisted.elapsed().as_secs_f64());
}

struct Poison {
    reason: &'static str,
    send: Option<Box<pb::SendCommand>>,
}

fn decode(msg: &jetstream::Message, now: i64) -> Result<(Op, Decoded), Poison> {
    let conv_from_subject = msg.subject.rsplit('.').next().unwrap_or_default();
    if subject::is_receipt(&msg.subject) {
        let r = pb::ReceiptCommand::decode(msg.payload.clone()).map_err(|_| Poison {
            reason: "bad receipt protobuf",
            send: None,
        })?;
        let kind = match r.status() {
            pb::ReceiptStatus::Delivered => ReceiptKind::Delivered,
            pb::ReceiptStatus::Read => ReceiptKind::Read,
            pb::ReceiptStatus::Unspecified => {
                return Err(Poison {
                    reason: "receipt status",
                    send: None,
                })
            }
        };
        if r.conversation_id != conv_from_subject || !id::is_user_id(&r.user_id) {
            return Err(Poison {
                reason: "receipt fields",
                send: None,
            });
        }
        let op = Op::Receipt(WatermarkUpdate {
            conversation_id: r.conversation_id.clone(),
            user_id: r.user_id.clone(),
            kind,
            up_to_seq: r.up_to_seq,
            at_ms: if r.at_ms > 0 { r.at_ms } else { now },
        });
        return Ok((op, Decoded::Receipt(r)));
    }
    let s = pb::SendCommand::decode(msg.payload.clone()).map_err(|_| Poison {
        reason: "bad send protobuf",
        send: None,
    })?;
    let bad = |reason| Poison {
        reason,
        send: Some(Box::new(s.clone())),
    };
    if s.conversation_id != conv_from_subject || !id::is_user_id(&s.sender_id) {
        return Err(bad("send fields"));
    }
    if msgr_core::validate::client_msg_id(&s.client_msg_id).is_err()
        || msgr_core::validate::message_body(s.text.as_deref(), s.media_id.is_some()).is_err()
    {
        return Err(bad("send body"));
    }
    let target = match &s.target {
        Some(pb::send_command::Target::ToUser(u)) => Target::User(u.clone()),
        Some(pb::send_command::Target::ToGroup(g)) => Target::Group(g.clone()),
        None => return Err(bad("send target")),
    };
    if s.received_at_ms > 0 {
        let age = (now - s.received_at_ms).max(0) as f64 / 1000.0;
        metrics::histogram!("msgr_worker_command_age_seconds").record(age);
    }
    let op = Op::Append(NewMessage {
        conversation_id: s.conversation_id.clone(),
        message_id: id::new_message_id(),
        sender_id: s.sender_id.clone(),
        client_msg_id: s.client_msg_id.clone(),
        target,
        text: s.text.clone(),
        media_id: s.media_id.clone(),
        sent_at_ms: now,
    });
    Ok((op, Decoded::Send(s)))
}

/// Group member lists read during one batch: each group's list is read from
/// the store once per batch, not once per message.
type MemberCache = std::collections::HashMap<String, Vec<msgr_core::store::MemberState>>;

/// Members to fan an event of `conversation_id` out to: for a message (`seq`
/// given), who was a member when it was sent; otherwise the current members.
async fn members(
    ctx: &WorkerContext,
    cache: &mut MemberCache,
    conversation_id: &str,
    seq: Option<u64>,
) -> Vec<String> {
    if let Some((a, b)) = id::direct_members(conversation_id) {
        return vec![a.to_owned(), b.to_owned()];
    }
    if !cache.contains_key(conversation_id) {
        match ctx.store.members(conversation_id).await {
            Ok(m) => {
                cache.insert(conversation_id.to_owned(), m);
            }
            Err(e) => {
                tracing::error!(error = %e, "members lookup failed; fan-out skipped (clients resync)");
                return Vec::new();
            }
        }
    }
    cache
        .get(conversation_id)
        .into_iter()
        .flatten()
        .filter(|m| seq.map_or(m.left_seq.is_none(), |s| m.saw(s)))
        .map(|m| m.user_id.clone())
        .collect()
}

/// Publishes one delivery to every user in `to` without waiting for each:
/// core NATS publishes are buffered and flushed together.
async fn fan_out(ctx: &WorkerContext, to: &[String], delivery: &pb::Delivery) {
    fan_out_encoded(ctx, to, Bytes::from(delivery.encode_to_vec())).await;
}

/// [`fan_out`] of an already encoded `Delivery`.
async fn fan_out_encoded(ctx: &WorkerContext, to: &[String], payload: Bytes) {
    for user in to {
        if let Err(e) = ctx
            .nats
            .publish(subject::deliver_user(user), payload.clone())
            .await
        {
            tracing::warn!(error = %e, "inbox publish failed");
        }
    }
}

async fn reject(ctx: &WorkerContext, s: &pb::SendCommand, code: &str, message: &str) {
    metrics::counter!("msgr_worker_commands_total", "outcome" => "rejected").increment(1);
    let d = pb::Delivery {
        event: Some(pb::delivery::Event::Rejected(pb::CommandRejected {
            sender_id: s.sender_id.clone(),
            client_msg_id: s.client_msg_id.clone(),
            conversation_id: s.conversation_id.clone(),
            code: code.to_owned(),
            message: message.to_owned(),
        })),
    };
    fan_out(ctx, std::slice::from_ref(&s.sender_id), &d).await;
}

async fn emit(
    ctx: &WorkerContext,
    cache: &mut MemberCache,
    outcome: &OpOutcome,
    d: &Decoded,
    now: i64,
) {
    match (outcome, d) {
        (OpOutcome::Stored(m) | OpOutcome::Duplicate(m), _) => {
            let fresh = matches!(outcome, OpOutcome::Stored(_));
            metrics::counter!("msgr_worker_commands_total",
                "outcome" => if fresh { "stored" } else { "duplicate" })
            .increment(1);
            // Encoded once: the inbox payload wraps the event's bytes.
            let event = convert::message(m, None).encode_to_vec();
            let delivery = message_delivery(&event);
            // At least once: a redelivered command re-announces what it stored.
            if let Err(e) = ctx
                .nats
                .publish(subject::evt_message(&m.conversation_id), event.into())
                .await
            {
                tracing::warn!(error = %e, "event publish failed");
            }
            let mut to = members(ctx, cache, &m.conversation_id, Some(m.seq)).await;
            // The sender's own inbox carries its ack: never skip it.
            if !to.contains(&m.sender_id) {
                to.push(m.sender_id.clone());
            }
            fan_out_encoded(ctx, &to, delivery).await;
        }
        (OpOutcome::Rejected(r), Decoded::Send(s)) => {
            let message = match r {
                msgr_core::store::Rejection::UnknownRecipient => "no such recipient",
                msgr_core::store::Rejection::NotMember => {
                    "you are not a member of this conversation"
                }
                msgr_core::store::Rejection::UnknownConversation => "no such conversation",
                msgr_core::store::Rejection::UnknownMedia => "no such media",
            };
            reject(ctx, s, r.code(), message).await;
        }
        (
            OpOutcome::Advanced {
                delivered,
                read,
                at_ms,
            },
            Decoded::Receipt(r),
        ) => {
            metrics::counter!("msgr_worker_commands_total", "outcome" => "receipt").increment(1);
            let to = members(ctx, cache, &r.conversation_id, None).await;
            let mut events = Vec::with_capacity(2);
            // A read watermark implies delivered up to it; announce delivered
            // separately only where it went further than read.
            let (delivered, read) = (*delivered, *read);
            if let Some(d) = delivered.filter(|d| read.is_none_or(|r| *d > r)) {
                events.push((ReceiptKind::Delivered, d));
            }
            if let Some(rd) = read {
                events.push((ReceiptKind::Read, rd));
            }
            for (kind, up_to) in events {
                let e = pb::ReceiptEvent {
                    conversation_id: r.conversation_id.clone(),
                    user_id: r.user_id.clone(),
                    status: convert::receipt_status(kind) as i32,
                    up_to_seq: up_to,
                    at_ms: if *at_ms > 0 { *at_ms } else { now },
                };
                fan_out(
                    ctx,
                    &to,
                    &pb::Delivery {
                        event: Some(pb::delivery::Event::Receipt(e)),
                    },
                )
                .await;
            }
        }
        (OpOutcome::Unchanged | OpOutcome::Rejected(_), _) => {
            metrics::counter!("msgr_worker_commands_total", "outcome" => "no_change").increment(1);
        }
        (OpOutcome::Advanced { .. }, Decoded::Send(_)) => {}
    }
}

/// The encoded `Delivery` whose event is the encoded `StoredMessage` given:
/// field 1 (`message`), length-delimited, around the same bytes.
fn message_delivery(stored_message: &[u8]) -> Bytes {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut buf = Vec::with_capacity(stored_message.len() + 6);
    encode_key(1, WireType::LengthDelimited, &mut buf);
    encode_varint(stored_message.len() as u64, &mut buf);
    buf.extend_from_slice(stored_message);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_delivery_is_the_same_bytes_as_encoding_the_delivery() {
        for text_len in [0usize, 5, 200, 70_000] {
            let m = pb::StoredMessage {
                message_id: "m01".to_owned(),
                client_msg_id: "c-1".to_owned(),
                conversation_id: "d_a_b".to_owned(),
                seq: 42,
                sender_id: "ua".to_owned(),
                text: Some("x".repeat(text_len)),
                ..Default::default()
            };
            let whole = pb::Delivery {
                event: Some(pb::delivery::Event::Message(m.clone())),
            }
            .encode_to_vec();
            let spliced = message_delivery(&m.encode_to_vec());
            assert_eq!(
                spliced.as_ref(),
                whole.as_slice(),
                "text of {text_len} bytes"
            );
            let back = pb::Delivery::decode(spliced).expect("decodes");
            assert_eq!(back.event, Some(pb::delivery::Event::Message(m)));
        }
    }
}
