//! One WebSocket connection.
//!
//! - Before the first frame is read, the session subscribes to its user's
//!   inbox subject, so no event for a message it sends can be missed.
//! - The reader task parses frames, publishes commands to JetStream and
//!   queues replies (errors, pongs) on the bounded outbox.
//! - The writer task writes the outbox and the inbox events. A `message` event
//!   for a `client_msg_id` this connection is waiting on becomes its `ack`;
//!   every other connection gets a `message` frame.
//! - A socket that accepts no bytes for `slow_client_timeout_ms` is closed
//!   with 1013: the client reconnects and syncs history. Nothing grows
//!   without bound: the outbox, the in-flight map and the NATS subscription
//!   buffer are all capped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use futures_util::StreamExt;
use hyper::upgrade::Upgraded;
use msgr_core::id;
use msgr_nats::{rpc, subject};
use msgr_schemas::client::{ReceiptStatusJson, ServerFrame};
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame::{self, FrameError, Request};
use crate::state::EdgeState;

type Io = hyper_util::rt::TokioIo<Upgraded>;

/// Close codes.
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const INVALID_DATA: u16 = 1007;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const TRY_AGAIN_LATER: u16 = 1013;

/// Bad frames in a row after which a client counts as misbehaving.
const MAX_CONSECUTIVE_ERRORS: u32 = 32;

enum Out {
    /// A serialized server frame.
    Text(Vec<u8>),
    /// A control frame the protocol obliges us to send (pong, close reply).
    Control(OpCode, Vec<u8>),
}

/// State shared by the reader, the writer and in-flight publish tasks.
struct Shared {
    user_id: String,
    /// `client_msg_id` → when the frame was read, for sends awaiting their ack.
    pending: Mutex<HashMap<String, Instant>>,
    /// Receipt publishes awaiting their JetStream ack (bounded per connection).
    receipts_in_flight: Arc<tokio::sync::Semaphore>,
    /// Set before `kill` is cancelled: the close code to send.
    close_code: AtomicU16,
    kill: CancellationToken,
}

impl Shared {
    fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }

    fn take_pending(&self, cmid: &str) -> Option<Instant> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(cmid)
    }
}

fn encode(frame: &ServerFrame) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(frame).unwrap_or_default()
}

fn error_frame(e: FrameError) -> Vec<u8> {
    metrics::counter!("msgr_edge_frames_rejected_total", "code" => e.code).increment(1);
    encode(&ServerFrame::Error {
        code: e.code.to_owned(),
        message: e.message,
        client_msg_id: e.client_msg_id,
    })
}

/// Runs one connection to completion.
pub(super) async fn run(state: EdgeState, user_id: String, ws: WebSocket<Io>) {
    // Subscribe, and flush so the server has the subscription, before reading
    // any frame: an event for a message this socket sends can then not be missed.
    let subscribed = match state.nats.subscribe(subject::deliver_user(&user_id)).await {
        Ok(s) => state
            .nats
            .flush()
            .await
            .map(|()| s)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let sub = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "inbox subscribe failed; closing");
            let mut ws = ws;
            let _ = ws
                .write_frame(Frame::close(TRY_AGAIN_LATER, b"try again"))
                .await;
            return;
        }
    };
    metrics::gauge!("msgr_edge_connections").increment(1.0);
    let conn_id = state.next_conn_id.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn_id, user = %user_id, "connected");
    let shared = Arc::new(Shared {
        user_id,
        pending: Mutex::new(HashMap::new()),
        receipts_in_flight: Arc::new(tokio::sync::Semaphore::new(256)),
        close_code: AtomicU16::new(0),
        kill: CancellationToken::new(),
    });
    let (read, write) = ws.split(tokio::io::split);
    let (out_tx, out_rx) = mpsc::channel(state.config.outbox_capacity.max(1));
    let writer = tokio::spawn(write_loop(
        state.clone(),
        Arc::clone(&shared),
        write,
        out_rx,
        sub,
    ));
    read_loop(&state, &shared, read, &out_tx).await;
    shared.close(NORMAL);
    drop(out_tx);
    let _ = writer.await;
    metrics::gauge!("msgr_edge_connections").decrement(1.0);
    tracing::debug!(conn_id, "disconnected");
}

