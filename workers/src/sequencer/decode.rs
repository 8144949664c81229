//! Bus commands into store operations: sends, receipts and changes, each
//! checked; what cannot be decoded is poison (terminated, and its sender
//! told when it can be named).

use async_nats::jetstream;
use msgr_core::id;
use msgr_core::store::{
    ChangeKind, MessageChange, NewMessage, Op, ReceiptKind, Target, WatermarkUpdate,
};
use msgr_nats::subject;
use msgr_schemas::pb::v1 as pb;
use prost::Message;

/// What a decoded command was, to route its outcome.
pub(super) enum Decoded {
    Send(pb::SendCommand),
    Receipt(pb::ReceiptCommand),
    Change(pb::ChangeCommand),
}

/// Whom a refusal of a command goes to: the actor's inbox, matched by the
/// connection that waits for `client_msg_id`.
pub(super) struct Answer {
    pub(super) user_id: String,
    pub(super) client_msg_id: String,
    pub(super) conversation_id: String,
}

impl Answer {
    pub(super) fn of_send(s: &pb::SendCommand) -> Self {
        Self {
            user_id: s.sender_id.clone(),
            client_msg_id: s.client_msg_id.clone(),
            conversation_id: s.conversation_id.clone(),
        }
    }

    pub(super) fn of_change(c: &pb::ChangeCommand) -> Self {
        Self {
            user_id: c.actor_id.clone(),
            client_msg_id: c.client_msg_id.clone(),
            conversation_id: c.conversation_id.clone(),
        }
    }
}

pub(super) struct Poison {
    pub(super) reason: &'static str,
    pub(super) answer: Option<Answer>,
}

/// The edit and delete windows, in ms.
#[derive(Clone, Copy)]
pub(super) struct Windows {
    pub(super) edit_ms: i64,
    pub(super) delete_ms: i64,
}

/// Where a command must belong: the conversation its v1 subject names, or
/// the partition of its v2 batch.
#[derive(Clone, Copy)]
enum Place<'a> {
    Conversation(&'a str),
    Partition { partition: u32, of: u32 },
}

impl Place<'_> {
    fn holds(self, conversation_id: &str) -> bool {
        match self {
            Place::Conversation(c) => c == conversation_id,
            Place::Partition { partition, of } => {
                id::partition_of(conversation_id, of) == partition
            }
        }
    }
}

/// One decoded command, or why it is refused.
pub(super) type Decoding = Result<(Op, Decoded), Poison>;

/// The commands a stream message carries: one (v1 subjects) or a batch
/// (`msgr.v2.in.<p>.batch`). `Err` when the message as a whole is poison
/// (terminated); a bad command inside a batch is refused on its own.
pub(super) fn decode(
    msg: &jetstream::Message,
    now: i64,
    windows: Windows,
    partitions: u32,
) -> Result<Vec<Decoding>, Poison> {
    if subject::v2::is_batch(&msg.subject) {
        let partition = subject::v2::partition_of(&msg.subject).ok_or(Poison {
            reason: "batch subject",
            answer: None,
        })?;
        let batch = pb::CommandBatch::decode(msg.payload.clone()).map_err(|_| Poison {
            reason: "bad command batch protobuf",
            answer: None,
        })?;
        let place = Place::Partition {
            partition,
            of: partitions,
        };
        return Ok(batch
            .commands
            .into_iter()
            .map(|c| match c.command {
                Some(pb::command::Command::Send(s)) => decode_send(s, place, now),
                Some(pb::command::Command::Receipt(r)) => decode_receipt(r, place, now),
                Some(pb::command::Command::Change(c)) => decode_change(c, place, now, windows),
                None => Err(Poison {
                    reason: "empty command",
                    answer: None,
                }),
            })
            .collect());
    }
    let place = Place::Conversation(msg.subject.rsplit('.').next().unwrap_or_default());
    let one = if subject::is_change(&msg.subject) {
        let c = pb::ChangeCommand::decode(msg.payload.clone()).map_err(|_| Poison {
            reason: "bad change protobuf",
            answer: None,
        })?;
        decode_change(c, place, now, windows)
    } else if subject::is_receipt(&msg.subject) {
        let r = pb::ReceiptCommand::decode(msg.payload.clone()).map_err(|_| Poison {
            reason: "bad receipt protobuf",
            answer: None,
        })?;
        decode_receipt(r, place, now)
    } else {
        let s = pb::SendCommand::decode(msg.payload.clone()).map_err(|_| Poison {
            reason: "bad send protobuf",
            answer: None,
        })?;
        decode_send(s, place, now)
    };
    one.map(|d| vec![Ok(d)])
}

fn decode_receipt(r: pb::ReceiptCommand, place: Place<'_>, now: i64) -> Decoding {
    let kind = match r.status() {
        pb::ReceiptStatus::Delivered => ReceiptKind::Delivered,
        pb::ReceiptStatus::Read => ReceiptKind::Read,
        pb::ReceiptStatus::Unspecified => {
            return Err(Poison {
                reason: "receipt status",
                answer: None,
            })
        }
    };
    if !place.holds(&r.conversation_id) || !id::is_user_id(&r.user_id) {
        return Err(Poison {
            reason: "receipt fields",
            answer: None,
        });
    }
    let op = Op::Receipt(WatermarkUpdate {
        conversation_id: r.conversation_id.clone(),
        user_id: r.user_id.clone(),
        kind,
        up_to_seq: r.up_to_seq,
        at_ms: if r.at_ms > 0 { r.at_ms } else { now },
    });
    Ok((op, Decoded::Receipt(r)))
}

fn decode_send(s: pb::SendCommand, place: Place<'_>, now: i64) -> Decoding {
    let bad = |reason| Poison {
        reason,
        answer: Some(Answer::of_send(&s)),
    };
    if !place.holds(&s.conversation_id) || !id::is_user_id(&s.sender_id) {
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
        reply_to_seq: s.reply_to_seq,
    });
    Ok((op, Decoded::Send(s)))
}

fn decode_change(c: pb::ChangeCommand, place: Place<'_>, now: i64, windows: Windows) -> Decoding {
    let bad = |reason| Poison {
        reason,
        answer: Some(Answer::of_change(&c)),
    };
    if !place.holds(&c.conversation_id)
        || !id::is_user_id(&c.actor_id)
        || msgr_core::validate::client_msg_id(&c.client_msg_id).is_err()
        || c.seq == 0
    {
        return Err(bad("change fields"));
    }
    let (kind, window_ms) = match &c.change {
        Some(pb::change_command::Change::EditText(t)) => {
            if msgr_core::validate::message_body(Some(t), false).is_err() {
                return Err(bad("edit body"));
            }
            (ChangeKind::Edit(t.clone()), windows.edit_ms)
        }
        Some(pb::change_command::Change::Delete(_)) => (ChangeKind::Delete, windows.delete_ms),
        Some(pb::change_command::Change::ReactEmoji(e)) if e.is_empty() => {
            (ChangeKind::React(None), 0)
        }
        Some(pb::change_command::Change::ReactEmoji(e)) => {
            if !msgr_core::validate::reaction(e) {
                return Err(bad("reaction"));
            }
            (ChangeKind::React(Some(e.clone())), 0)
        }
        None => return Err(bad("change kind")),
    };
    let op = Op::Change(MessageChange {
        conversation_id: c.conversation_id.clone(),
        seq: c.seq,
        actor_id: c.actor_id.clone(),
        client_msg_id: c.client_msg_id.clone(),
        kind,
        at_ms: now,
        window_ms,
    });
    Ok((op, Decoded::Change(c)))
}
