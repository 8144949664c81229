//! Commands to the bus, coalesced per partition (`msgr.v2.in.<p>.batch`).
//!
//! Every command a connection of this edge sends (a send, a receipt, a
//! change) goes through one task. For each partition it keeps at most one
//! batch awaiting JetStream's PubAck; the commands that arrive meanwhile,
//! from every connection, go out together as the next batch, in the order
//! they were read. An idle edge therefore publishes each command at once (a
//! batch of one), and a busy one makes batches as large as its load over one
//! PubAck round trip: one publish, one PubAck, one delivery to the sequencer
//! and one ack for many commands, where there used to be four operations
//! per command (the same group commit as the store's writer).

use std::collections::VecDeque;

use async_nats::jetstream;
use bytes::{Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use msgr_nats::subject;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

/// A command's fate: the stream sequence of the batch that carries it, once
/// JetStream has it; `Err` when the publish failed (the client is told
/// `unavailable` and may resend).
pub type Accepted = oneshot::Receiver<Result<u64, ()>>;

/// Commands queued for the publisher task, across connections (in the
/// channel, and again taken off it but not yet published). A full queue makes
/// the connections that send wait (backpressure), never grows.
const QUEUE: usize = 4096;
/// A batch holds at most this many commands ...
const BATCH_MAX_COMMANDS: usize = 512;
/// ... and this many bytes (the bus's `max_payload` is 1 MiB; one command
/// is at most ~70 KiB).
const BATCH_MAX_BYTES: usize = 512 * 1024;

/// Told a command's fate (see [`Accepted`]), on the publisher task: keep it
/// short and never block.
pub type Done = Box<dyn FnOnce(Result<u64, ()>) + Send>;

struct Queued {
    partition: u32,
    /// The encoded `Command`.
    command: Bytes,
    done: Done,
}

/// The handle connections submit commands through.
#[derive(Clone)]
pub struct Commands {
    tx: mpsc::Sender<Queued>,
}

/// The publisher task is gone (the edge is shutting down).
#[derive(Debug)]
pub struct Closed;

impl Commands {
    /// Starts the publisher task for `partitions` partitions.
    #[must_use]
    pub fn start(js: jetstream::Context, partitions: u32) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publisher(js, partitions.max(1), rx));
        Self { tx }
    }

    /// The bytes of `command` as a batch carries it (encode once, submit
    /// again if need be with [`Self::submit_encoded`]).
    #[must_use]
    pub fn encode(command: pb::command::Command) -> Bytes {
        Bytes::from(
            pb::Command {
                command: Some(command),
            }
            .encode_to_vec(),
        )
    }

    /// Queues `command` for `partition`; the receiver tells when it is in
    /// the stream. Waits while the queue is full.
    ///
    /// # Errors
    /// If the publisher task has ended.
    pub async fn submit(
        &self,
        partition: u32,
        command: pb::command::Command,
    ) -> Result<Accepted, Closed> {
        self.submit_encoded(partition, Self::encode(command)).await
    }

    /// [`Self::submit`] of a command already [encoded](Self::encode).
    ///
    /// # Errors
    /// If the publisher task has ended.
    pub async fn submit_encoded(&self, partition: u32, command: Bytes) -> Result<Accepted, Closed> {
        let (tx, accepted) = oneshot::channel();
        self.submit_encoded_with(
            partition,
            command,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )
        .await?;
        Ok(accepted)
    }

    /// Like [`Self::submit_encoded`], with `done` called on the publisher
    /// task instead of a receiver to await (no task per command on the hot
    /// path).
    ///
    /// # Errors
    /// If the publisher task has ended (`done` is not called then).
    pub async fn submit_encoded_with(
        &self,
        partition: u32,
        command: Bytes,
        done: Done,
    ) -> Result<(), Closed> {
        self.tx
            .send(Queued {
                partition,
                command,
                done,
            })
            .await
            .map_err(|_| Closed)
    }
}

type Waiters = Vec<Done>;

