//! One WebSocket connection, served by one task.
//!
//! - Before the first frame is read, the connection joins its user's inbox
//!   on this edge (subscribing if it is the user's first device here), so no
//!   event for a message it sends can be missed.
//! - The task keeps one pending `read_frame` pinned (it is not cancel-safe)
//!   while it writes what arrives in the mailbox: inbox events, answers from
//!   tasks awaiting JetStream acks, obligated pongs. A `message` event for a
//!   `client_msg_id` this connection is waiting on becomes its `ack`.
//! - Replies to a frame (errors, pongs) are written directly, so a client
//!   that sends faster than it reads is throttled by its own socket.
//! - A socket that accepts no bytes for `slow_client_timeout_ms`, or a full
//!   mailbox, closes the connection with 1013: the client reconnects and
//!   syncs history. Nothing grows without bound: the mailbox, the in-flight
//!   map and the receipts awaiting acks are all capped.
//! - An idle connection is this task (handlers are boxed so they do not
//!   inflate it), one `Session` and the socket's buffers.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use msgr_core::id;
use msgr_nats::subject;
use msgr_schemas::client::{ReceiptStatusJson, ServerFrame};
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio::io::{ReadHalf, WriteHalf};

use super::frame::{self, FrameError, Request};
use super::mailbox::{Item, Mailbox, Next, TRY_AGAIN_LATER};
use super::sending::{ack_frame, check_pending, send, Pending, CHECKS_PER_TICK, CHECK_TICK};
use crate::state::EdgeState;

type Io = hyper_util::rt::TokioIo<Upgraded>;
type Rx = WebSocketRead<RawRead>;
type Tx = WebSocketWrite<WriteHalf<Io>>;

/// The socket's read half, shared so that the connection can still read
/// (and discard) what the client goes on writing after the WebSocket reader
/// gave up on a frame too large: closing a socket with unread bytes resets
/// it, and the reset destroys the close frame (1009) before the client reads it.
#[derive(Clone, Default)]
struct RawRead(Arc<Mutex<Option<ReadHalf<Io>>>>);

