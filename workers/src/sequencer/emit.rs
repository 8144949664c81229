//! Announcing a batch's outcomes: stored messages to every member's inbox
//! (the sender's becomes its `ack`) and to integrators, advanced watermarks
//! as receipt events, changes as `changed` events, refusals to the actor.

use bytes::Bytes;
use msgr_core::id;
use msgr_core::store::{OpOutcome, ReceiptKind};
use msgr_nats::subject;
use msgr_schemas::pb::v1 as pb;
use prost::Message;

use super::decode::{Answer, Decoded};
use crate::context::WorkerContext;
use crate::convert;
use crate::deliver::Outbox;

/// Which integrator subjects carry stored messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegratorEvents {
    /// `msgr.v2.evt.messages.<partition>`: one `StoredMessages` per batch.
    #[default]
    V2,
    /// `msgr.v1.evt.message.<conversation_id>`: one `StoredMessage` each.
    V1,
    /// Both.
    Both,
}

/// A batch's stored messages for integrators: published one by one (v1)
/// and/or together at the end of the batch (v2), as an encoded
/// `StoredMessages` made of the very bytes of each `StoredMessage`.
pub(super) struct Events {
    partition: u32,
    parts: Vec<Vec<u8>>,
}

/// A v2 event part stays under this (the bus's `max_payload` is 1 MiB).
const EVENTS_PART_MAX: usize = 768 * 1024;

impl Events {
    pub(super) fn new(partition: u32) -> Self {
        Self {
            partition,
            parts: Vec::new(),
        }
    }

    async fn message(&mut self, ctx: &WorkerContext, conversation_id: &str, event: Vec<u8>) {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let mode = ctx.config.integrator_events;
        if mode != IntegratorEvents::V1 {
            if self
                .parts
                .last()
                .is_none_or(|p| !p.is_empty() && p.len() + event.len() > EVENTS_PART_MAX)
            {
                self.parts.push(Vec::new());
            }
            if let Some(part) = self.parts.last_mut() {
                encode_key(1, WireType::LengthDelimited, part);
                encode_varint(event.len() as u64, part);
                part.extend_from_slice(&event);
            }
        }
        if mode != IntegratorEvents::V2 {
            if let Err(e) = ctx
                .nats
                .publish(subject::evt_message(conversation_id), event.into())
                .await
            {
                tracing::warn!(error = %e, "event publish failed");
            }
        }
    }

    /// Publishes the batch's messages (v2).
    pub(super) async fn flush(self, ctx: &WorkerContext) {
        let subject = subject::v2::evt_messages(self.partition);
        for part in self.parts.into_iter().filter(|p| !p.is_empty()) {
            if let Err(e) = ctx.nats.publish(subject.clone(), part.into()).await {
                tracing::warn!(error = %e, "event publish failed");
            }
        }
    }
}

/// Group member lists read during one batch: each group's list is read from
/// the store once per batch, not once per message.
pub(super) type MemberCache = std::collections::HashMap<String, Vec<msgr_core::store::MemberState>>;

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

/// Queues one delivery for every user in `to` (published with the batch).
fn fan_out(out: &mut Outbox, ctx: &WorkerContext, to: &[String], delivery: &pb::Delivery) {
    out.push(ctx, to, &Bytes::from(delivery.encode_to_vec()));
}

pub(super) fn reject(ctx: &WorkerContext, out: &mut Outbox, a: &Answer, code: &str, message: &str) {
    metrics::counter!("msgr_worker_commands_total", "outcome" => "rejected").increment(1);
    let d = pb::Delivery {
        event: Some(pb::delivery::Event::Rejected(pb::CommandRejected {
            sender_id: a.user_id.clone(),
            client_msg_id: a.client_msg_id.clone(),
            conversation_id: a.conversation_id.clone(),
            code: code.to_owned(),
            message: message.to_owned(),
        })),
    };
    fan_out(out, ctx, std::slice::from_ref(&a.user_id), &d);
}