async fn publisher(js: jetstream::Context, partitions: u32, mut rx: mpsc::Receiver<Queued>) {
    let n = partitions as usize;
    let mut queued: Vec<VecDeque<Queued>> = (0..n).map(|_| VecDeque::new()).collect();
    let mut in_flight = vec![false; n];
    let mut acks = FuturesUnordered::new();
    let mut open = true;
    // Commands taken off the channel and not yet published: bounded too, so
    // a partition whose PubAcks stall (a bus election) fills the channel and
    // then holds up the senders, instead of growing here.
    let mut held = 0usize;
    while open || !acks.is_empty() {
        tokio::select! {
            q = rx.recv(), if open && held < QUEUE => match q {
                Some(q) => {
                    held += take(&mut queued, q);
                    // Everything already queued joins this round.
                    while held < QUEUE {
                        let Ok(q) = rx.try_recv() else { break };
                        held += take(&mut queued, q);
                    }
                }
                None => open = false,
            },
            Some((p, waiters, result)) = acks.next(), if !acks.is_empty() => {
                in_flight[p] = false;
                let waiters: Waiters = waiters;
                let result: Result<jetstream::publish::PublishAck, _> = result;
                let outcome = match result {
                    Ok(ack) => {
                        metrics::histogram!("msgr_edge_batch_commands").record(waiters.len() as f64);
                        Ok(ack.sequence)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "command batch not acknowledged");
                        Err(())
                    }
                };
                for w in waiters {
                    w(outcome);
                }
            }
        }
        for p in 0..n {
            if in_flight[p] || queued[p].is_empty() {
                continue;
            }
            let (payload, waiters) = batch(&mut queued[p]);
            held -= waiters.len();
            let started = std::time::Instant::now();
            match js.publish(subject::v2::in_batch(p as u32), payload).await {
                Ok(ack) => {
                    in_flight[p] = true;
                    acks.push(async move {
                        let r = ack.await;
                        metrics::histogram!("msgr_edge_publish_seconds")
                            .record(started.elapsed().as_secs_f64());
                        (p, waiters, r)
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "command batch publish failed");
                    for w in waiters {
                        w(Err(()));
                    }
                }
            }
        }
    }
}

/// Files `q` under its partition; returns how many commands that added (0
/// for a partition that does not exist, refused at once).
fn take(queued: &mut [VecDeque<Queued>], q: Queued) -> usize {
    match queued.get_mut(q.partition as usize) {
        Some(list) => {
            list.push_back(q);
            1
        }
        None => {
            (q.done)(Err(()));
            0
        }
    }
}

/// The next batch of a partition's queue: an encoded `CommandBatch` (field 1
/// repeated, each command's bytes as they were encoded) and its waiters.
fn batch(queue: &mut VecDeque<Queued>) -> (Bytes, Waiters) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut buf = BytesMut::new();
    let mut waiters = Vec::new();
    while let Some(q) = queue.front() {
        if !waiters.is_empty()
            && (waiters.len() >= BATCH_MAX_COMMANDS
                || buf.len() + q.command.len() + 8 > BATCH_MAX_BYTES)
        {
            break;
        }
        let Some(q) = queue.pop_front() else { break };
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(q.command.len() as u64, &mut buf);
        buf.extend_from_slice(&q.command);
        waiters.push(q.done);
    }
    (buf.freeze(), waiters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(cmid: &str, text_len: usize) -> Queued {
        let done: Done = Box::new(|_| {});
        Queued {
            partition: 0,
            command: Bytes::from(
                pb::Command {
                    command: Some(pb::command::Command::Send(pb::SendCommand {
                        client_msg_id: cmid.to_owned(),
                        text: Some("x".repeat(text_len)),
                        ..Default::default()
                    })),
                }
                .encode_to_vec(),
            ),
            done,
        }
    }

    #[test]
    fn a_batch_decodes_as_the_commands_in_order_and_respects_its_bounds() {
        let mut q: VecDeque<Queued> = (0..600).map(|i| send(&i.to_string(), 10)).collect();
        let (payload, waiters) = batch(&mut q);
        assert_eq!(waiters.len(), BATCH_MAX_COMMANDS);
        let b = pb::CommandBatch::decode(payload).expect("decodes");
        let ids: Vec<String> = b
            .commands
            .iter()
            .map(|c| match &c.command {
                Some(pb::command::Command::Send(s)) => s.client_msg_id.clone(),
                _ => panic!("not a send"),
            })
            .collect();
        let want: Vec<String> = (0..BATCH_MAX_COMMANDS).map(|i| i.to_string()).collect();
        assert_eq!(ids, want);
        assert_eq!(q.len(), 600 - BATCH_MAX_COMMANDS, "the rest wait");

        // Bytes bound: 60 KiB commands, at most 8 of them fit in 512 KiB.
        let mut q: VecDeque<Queued> = (0..20).map(|i| send(&i.to_string(), 60_000)).collect();
        let (payload, waiters) = batch(&mut q);
        assert!(payload.len() <= BATCH_MAX_BYTES);
        assert_eq!(waiters.len(), 8);
        // A single command larger than the bound still goes (alone).
        let mut q: VecDeque<Queued> = [send("big", 600_000)].into_iter().collect();
        let (_, waiters) = batch(&mut q);
        assert_eq!(waiters.len(), 1);
    }
}