impl RawRead {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ReadHalf<Io>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads and drops what the client still sends, until it closes, up to
    /// [`DISCARD_AT_MOST`] bytes or for [`DISCARD_FOR`].
    async fn discard(&self) {
        use tokio::io::AsyncReadExt as _;
        let Some(mut r) = self.lock().take() else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0usize;
        let _ = tokio::time::timeout(DISCARD_FOR, async {
            while total < DISCARD_AT_MOST {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }
}

impl tokio::io::AsyncRead for RawRead {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.lock().as_mut() {
            Some(r) => std::pin::Pin::new(r).poll_read(cx, buf),
            // Taken for discarding: end of stream to anyone else.
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// How long, and how much, a connection closed for a frame too large goes
/// on reading to let its close frame reach the client.
const DISCARD_FOR: Duration = Duration::from_secs(2);
const DISCARD_AT_MOST: usize = 16 * 1024 * 1024;

/// Close codes.
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;

/// Bad frames in a row after which a client counts as misbehaving.
const MAX_CONSECUTIVE_ERRORS: u32 = 32;

/// Receipt publishes of one connection awaiting their JetStream ack.
const MAX_RECEIPTS_IN_FLIGHT: usize = 256;
/// Groups per connection whose receipt refusals are routed back to it.
const MAX_GROUP_RECEIPTS_TRACKED: usize = 256;
/// A receipt refusal later than this after the receipt is not shown.
const GROUP_RECEIPT_ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// One connection's state, shared with its inbox pump and the tasks awaiting
/// JetStream acks for it.
pub(crate) struct Session {
    pub(super) user_id: String,
    /// The session (token `jti`) it was opened with; closed when that is revoked.
    pub(super) session_id: Option<String>,
    /// Sends awaiting their ack, by `client_msg_id`.
    pending: Mutex<Pending>,
    /// Receipt publishes awaiting their JetStream ack.
    receipts_in_flight: AtomicUsize,
    /// Groups this connection sent receipts for lately, so that the worker's
    /// refusal of one (not a member) reaches it and not the user's other
    /// connections. Bounded; entries older than a minute go.
    group_receipts: Mutex<HashMap<String, Instant>>,
    /// Typing notices allowed now (a token bucket: tokens, last refill).
    typing: Mutex<(f64, Instant)>,
    /// Changes (edit, delete, react) sent here awaiting their answer, by
    /// `client_msg_id`, so that a refusal reaches this connection. Bounded.
    changes: Mutex<HashMap<String, Instant>>,
    pub(super) mailbox: Mailbox,
}

/// Changes per connection awaiting an answer.
const MAX_CHANGES_IN_FLIGHT: usize = 256;
/// A change not answered within this is forgotten (its answer, if it comes,
/// still reaches every connection as a `message_update`).
const CHANGE_ANSWER_WITHIN: Duration = Duration::from_secs(60);

impl Session {
    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a pending send, returning when its frame was read.
    pub(super) fn take_pending(&self, cmid: &str) -> Option<Instant> {
        self.pending().remove(cmid).map(|p| p.read_at)
    }

    /// [`Self::take_pending`] for a send answered with its `ack`: it is
    /// stored, so an earlier send lost on the way may no longer go after it.
    pub(super) fn take_acked(&self, cmid: &str) -> Option<Instant> {
        let mut pending = self.pending();
        let p = pending.remove(cmid)?;
        pending.newest_acked = pending.newest_acked.max(p.no);
        Some(p.read_at)
    }

    /// Whether a typing notice may go now: `per_second` on average, as many
    /// at once (0: no limit).
    fn typing_allowed(&self, per_second: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let rate = f64::from(per_second);
        let mut b = self
            .typing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Notes a change sent on this connection; false when too many await.
    pub(super) fn track_change(&self, cmid: &str) -> bool {
        let mut m = self
            .changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_CHANGES_IN_FLIGHT {
            m.retain(|_, at| at.elapsed() < CHANGE_ANSWER_WITHIN);
            if m.len() >= MAX_CHANGES_IN_FLIGHT {
                return false;
            }
        }
        m.insert(cmid.to_owned(), Instant::now());
        true
    }

    /// Forgets a change sent here; whether it was awaiting its answer.
    pub(super) fn take_change(&self, cmid: &str) -> bool {
        self.changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(cmid)
            .is_some()
    }

    /// Notes a receipt for group `conv` sent on this connection.
    fn sent_group_receipt(&self, conv: &str) {
        let mut m = self
            .group_receipts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= MAX_GROUP_RECEIPTS_TRACKED && !m.contains_key(conv) {
            let now = Instant::now();
            m.retain(|_, at| now.duration_since(*at) < GROUP_RECEIPT_ANSWER_WITHIN);
            if m.len() >= MAX_GROUP_RECEIPTS_TRACKED {
                return;
            }
        }
        m.insert(conv.to_owned(), Instant::now());
    }

    /// Whether this connection sent a receipt for group `conv` lately
    /// (forgetting it: one refusal answers it).
    fn took_group_receipt(&self, conv: &str) -> bool {
        self.group_receipts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(conv)
            .is_some_and(|at| at.elapsed() < GROUP_RECEIPT_ANSWER_WITHIN)
    }

    fn has_pending(&self) -> bool {
        !self.pending().sends.is_empty()
    }

    /// Starts a check of every pending send that is due one (a few at a time).
    fn check_due(self: &Arc<Self>, state: &EdgeState) {
        let now = Instant::now();
        let due: Vec<String> = {
            let mut pending = self.pending();
            let due: Vec<String> = pending
                .sends
                .iter()
                .filter(|(_, p)| !p.checking && p.next_check <= now)
                .take(CHECKS_PER_TICK)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &due {
                if let Some(p) = pending.sends.get_mut(k) {
                    p.checking = true;
                    p.last_check = now;
                }
            }
            due
        };
        for cmid in due {
            tokio::spawn(check_pending(state.clone(), Arc::clone(self), cmid));
        }
    }

    /// Queues a frame from a background task. A connection that cannot take
    /// it is closing (or is being closed as too slow), so it is dropped.
    pub(super) fn post(&self, bytes: Vec<u8>) {
        self.mailbox.push(Item::Frame(bytes));
    }
}

pub(super) fn encode(frame: &ServerFrame) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(frame).unwrap_or_default()
}

pub(super) fn error_frame(e: FrameError) -> Vec<u8> {
    metrics::counter!("msgr_edge_frames_rejected_total", "code" => e.code).increment(1);
    encode(&ServerFrame::Error {
        code: e.code.to_owned(),
        message: e.message,
        client_msg_id: e.client_msg_id,
        conversation_id: None,
    })
}

/// How a connection ends.
enum End {
    /// The peer is gone or closed first: nothing more to say.
    Quiet,
    /// Send a close frame, then read until the peer's close (so it sees the code).
    CloseAndDrain(u16),
    /// Send a close frame, then discard raw input (the reader is out of step
    /// with the stream: a frame too large was left unread).
    CloseAndDiscard(u16),
    /// A write gave up part-way through a frame (a client that takes nothing):
    /// any further byte would be read as that frame's rest, so none is sent.
    Cut,
}

/// Runs one connection to completion.
pub(super) async fn run(
    state: EdgeState,
    user_id: String,
    session_id: Option<String>,
    ws: WebSocket<Io>,
) {
    let session = Arc::new(Session {
        user_id,
        session_id,
        pending: Mutex::new(Pending::default()),
        receipts_in_flight: AtomicUsize::new(0),
        group_receipts: Mutex::new(HashMap::new()),
        changes: Mutex::new(HashMap::new()),
        typing: Mutex::new((
            f64::from(state.limits.config.typing_per_second),
            Instant::now(),
        )),
        mailbox: Mailbox::new(state.config.outbox_capacity),
    });
    let raw = RawRead::default();
    let (mut rx, mut tx) = ws.split(|io| {
        let (r, w) = tokio::io::split(io);
        *raw.lock() = Some(r);
        (raw.clone(), w)
    });
    // Joined (and subscribed) before any frame is read: an event for a
    // message this socket sends can then not be missed.
    // Boxed, like the writes and handlers below: only the idle loop's own
    // state should live in every connection's task.
    let joined = tokio::select! {
        () = state.shutdown.cancelled() => Err("shutting down".to_owned()),
        r = tokio::time::timeout(state.rpc_timeout(), Box::pin(state.inbox.join(&state.nats, &session))) => {
            r.unwrap_or_else(|_| Err("no answer from NATS".to_owned()))
        }
    };
    let membership = match joined {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "inbox subscribe failed; closing");
            let _ = tx
                .write_frame(Frame::close(TRY_AGAIN_LATER, b"try again"))
                .await;
            return;
        }
    };
    metrics::gauge!("msgr_edge_connections").increment(1.0);
    if state.config.presence {
        state.presence.connected(&session.user_id);
    }
    let conn_id = state.next_conn_id.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn_id, user = %session.user_id, "connected");
    let timeout = Duration::from_millis(state.config.slow_client_timeout_ms.max(1));
    let mut obligated = |f: Frame<'_>| {
        std::future::ready(session.mailbox.push_control(f.opcode, f.payload.to_vec()))
    };
    let end = serve(&state, &session, &mut rx, &mut tx, &mut obligated, timeout).await;
    // Events stop now; what is still queued is for a socket about to close.
    drop(membership);
    if state.config.presence {
        state.presence.disconnected(&session);
    }
    match end {
        End::Cut => {}
        End::Quiet => {
            // A close echo the reader owes the peer.
            for (op, payload) in session.mailbox.take_control() {
                let f = Frame::new(true, op, None, Payload::Owned(payload));
                if write(&mut tx, f, timeout).await.is_err() {
                    break;
                }
            }
        }
        End::CloseAndDrain(code) | End::CloseAndDiscard(code) => {
            let reason: &[u8] = match code {
                GOING_AWAY => b"server shutting down",
                PROTOCOL_ERROR => b"protocol error",
                INVALID_DATA => b"invalid UTF-8",
                TOO_BIG => b"frame too large",
                POLICY => b"too many bad frames",
                crate::revoked::SESSION_REVOKED => b"session revoked",
                TRY_AGAIN_LATER => b"too slow; reconnect and sync",
                _ => b"",
            };
            let closed = tokio::time::timeout(
                Duration::from_secs(1),
                tx.write_frame(Frame::close(code, reason)),
            )
            .await;
            if matches!(closed, Ok(Ok(()))) {
                match end {
                    End::CloseAndDrain(_) => drain(&mut rx, &mut obligated).await,
                    End::CloseAndDiscard(_) => raw.discard().await,
                    _ => {}
                }
            }
        }
    }
    metrics::gauge!("msgr_edge_connections").decrement(1.0);
    tracing::debug!(conn_id, "disconnected");
}

/// Writes one frame; a socket that takes nothing for `timeout` is too slow.
async fn write(tx: &mut Tx, f: Frame<'_>, timeout: Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, tx.write_frame(f)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Quiet),
        Err(_) => {
            metrics::counter!("msgr_edge_slow_clients_closed_total").increment(1);
            Err(End::Cut)
        }
    }
}