pub(super) async fn emit(
    ctx: &WorkerContext,
    out: &mut Outbox,
    events: &mut Events,
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
            events.message(ctx, &m.conversation_id, event).await;
            let mut to = members(ctx, cache, &m.conversation_id, Some(m.seq)).await;
            // The sender's own inbox carries its ack: never skip it.
            if !to.contains(&m.sender_id) {
                to.push(m.sender_id.clone());
            }
            out.push(ctx, &to, &delivery);
        }
        (OpOutcome::Rejected(r), Decoded::Send(s)) => {
            reject(ctx, out, &Answer::of_send(s), r.code(), r.message());
        }
        (OpOutcome::Rejected(r), Decoded::Change(c)) => {
            reject(ctx, out, &Answer::of_change(c), r.code(), r.message());
        }
        (
            OpOutcome::Changed {
                message,
                fresh,
                orphaned_media,
            },
            Decoded::Change(c),
        ) => {
            metrics::counter!("msgr_worker_commands_total",
                "outcome" => if *fresh { "changed" } else { "duplicate" })
            .increment(1);
            let kind = match &c.change {
                Some(pb::change_command::Change::EditText(_)) => "edited",
                Some(pb::change_command::Change::Delete(_)) => "deleted",
                _ => "reaction",
            };
            let event = pb::MessageChanged {
                kind: kind.to_owned(),
                actor_id: c.actor_id.clone(),
                client_msg_id: c.client_msg_id.clone(),
                message: Some(convert::message(message, None)),
            };
            if let Err(e) = ctx
                .nats
                .publish(
                    subject::evt_change(&message.conversation_id),
                    event.encode_to_vec().into(),
                )
                .await
            {
                tracing::warn!(error = %e, "event publish failed");
            }
            let to = members(ctx, cache, &message.conversation_id, Some(message.seq)).await;
            // Only current members and the actor: a former member's copy is frozen.
            let current = members(ctx, cache, &message.conversation_id, None).await;
            let to: Vec<String> = to.into_iter().filter(|u| current.contains(u)).collect();
            fan_out(
                out,
                ctx,
                &to,
                &pb::Delivery {
                    event: Some(pb::delivery::Event::Changed(event)),
                },
            );
            if let Some(media_id) = orphaned_media {
                crate::media::remove_object(ctx, media_id);
            }
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
                    out,
                    ctx,
                    &to,
                    &pb::Delivery {
                        event: Some(pb::delivery::Event::Receipt(e)),
                    },
                );
            }
        }
        (OpOutcome::Rejected(rej), Decoded::Receipt(r))
            if matches!(rej, msgr_core::store::Rejection::NotMember)
                || id::is_group_id(&r.conversation_id) =>
        {
            // Answered like a direct chat's receipt from a stranger (which
            // the edge refuses itself): the edge shows it to the connection
            // that sent a receipt for this conversation. An empty direct
            // chat's watermark stays a silent no-op.
            metrics::counter!("msgr_worker_commands_total", "outcome" => "rejected").increment(1);
            let message = match rej {
                msgr_core::store::Rejection::NotMember => "not a member of this conversation",
                _ => "no such conversation",
            };
            let d = pb::Delivery {
                event: Some(pb::delivery::Event::Rejected(pb::CommandRejected {
                    sender_id: r.user_id.clone(),
                    client_msg_id: String::new(),
                    conversation_id: r.conversation_id.clone(),
                    code: rej.code().to_owned(),
                    message: message.to_owned(),
                })),
            };
            fan_out(out, ctx, std::slice::from_ref(&r.user_id), &d);
        }
        (OpOutcome::Unchanged | OpOutcome::Rejected(_), _) => {
            metrics::counter!("msgr_worker_commands_total", "outcome" => "no_change").increment(1);
        }
        (OpOutcome::Advanced { .. } | OpOutcome::Changed { .. }, _) => {}
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