async fn read_loop(
    state: &EdgeState,
    shared: &Arc<Shared>,
    mut rx: WebSocketRead<tokio::io::ReadHalf<Io>>,
    out: &mpsc::Sender<Out>,
) {
    let control_tx = out.clone();
    let mut obligated = move |f: Frame<'_>| {
        let r = control_tx
            .try_send(Out::Control(f.opcode, f.payload.to_vec()))
            .map_err(|_| "outbox full");
        std::future::ready(r)
    };
    let mut consecutive_errors = 0u32;
    loop {
        let frame = tokio::select! {
            () = state.shutdown.cancelled() => {
                shared.close(GOING_AWAY);
                return drain(&mut rx, &mut obligated).await;
            }
            () = shared.kill.cancelled() => return,
            f = rx.read_frame(&mut obligated) => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(WebSocketError::FrameTooLarge) => return shared.close(TOO_BIG),
            Err(WebSocketError::InvalidUTF8) => return shared.close(INVALID_DATA),
            Err(_) => return,
        };
        // Fragmented messages would need reassembly without a size bound;
        // clients send each JSON frame whole (browsers always do).
        if !frame.fin || frame.opcode == OpCode::Continuation {
            return shared.close(TOO_BIG);
        }
        let reply = match frame.opcode {
            OpCode::Text => handle_text(state, shared, out, &frame.payload).await,
            OpCode::Binary => Err(FrameError::new(
                "binary_not_supported",
                "frames are JSON text",
            )),
            OpCode::Close => return,
            _ => Ok(()),
        };
        match reply {
            Ok(()) => consecutive_errors = 0,
            Err(e) => {
                consecutive_errors += 1;
                if !push(shared, out, error_frame(e)).await {
                    return;
                }
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    shared.close(POLICY);
                    return drain(&mut rx, &mut obligated).await;
                }
            }
        }
    }
}

/// After we sent a close frame: read and discard until the client's close (or
/// a short deadline), so the socket is not reset while our close is in
/// flight and the client gets to see the close code.
async fn drain<F, R>(rx: &mut WebSocketRead<tokio::io::ReadHalf<Io>>, obligated: &mut F)
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

/// Queues a frame for the writer, waiting while the outbox is full (that
/// throttles a client that sends faster than it reads). False once closing.
async fn push(shared: &Shared, out: &mpsc::Sender<Out>, bytes: Vec<u8>) -> bool {
    tokio::select! {
        () = shared.kill.cancelled() => false,
        r = out.send(Out::Text(bytes)) => r.is_ok(),
    }
}

async fn handle_text(
    state: &EdgeState,
    shared: &Arc<Shared>,
    out: &mpsc::Sender<Out>,
    payload: &[u8],
) -> Result<(), FrameError> {
    match frame::parse(payload)? {
        Request::Ping => {
            push(shared, out, encode(&ServerFrame::Pong)).await;
            Ok(())
        }
        Request::Send(f) => send(state, shared, out, f).await,
        Request::Receipt(r) => receipt(state, shared, out, r).await,
        Request::Typing(t) => {
            if let Some((a, b)) = id::direct_members(&t.conversation_id) {
                if a == shared.user_id || b == shared.user_id {
                    let peer = subject::deliver_user(if a == shared.user_id { b } else { a });
                    let d = pb::Delivery {
                        event: Some(pb::delivery::Event::Typing(pb::TypingEvent {
                            conversation_id: t.conversation_id,
                            user_id: shared.user_id.clone(),
                        })),
                    };
                    // Ephemeral: a lost typing event is harmless.
                    let _ = state.nats.publish(peer, d.encode_to_vec().into()).await;
                }
            }
            Ok(())
        }
    }
}