/// The connection's loop: until it ends, write what the mailbox holds while
/// a frame read is pending, and handle each frame read.
async fn serve<F, R>(
    state: &EdgeState,
    session: &Arc<Session>,
    rx: &mut Rx,
    tx: &mut Tx,
    obligated: &mut F,
    timeout: Duration,
) -> End
where
    F: FnMut(Frame<'_>) -> R,
    R: std::future::Future<Output = Result<(), &'static str>>,
{
    let mut consecutive_errors = 0u32;
    // A fragmented message being reassembled (RFC 6455 §5.4): its opcode and
    // the payload so far, at most `max_frame_bytes` in all.
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    // Armed only while sends await acks (boxed: idle connections carry none).
    let mut recheck: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        // Kept across mailbox writes: dropping a half-read frame would
        // desynchronize the stream.
        let mut read = pin!(rx.read_frame(obligated));
        let frame = loop {
            if recheck.is_none() && session.has_pending() {
                recheck = Some(Box::pin(tokio::time::sleep(CHECK_TICK)));
            }
            // Not biased: a steady stream of events must not starve reading
            // (pings, closes), nor a chatty client its events.
            tokio::select! {
                () = state.shutdown.cancelled() => return End::CloseAndDrain(GOING_AWAY),
                () = async {
                    match recheck.as_mut() {
                        Some(t) => t.as_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    recheck = None;
                    session.check_due(state);
                }
                next = session.mailbox.next() => {
                    let f = match next {
                        Next::Control(op, payload) => Frame::new(true, op, None, Payload::Owned(payload)),
                        Next::Item(Item::Frame(bytes)) => Frame::text(Payload::Owned(bytes)),
                        Next::Item(Item::Event(payload)) => match delivery_frame(session, &payload) {
                            Some(bytes) => Frame::text(Payload::Owned(bytes)),
                            None => continue,
                        },
                        // Drained, so the client sees the code rather than a reset.
                        Next::Close(code) => return End::CloseAndDrain(code),
                    };
                    if let Err(end) = Box::pin(write(tx, f, timeout)).await {
                        if matches!(end, End::Cut) {
                            tracing::info!(user = %session.user_id, "closing a client that cannot keep up");
                        }
                        return end;
                    }
                }
                f = &mut read => break f,
            }
        };
        let mut frame = match frame {
            Ok(f) => f,
            Err(WebSocketError::FrameTooLarge) => return End::CloseAndDiscard(TOO_BIG),
            Err(WebSocketError::InvalidUTF8) => return End::CloseAndDrain(INVALID_DATA),
            Err(
                WebSocketError::ReservedBitsNotZero
                | WebSocketError::ControlFrameFragmented
                | WebSocketError::PingFrameTooLarge
                | WebSocketError::InvalidValue
                | WebSocketError::InvalidCloseFrame
                | WebSocketError::InvalidCloseCode,
            ) => return End::CloseAndDiscard(PROTOCOL_ERROR),
            Err(_) => return End::Quiet,
        };
        // Every frame from a client must be masked (RFC 6455 §5.1); the
        // mask is private to the frame, its header shows it.
        let mut head = [0u8; 14];
        frame.fmt_head(&mut head);
        if head[1] & 0x80 == 0 {
            return End::CloseAndDrain(PROTOCOL_ERROR);
        }
        let max = state.config.max_frame_bytes;
        let (opcode, payload): (OpCode, std::borrow::Cow<'_, [u8]>) = match frame.opcode {
            OpCode::Continuation => {
                let Some((op, mut buf)) = partial.take() else {
                    return End::CloseAndDrain(PROTOCOL_ERROR);
                };
                if buf.len() + frame.payload.len() > max {
                    return End::CloseAndDrain(TOO_BIG);
                }
                buf.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial = Some((op, buf));
                    continue;
                }
                if op == OpCode::Text && std::str::from_utf8(&buf).is_err() {
                    return End::CloseAndDrain(INVALID_DATA);
                }
                (op, std::borrow::Cow::Owned(buf))
            }
            // A new message while one is unfinished.
            OpCode::Text | OpCode::Binary if partial.is_some() => {
                return End::CloseAndDrain(PROTOCOL_ERROR)
            }
            OpCode::Text | OpCode::Binary if !frame.fin => {
                partial = Some((frame.opcode, frame.payload.to_vec()));
                continue;
            }
            op => (op, std::borrow::Cow::Borrowed(&frame.payload[..])),
        };
        let reply = match opcode {
            // Boxed: the handlers' futures are large and needed only while a
            // frame is handled, not by every idle connection.
            OpCode::Text => Box::pin(handle_text(state, session, &payload)).await,
            OpCode::Binary => Err(FrameError::new(
                "binary_not_supported",
                "frames are JSON text",
            )),
            OpCode::Close => return End::Quiet,
            _ => Ok(None),
        };
        let reply = match reply {
            Ok(r) => {
                consecutive_errors = 0;
                r
            }
            Err(e) => {
                // Backpressure and a bus hiccup are the server's answers to a
                // well-formed frame, not abuse: they never close the socket
                // (which would strand the acks of the sends still in flight).
                if !matches!(e.code, "rate_limited" | "unavailable") {
                    consecutive_errors += 1;
                }
                Some(error_frame(e))
            }
        };
        if let Some(bytes) = reply {
            if let Err(end) = Box::pin(write(tx, Frame::text(Payload::Owned(bytes)), timeout)).await
            {
                return end;
            }
        }
        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
            return End::CloseAndDrain(POLICY);
        }
    }
}

