//! Sends: the `send` frame published to JetStream, and what keeps a send
//! answered when the bus loses its ack event or the command itself (a
//! look-up in the store, then a publish again that keeps the sender's order).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use msgr_core::id;
use msgr_nats::{rpc, subject};
use msgr_schemas::client::ServerFrame;
use msgr_schemas::pb::v1 as pb;

use super::frame::FrameError;
use super::session::{encode, error_frame, Session};
use crate::commands::Commands;
use crate::state::EdgeState;

/// A send awaiting its `ack`, kept so that it can be answered even if the
/// bus loses the event that carries its ack (or the command itself).
pub(super) struct PendingSend {
    /// Its place among this connection's sends (1, 2, ...).
    pub(super) no: u64,
    /// When its frame was read.
    pub(super) read_at: Instant,
    /// The command as a batch carries it, to publish again if it was lost
    /// (its length is what the in-flight byte bound counts).
    pub(super) cmd: Bytes,
    pub(super) partition: u32,
    /// When to ask the store about it next.
    pub(super) next_check: Instant,
    /// Checks so far (the interval between them grows).
    pub(super) checks: u32,
    /// When the last check started (the read, before any).
    pub(super) last_check: Instant,
    /// A check is running.
    pub(super) checking: bool,
    /// The stream sequence of the batch that carries it, once JetStream
    /// acknowledged that batch: the command then holds its place in the
    /// stream. Until then it is never published again: a publish lost with
    /// a dying connection must not go in behind the sends that followed it
    /// (the sender's order); its PubAck times out instead and the client is
    /// told `unavailable`, and its resend takes its place.
    pub(super) in_stream: Option<u64>,
}

/// Sends awaiting acks, and the bytes they hold.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) sends: HashMap<String, PendingSend>,
    pub(super) bytes: usize,
    /// The last [`PendingSend::no`] given out.
    pub(super) last_no: u64,
    /// The highest [`PendingSend::no`] answered with an `ack` (stored).
    pub(super) newest_acked: u64,
}

impl Pending {
    pub(super) fn remove(&mut self, cmid: &str) -> Option<PendingSend> {
        let p = self.sends.remove(cmid)?;
        self.bytes -= p.cmd.len();
        Some(p)
    }

    /// Whether a later send of this connection was stored, or is on its
    /// way, ahead of `cmid`: publishing `cmid` again would store it behind
    /// them, out of the order it was sent in.
    fn overtaken(&self, cmid: &str) -> bool {
        let Some(p) = self.sends.get(cmid) else {
            return false;
        };
        p.no < self.newest_acked || self.sends.values().any(|q| q.no > p.no)
    }
}

/// A pending send is looked up at most this often when the client resends it.
pub(super) const RESEND_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a connection with pending sends looks for ones due a check.
pub(super) const CHECK_TICK: Duration = Duration::from_millis(500);
/// Checks a connection starts at once (the rest wait for the next tick).
pub(super) const CHECKS_PER_TICK: usize = 8;
/// After this long without an answer a send is given up with `unavailable`
/// (resend it with the same `client_msg_id`).
pub(super) const GIVE_UP_AFTER: Duration = Duration::from_secs(150);

pub(super) fn sending_error(code: &'static str, message: &str, cmid: &str) -> FrameError {
    FrameError {
        code,
        message: message.to_owned(),
        client_msg_id: Some(cmid.to_owned()),
    }
}