fn sending_error(code: &'static str, message: &str, cmid: &str) -> FrameError {
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
async fn send(
    state: &EdgeState,
    shared: &Arc<Shared>,
    out: &mpsc::Sender<Out>,
    f: msgr_schemas::client::SendFrame,
) -> Result<(), FrameError> {
    let me = shared.user_id.clone();
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
    {
        let mut pending = shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() >= state.config.max_in_flight {
            // Entries whose answer was lost (dropped push, crash) must not pin
            // the connection at its limit forever; the client resends anyway.
            pending.retain(|_, t| t.elapsed() < Duration::from_secs(60));
        }
        if pending.len() >= state.config.max_in_flight && !pending.contains_key(&cmid) {
            return Err(sending_error(
                "rate_limited",
                "too many messages awaiting acks",
                &cmid,
            ));
        }
        pending.insert(cmid.clone(), Instant::now());
    }
    let cmd = pb::SendCommand {
        sender_id: me.clone(),
        client_msg_id: cmid.clone(),
        conversation_id: conversation_id.clone(),
        target: Some(target),
        text: f.text,
        media_id: f.media_id,
        received_at_ms: msgr_core::time::now_ms(),
    };
    let subject = subject::in_send(
        id::partition_of(&conversation_id, state.partitions),
        &conversation_id,
    );
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{me}:{cmid}").as_str());
    let started = Instant::now();
    let publish = state
        .js
        .publish_with_headers(subject, headers, cmd.encode_to_vec().into())
        .await;
    metrics::counter!("msgr_edge_messages_in_total").increment(1);
    let ack_future = match publish {
        Ok(f) => f,
        Err(e) => {
            shared.take_pending(&cmid);
            tracing::warn!(error = %e, "publish failed");
            return Err(sending_error(
                "unavailable",
                "could not accept the message; retry",
                &cmid,
            ));
        }
    };
    // Await the PubAck off the read path so a client can pipeline sends.
    let (state, shared, out) = (state.clone(), Arc::clone(shared), out.clone());
    tokio::spawn(async move {
        match ack_future.await {
            Ok(ack) => {
                metrics::histogram!("msgr_edge_publish_seconds")
                    .record(started.elapsed().as_secs_f64());
                if ack.duplicate {
                    // JetStream dropped a resend inside its window: the original
                    // may be stored already, so answer from the store.
                    resolve_duplicate(&state, &shared, &out, &cmid).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publish not acknowledged");
                if shared.take_pending(&cmid).is_some() {
                    let e =
                        sending_error("unavailable", "could not accept the message; retry", &cmid);
                    push(&shared, &out, error_frame(e)).await;
                }
            }
        }
    });
    Ok(())
}

async fn resolve_duplicate(
    state: &EdgeState,
    shared: &Shared,
    out: &mpsc::Sender<Out>,
    cmid: &str,
) {
    let req = pb::LookupRequest {
        sender_id: shared.user_id.clone(),
        client_msg_id: cmid.to_owned(),
    };
    for attempt in 0..5u32 {
        match rpc::call::<_, pb::LookupResult>(
            &state.nats,
            subject::rpc::LOOKUP,
            &req,
            state.rpc_timeout(),
        )
        .await
        {
            Ok(pb::LookupResult { message: Some(m) }) => {
                if shared.take_pending(cmid).is_some() {
                    push(shared, out, encode(&ack_frame(&m))).await;
                }
                return;
            }
            // Not stored yet: the original is still in flight and its event will ack.
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "lookup failed"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    // Never stored (it was refused earlier) and no event coming: say so.
    if shared.take_pending(cmid).is_some() {
        let e = sending_error(
            "unavailable",
            "the message was not stored; send it with a new client_msg_id",
            cmid,
        );
        push(shared, out, error_frame(e)).await;
    }
}

fn ack_frame(m: &pb::StoredMessage) -> ServerFrame {
    ServerFrame::Ack {
        client_msg_id: m.client_msg_id.clone(),
        message_id: m.message_id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq: m.seq,
        sent_at: msgr_core::time::rfc3339_ms(m.sent_at_ms),
    }
}

/// # `{"type":"receipt"}`
/// Publishes a watermark claim; the sequencer keeps the highest. Errors:
/// `unknown_conversation`, `not_member` (direct chats, checked here; groups
/// are checked by the sequencer), `unavailable`.
async fn receipt(
    state: &EdgeState,
    shared: &Arc<Shared>,
    out: &mpsc::Sender<Out>,
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
        if a != shared.user_id && b != shared.user_id {
            return Err(FrameError::new(
                "not_member",
                "not a member of this conversation",
            ));
        }
    }
    let cmd = pb::ReceiptCommand {
        conversation_id: conv.clone(),
        user_id: shared.user_id.clone(),
        status: match r.status {
            ReceiptStatusJson::Delivered => pb::ReceiptStatus::Delivered,
            ReceiptStatusJson::Read => pb::ReceiptStatus::Read,
        } as i32,
        up_to_seq: r.up_to_seq,
        at_ms: msgr_core::time::now_ms(),
    };
    let Ok(permit) = Arc::clone(&shared.receipts_in_flight).try_acquire_owned() else {
        return Err(FrameError::new(
            "rate_limited",
            "too many receipts awaiting confirmation",
        ));
    };
    let subject = subject::in_receipt(id::partition_of(&conv, state.partitions), &conv);
    let fut = state
        .js
        .publish(subject, cmd.encode_to_vec().into())
        .await
        .map_err(|_| FrameError::new("unavailable", "could not record the receipt; retry"))?;
    let (shared, out) = (Arc::clone(shared), out.clone());
    tokio::spawn(async move {
        let _permit = permit;
        if fut.await.is_err() {
            push(
                &shared,
                &out,
                error_frame(FrameError::new(
                    "unavailable",
                    "could not record the receipt; retry",
                )),
            )
            .await;
        }
    });
    Ok(())
}

async fn write_loop(
    state: EdgeState,
    shared: Arc<Shared>,
    mut ws: WebSocketWrite<WriteHalf<Io>>,
    mut out: mpsc::Receiver<Out>,
    mut sub: async_nats::Subscriber,
) {
    let timeout = Duration::from_millis(state.config.slow_client_timeout_ms.max(1));
    loop {
        let bytes: Vec<u8> = tokio::select! {
            biased;
            o = out.recv() => match o {
                Some(Out::Text(b)) => b,
                Some(Out::Control(op, payload)) => {
                    let is_close = op == OpCode::Close;
                    let f = Frame::new(true, op, None, Payload::Owned(payload));
                    if !matches!(tokio::time::timeout(timeout, ws.write_frame(f)).await, Ok(Ok(()))) || is_close {
                        shared.kill.cancel();
                        break;
                    }
                    continue;
                }
                None => break,
            },
            () = shared.kill.cancelled() => {
                let code = match shared.close_code.load(Ordering::SeqCst) { 0 => NORMAL, c => c };
                let reason: &[u8] = match code {
                    GOING_AWAY => b"server shutting down",
                    TOO_BIG => b"frame too large",
                    POLICY => b"too many bad frames",
                    TRY_AGAIN_LATER => b"too slow; reconnect and sync",
                    _ => b"",
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.write_frame(Frame::close(code, reason))).await;
                break;
            }
            m = sub.next() => match m {
                Some(m) => match delivery_frame(&shared, &m.payload) {
                    Some(b) => b,
                    None => continue,
                },
                None => break,
            },
        };
        let f = Frame::text(Payload::Borrowed(&bytes));
        match tokio::time::timeout(timeout, ws.write_frame(f)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                shared.kill.cancel();
                break;
            }
            Err(_) => {
                metrics::counter!("msgr_edge_slow_clients_closed_total").increment(1);
                tracing::info!(user = %shared.user_id, "closing a client that cannot keep up");
                shared.close(TRY_AGAIN_LATER);
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    ws.write_frame(Frame::close(
                        TRY_AGAIN_LATER,
                        b"too slow; reconnect and sync",
                    )),
                )
                .await;
                break;
            }
        }
    }
    let _ = sub.unsubscribe().await;
}

/// Turns an inbox event into the frame for this connection (if any).
fn delivery_frame(shared: &Shared, payload: &Bytes) -> Option<Vec<u8>> {
    let d = pb::Delivery::decode(payload.clone()).ok()?;
    let frame = match d.event? {
        pb::delivery::Event::Message(m) => {
            if m.sender_id == shared.user_id {
                if let Some(t0) = shared.take_pending(&m.client_msg_id) {
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
        pb::delivery::Event::Rejected(r) => {
            // Only the connection that sent it is waiting for an answer.
            shared.take_pending(&r.client_msg_id)?;
            ServerFrame::Error {
                code: r.code,
                message: r.message,
                client_msg_id: Some(r.client_msg_id),
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
        pb::delivery::Event::Typing(t) => {
            if t.user_id == shared.user_id {
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