/// After we sent a close frame: read and discard until the client's close (or
/// a short deadline), so the socket is not reset while our close is in
/// flight and the client gets to see the close code.
async fn drain<F, R>(rx: &mut Rx, obligated: &mut F)
where
    F: FnMut(Frame<'_>) -> R,
    R: std::future::Future<Output = Result<(), &'static str>>,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx.read_frame(obligated).await {
                Ok(f) if f.opcode != OpCode::Close => {}
                _ => break,
            }
        }
    })
    .await;
}

/// Handles one text frame; `Ok(Some(frame))` is a reply to write now.
async fn handle_text(
    state: &EdgeState,
    session: &Arc<Session>,
    payload: &[u8],
) -> Result<Option<Vec<u8>>, FrameError> {
    match frame::parse(payload)? {
        Request::Ping => Ok(Some(encode(&ServerFrame::Pong))),
        Request::Send(f) => send(state, session, f).await.map(|()| None),
        Request::Receipt(r) => receipt(state, session, r).await.map(|()| None),
        Request::Change(kind, f) => super::changing::change(state, session, kind, f)
            .await
            .map(|()| None),
        Request::Presence(p) => super::presence::watch(state, session, p.user_ids)
            .await
            .map(|()| None),
        Request::Typing(t) => {
            let per_second = if state.limits.config.enabled {
                state.limits.config.typing_per_second
            } else {
                0
            };
            if !session.typing_allowed(per_second) {
                crate::limit::counted("typing");
                return Err(FrameError::new("rate_limited", "too many typing notices"));
            }
            let event = pb::TypingEvent {
                conversation_id: t.conversation_id,
                user_id: session.user_id.clone(),
            };
            // Ephemeral: a lost typing event is harmless. The workers know
            // which edge holds the other members (and check the sender is one).
            let member = match id::direct_members(&event.conversation_id) {
                Some((a, b)) => a == session.user_id || b == session.user_id,
                None => id::is_group_id(&event.conversation_id),
            };
            if member {
                let to = subject::typing(&event.conversation_id);
                let _ = state.nats.publish(to, event.encode_to_vec().into()).await;
            }
            Ok(None)
        }
    }
}