/// # `{"type":"send"}`
/// Publishes the command durably; the `ack` arrives through the inbox once the
/// sequencer stored it. Errors: `unknown_recipient`, `invalid_recipient`,
/// `rate_limited` (too many sends awaiting acks), `unavailable` (bus down).
pub(super) async fn send(
    state: &EdgeState,
    session: &Arc<Session>,
    f: msgr_schemas::client::SendFrame,
) -> Result<(), FrameError> {
    let me = session.user_id.clone();
    let cmid = f.client_msg_id.clone();
    let (conversation_id, target) = match (&f.to_user, &f.to_group) {
        (Some(u), _) => {
            if !id::is_user_id(u) {
                return Err(sending_error(
                    "unknown_recipient",
                    "no such recipient",
                    &cmid,
                ));
            }
            if *u == me {
                return Err(sending_error(
                    "invalid_recipient",
                    "cannot send to yourself",
                    &cmid,
                ));
            }
            (
                id::direct_conversation_id(&me, u),
                pb::send_command::Target::ToUser(u.clone()),
            )
        }
        (None, Some(g)) => {
            if !id::is_group_id(g) {
                return Err(sending_error(
                    "unknown_conversation",
                    "no such group",
                    &cmid,
                ));
            }
            (g.clone(), pb::send_command::Target::ToGroup(g.clone()))
        }
        (None, None) => {
            return Err(sending_error(
                "missing_recipient",
                "to_user or to_group is required",
                &cmid,
            ))
        }
    };
    let cmd = pb::SendCommand {
        sender_id: me.clone(),
        client_msg_id: cmid.clone(),
        conversation_id: conversation_id.clone(),
        target: Some(target),
        text: f.text,
        media_id: f.media_id,
        received_at_ms: msgr_core::time::now_ms(),
        reply_to_seq: f.reply_to_seq,
    };
    let partition = id::partition_of(&conversation_id, state.partitions);
    let cmd = Commands::encode(pb::command::Command::Send(cmd));
    let size = cmd.len();
    {
        let mut pending = session.pending();
        if let Some(p) = pending.sends.get_mut(&cmid) {
            // A resend of a send still awaiting its ack: its ack event (or
            // the command) may have been lost, so ask the store now rather
            // than leave the client waiting. At most once a second.
            if !p.checking && p.last_check.elapsed() >= RESEND_CHECK_EVERY {
                p.checking = true;
                p.last_check = Instant::now();
                tokio::spawn(check_pending(state.clone(), Arc::clone(session), cmid));
            }
            return Ok(());
        }
        if pending.sends.len() >= state.config.max_in_flight
            || pending.bytes + size > state.config.max_in_flight_bytes
        {
            return Err(sending_error(
                "rate_limited",
                "too many messages awaiting acks",
                &cmid,
            ));
        }
        if state.limits.send(&me).is_err() {
            return Err(sending_error(
                "rate_limited",
                "too many messages; resend later with the same client_msg_id",
                &cmid,
            ));
        }
        let now = Instant::now();
        pending.bytes += size;
        pending.last_no += 1;
        let no = pending.last_no;
        pending.sends.insert(
            cmid.clone(),
            PendingSend {
                no,
                read_at: now,
                cmd: cmd.clone(),
                partition,
                next_check: now + state.ack_check_after(),
                checks: 0,
                last_check: now,
                checking: false,
                in_stream: None,
            },
        );
    }
    metrics::counter!("msgr_edge_messages_in_total").increment(1);
    // Told on the publisher task once JetStream has the batch (or not): the
    // client can pipeline sends meanwhile.
    let done = {
        let session = Arc::clone(session);
        let cmid = cmid.clone();
        Box::new(move |r: Result<u64, ()>| match r {
            Ok(seq) => {
                if let Some(p) = session.pending().sends.get_mut(&cmid) {
                    p.in_stream = Some(seq);
                }
            }
            Err(()) => {
                if session.take_pending(&cmid).is_some() {
                    let e =
                        sending_error("unavailable", "could not accept the message; retry", &cmid);
                    session.post(error_frame(e));
                }
            }
        })
    };
    if state
        .commands
        .submit_encoded_with(partition, cmd, done)
        .await
        .is_err()
    {
        session.take_pending(&cmid);
        return Err(sending_error(
            "unavailable",
            "could not accept the message; retry",
            &cmid,
        ));
    }
    Ok(())
}