/// # `{"type":"receipt"}`
/// Publishes a watermark claim; the sequencer keeps the highest. Errors:
/// `unknown_conversation`, `not_member` (direct chats, checked here; groups
/// are checked by the sequencer), `unavailable`.
async fn receipt(
    state: &EdgeState,
    session: &Arc<Session>,
    r: msgr_schemas::client::ReceiptFrame,
) -> Result<(), FrameError> {
    let conv = r.conversation_id;
    if !id::is_conversation_id(&conv) {
        return Err(FrameError::new(
            "unknown_conversation",
            "no such conversation",
        ));
    }
    if let Some((a, b)) = id::direct_members(&conv) {
        if a != session.user_id && b != session.user_id {
            return Err(FrameError::new(
                "not_member",
                "not a member of this conversation",
            ));
        }
    }
    let cmd = pb::ReceiptCommand {
        conversation_id: conv.clone(),
        user_id: session.user_id.clone(),
        status: match r.status {
            ReceiptStatusJson::Delivered => pb::ReceiptStatus::Delivered,
            ReceiptStatusJson::Read => pb::ReceiptStatus::Read,
        } as i32,
        up_to_seq: r.up_to_seq,
        at_ms: msgr_core::time::now_ms(),
    };
    // Counted before the publish so the bound holds for every frame read.
    if session.receipts_in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_RECEIPTS_IN_FLIGHT {
        session.receipts_in_flight.fetch_sub(1, Ordering::AcqRel);
        return Err(FrameError::new(
            "rate_limited",
            "too many receipts awaiting confirmation",
        ));
    }
    if id::is_group_id(&conv) {
        session.sent_group_receipt(&conv);
    }
    let in_flight = InFlight(Arc::clone(session));
    let fut = state
        .commands
        .submit(
            id::partition_of(&conv, state.partitions),
            pb::command::Command::Receipt(cmd),
        )
        .await
        .map_err(|_| FrameError::new("unavailable", "could not record the receipt; retry"))?;
    tokio::spawn(async move {
        if !matches!(fut.await, Ok(Ok(_))) {
            in_flight.0.post(error_frame(FrameError::new(
                "unavailable",
                "could not record the receipt; retry",
            )));
        }
    });
    Ok(())
}

/// One receipt publish awaiting its ack; released however the task ends.
struct InFlight(Arc<Session>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.receipts_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Turns an inbox event into the frame for this connection (if any).
fn delivery_frame(session: &Session, payload: &Bytes) -> Option<Vec<u8>> {
    let d = pb::Delivery::decode(payload.clone()).ok()?;
    let frame = match d.event? {
        pb::delivery::Event::Message(m) => {
            if m.sender_id == session.user_id {
                if let Some(t0) = session.take_acked(&m.client_msg_id) {
                    metrics::histogram!("msgr_edge_ack_seconds").record(t0.elapsed().as_secs_f64());
                    return Some(encode(&ack_frame(&m)));
                }
            }
            metrics::counter!("msgr_edge_messages_out_total").increment(1);
            ServerFrame::Message {
                message: Box::new(crate::convert::message(m)),
            }
        }
        pb::delivery::Event::Receipt(r) => ServerFrame::Receipt {
            status: crate::convert::receipt_status(r.status()),
            conversation_id: r.conversation_id,
            user_id: r.user_id,
            up_to_seq: r.up_to_seq,
            at: msgr_core::time::rfc3339_ms(r.at_ms),
        },
        pb::delivery::Event::Rejected(r) if r.client_msg_id.is_empty() => {
            // A refused group receipt: for the connection(s) that sent one.
            if !session.took_group_receipt(&r.conversation_id) {
                return None;
            }
            metrics::counter!("msgr_edge_frames_rejected_total", "code" => r.code.clone())
                .increment(1);
            ServerFrame::Error {
                code: r.code,
                message: r.message,
                client_msg_id: None,
                conversation_id: Some(r.conversation_id),
            }
        }
        pb::delivery::Event::Rejected(r) => {
            // Only the connection that sent it is waiting for an answer.
            if session.take_pending(&r.client_msg_id).is_none()
                && !session.take_change(&r.client_msg_id)
            {
                return None;
            }
            ServerFrame::Error {
                code: r.code,
                message: r.message,
                client_msg_id: Some(r.client_msg_id),
                conversation_id: None,
            }
        }
        pb::delivery::Event::Group(g) => {
            let frame = serde_json::json!({
                "type": "group",
                "event": g.kind,
                "group_id": g.group_id,
                "user_id": g.user_id,
                "by": g.actor_id,
                "promoted_user_id": g.promoted_user_id,
                "group": g.group.as_ref().map(crate::routes::groups::group_json),
            });
            return serde_json::to_vec(&frame).ok();
        }
        pb::delivery::Event::Changed(c) => {
            if c.actor_id == session.user_id {
                session.take_change(&c.client_msg_id);
            }
            ServerFrame::MessageUpdate {
                change: c.kind,
                actor_id: c.actor_id,
                client_msg_id: c.client_msg_id,
                message: Box::new(crate::convert::message(c.message?)),
            }
        }
        // Presence reaches edges on its own subject, never in an inbox.
        pb::delivery::Event::Presence(_) => return None,
        pb::delivery::Event::Typing(t) => {
            if t.user_id == session.user_id {
                return None;
            }
            ServerFrame::Typing {
                conversation_id: t.conversation_id,
                user_id: t.user_id,
            }
        }
    };
    Some(encode(&frame))
}