/// Answers a send still awaiting its ack from the store: `ack` if it is
/// stored (its event was lost); otherwise, if JetStream took it and no
/// longer holds its batch, publishes it again, and checks again later,
/// giving up with `unavailable` after [`GIVE_UP_AFTER`]. The ack event may also arrive meanwhile; whichever
/// comes first answers, once.
pub(super) async fn check_pending(state: EdgeState, session: Arc<Session>, cmid: String) {
    metrics::counter!("msgr_edge_ack_checks_total").increment(1);
    let req = pb::LookupRequest {
        sender_id: session.user_id.clone(),
        client_msg_id: cmid.clone(),
    };
    let found = rpc::call::<_, pb::LookupResult>(
        &state.nats,
        subject::rpc::LOOKUP,
        &req,
        state.rpc_timeout(),
    )
    .await;
    match found {
        Ok(pb::LookupResult { message: Some(m) }) => {
            if session.take_acked(&cmid).is_some() {
                metrics::counter!("msgr_edge_acks_from_store_total").increment(1);
                session.post(encode(&ack_frame(&m)));
            }
            return;
        }
        Ok(_) => {
            let again = {
                let pending = session.pending();
                pending
                    .sends
                    .get(&cmid)
                    .and_then(|p| Some((p.in_stream?, p.partition, p.cmd.clone())))
            };
            if let Some((seq, partition, cmd)) = again {
                publish_again(&state, &session, &cmid, seq, partition, cmd).await;
            }
        }
        Err(e) => tracing::debug!(error = %e, "lookup of a pending send failed"),
    }
    let gave_up = {
        let mut pending = session.pending();
        let Some(p) = pending.sends.get_mut(&cmid) else {
            return;
        };
        p.checking = false;
        p.checks += 1;
        if p.read_at.elapsed() > GIVE_UP_AFTER {
            pending.remove(&cmid);
            true
        } else {
            // 3 s, 6 s, 12 s, then every 20 s (with the default ack_check_ms).
            let backoff = state.ack_check_after() * (1 << p.checks.min(3)) / 2;
            p.next_check = Instant::now() + backoff.min(Duration::from_secs(20));
            false
        }
    };
    if gave_up {
        session.post(error_frame(sending_error(
            "unavailable",
            "not confirmed yet; resend later with the same client_msg_id",
            &cmid,
        )));
    }
}

/// Publishes a send that is not stored (yet) again, if the stream no longer
/// holds the batch that carried it (`seq`): then the bus dropped it (a
/// consumer missing when it arrived) or a worker refused it and the refusal
/// was lost. The store's `(sender, client_msg_id)` dedupe keeps it from
/// being stored twice. While the batch is still queued (a worker is slow or
/// taking over), nothing is done. If a later send of the connection went
/// ahead of it, it is not published again (it would be stored behind that
/// one, out of the order it was sent in): the client is told `unavailable`,
/// and its resend takes its place after them, as for a publish that failed.
async fn publish_again(
    state: &EdgeState,
    session: &Session,
    cmid: &str,
    seq: u64,
    partition: u32,
    cmd: Bytes,
) {
    let Ok(stream) = state
        .js
        .get_stream_no_info(msgr_nats::stream::IN_STREAM)
        .await
    else {
        return;
    };
    use async_nats::jetstream::stream::RawMessageErrorKind;
    match stream.get_raw_message(seq).await {
        Ok(_) => {} // still queued: a worker will get to it
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
            if session.pending().overtaken(cmid) {
                if session.take_pending(cmid).is_some() {
                    metrics::counter!("msgr_edge_sends_overtaken_total").increment(1);
                    tracing::info!(user = %session.user_id, cmid, "a send the bus had dropped was overtaken by a later one; the client resends it");
                    session.post(error_frame(sending_error(
                        "unavailable",
                        "lost on the way after later messages were accepted; resend with the same client_msg_id",
                        cmid,
                    )));
                }
                return;
            }
            let Ok(accepted) = state.commands.submit_encoded(partition, cmd).await else {
                return;
            };
            if let Ok(Ok(seq)) = accepted.await {
                metrics::counter!("msgr_edge_sends_republished_total").increment(1);
                tracing::info!(user = %session.user_id, cmid, "a send the bus had dropped was published again");
                if let Some(p) = session.pending().sends.get_mut(cmid) {
                    p.in_stream = Some(seq);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "could not look for the original command"),
    }
}

pub(super) fn ack_frame(m: &pb::StoredMessage) -> ServerFrame {
    ServerFrame::Ack {
        client_msg_id: m.client_msg_id.clone(),
        message_id: m.message_id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq: m.seq,
        sent_at: msgr_core::time::rfc3339_ms(m.sent_at_ms),
    }
}
