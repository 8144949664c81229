//! Subjects. Lowercase, dot-separated, versioned (`msgr.v1.`). Ids minted by
//! the product never contain `.`, `*`, `>` or whitespace, so they are safe tokens.

/// Every command published by edges: `msgr.v1.in.<partition>.<kind>.<conversation_id>`.
pub const IN_ALL: &str = "msgr.v1.in.>";

/// A send command for `conversation_id` in `partition`.
#[must_use]
pub fn in_send(partition: u32, conversation_id: &str) -> String {
    format!("msgr.v1.in.{partition}.send.{conversation_id}")
}

/// A receipt command for `conversation_id` in `partition`.
#[must_use]
pub fn in_receipt(partition: u32, conversation_id: &str) -> String {
    format!("msgr.v1.in.{partition}.receipt.{conversation_id}")
}

/// A change command (edit, delete, reaction) for `conversation_id` in `partition`.
#[must_use]
pub fn in_change(partition: u32, conversation_id: &str) -> String {
    format!("msgr.v1.in.{partition}.change.{conversation_id}")
}

/// Whether an `in` subject carries a change command.
#[must_use]
pub fn is_change(subject: &str) -> bool {
    subject.split('.').nth(4) == Some("change")
}

/// Every change of a conversation's messages, for integrators (core NATS).
/// Payload: `msgr.v1.MessageChanged`.
#[must_use]
pub fn evt_change(conversation_id: &str) -> String {
    format!("msgr.v1.evt.change.{conversation_id}")
}

/// A typing notice in a group, for the workers to check and fan out (core
/// NATS, queue group [`WORKER_QUEUE`]). Payload: `msgr.v1.TypingEvent`.
#[must_use]
pub fn typing(conversation_id: &str) -> String {
    format!("msgr.v1.typing.{conversation_id}")
}

/// Every group typing notice (the workers' subscription).
pub const TYPING_ALL: &str = "msgr.v1.typing.*";

/// A user's presence changes (core NATS, published by edges).
/// Payload: `msgr.v1.PresenceEvent`.
#[must_use]
pub fn presence(user_id: &str) -> String {
    format!("msgr.v1.presence.{user_id}")
}

/// All commands of one partition (a sequencer consumer's filter).
#[must_use]
pub fn in_partition(partition: u32) -> String {
    format!("msgr.v1.in.{partition}.>")
}

/// Whether an `in` subject carries a receipt (else a send).
#[must_use]
pub fn is_receipt(subject: &str) -> bool {
    subject.split('.').nth(4) == Some("receipt")
}

/// A user's inbox: every event for that user (core NATS, real-time push).
/// Payload: `msgr.v1.Delivery`.
#[must_use]
pub fn deliver_user(user_id: &str) -> String {
    format!("{DELIVER_USER_PREFIX}{user_id}")
}

const DELIVER_USER_PREFIX: &str = "msgr.v1.deliver.user.";

/// Every user's inbox (for an edge that takes all events and routes them itself).
pub const DELIVER_USER_ALL: &str = "msgr.v1.deliver.user.*";

/// The user whose inbox `subject` is, if it is one.
#[must_use]
pub fn deliver_user_of(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(DELIVER_USER_PREFIX)
        .filter(|u| !u.is_empty() && !u.contains('.'))
}

/// Every stored message of a conversation, for integrators (core NATS).
/// Payload: `msgr.v1.StoredMessage`.
#[must_use]
pub fn evt_message(conversation_id: &str) -> String {
    format!("msgr.v1.evt.message.{conversation_id}")
}

/// A finished upload (stream `MSGR_MEDIA`). Payload: `msgr.v1.MediaUploaded`.
pub const MEDIA_UPLOADED: &str = "msgr.v1.evt.media.uploaded";

/// Request/reply services, answered by workers in the [`WORKER_QUEUE`] group.
pub mod rpc {
    pub const BOOTSTRAP: &str = "msgr.v1.rpc.bootstrap";
    pub const REGISTER: &str = "msgr.v1.rpc.account.register";
    pub const LOGIN: &str = "msgr.v1.rpc.account.login";
    pub const USERS: &str = "msgr.v1.rpc.account.users";
    pub const USER_SEARCH: &str = "msgr.v1.rpc.account.search";
    pub const SESSIONS: &str = "msgr.v1.rpc.account.sessions";
    pub const REVOKE: &str = "msgr.v1.rpc.account.revoke";
    pub const REFRESH: &str = "msgr.v1.rpc.account.refresh";
    pub const DELETE_ACCOUNT: &str = "msgr.v1.rpc.account.delete";
    pub const HISTORY: &str = "msgr.v1.rpc.query.history";
    pub const CHATS: &str = "msgr.v1.rpc.query.chats";
    pub const LOOKUP: &str = "msgr.v1.rpc.query.lookup";
    pub const GROUP_CREATE: &str = "msgr.v1.rpc.group.create";
    pub const GROUP_ADD: &str = "msgr.v1.rpc.group.add";
    pub const GROUP_REMOVE: &str = "msgr.v1.rpc.group.remove";
    pub const GROUP_GET: &str = "msgr.v1.rpc.group.get";
    pub const GROUP_RECEIPTS: &str = "msgr.v1.rpc.group.receipts";
    pub const MEDIA_REGISTER: &str = "msgr.v1.rpc.media.register";
    pub const MEDIA_AUTHORIZE: &str = "msgr.v1.rpc.media.authorize";
    pub const BLOCK: &str = "msgr.v1.rpc.account.block";
    pub const BLOCKED: &str = "msgr.v1.rpc.account.blocked";
    pub const PRESENCE: &str = "msgr.v1.rpc.account.presence";
    pub const PRESENCE_ALLOWED: &str = "msgr.v1.rpc.account.presence_allowed";

    /// Every service above (the README's table and `asyncapi.yaml` are
    /// checked against this, and each against a live worker).
    pub const ALL: &[&str] = &[
        BOOTSTRAP,
        REGISTER,
        LOGIN,
        USERS,
        USER_SEARCH,
        SESSIONS,
        REVOKE,
        REFRESH,
        DELETE_ACCOUNT,
        HISTORY,
        CHATS,
        LOOKUP,
        GROUP_CREATE,
        GROUP_ADD,
        GROUP_REMOVE,
        GROUP_GET,
        GROUP_RECEIPTS,
        MEDIA_REGISTER,
        MEDIA_AUTHORIZE,
        BLOCK,
        BLOCKED,
        PRESENCE,
        PRESENCE_ALLOWED,
    ];
}

/// Queue group of the request/reply services: one worker answers each request.
pub const WORKER_QUEUE: &str = "msgr-workers";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_subjects_carry_partition_kind_and_conversation() {
        assert_eq!(in_send(3, "d_a_b"), "msgr.v1.in.3.send.d_a_b");
        assert!(!is_receipt(&in_send(3, "d_a_b")));
        assert!(is_receipt(&in_receipt(0, "g1")));
        assert_eq!(in_partition(7), "msgr.v1.in.7.>");
    }

    #[test]
    fn inbox_subjects_name_their_user() {
        assert_eq!(deliver_user_of(&deliver_user("u123")), Some("u123"));
        assert_eq!(deliver_user_of("msgr.v1.deliver.user."), None);
        assert_eq!(deliver_user_of("msgr.v1.deliver.user.a.b"), None);
        assert_eq!(deliver_user_of("msgr.v1.stored.x"), None);
    }
}

/// Version 2 subjects: batched commands, deliveries per edge, routes.
pub mod v2 {
    /// Every batched command (in stream `MSGR_IN` beside the v1 ones).
    pub const IN_ALL: &str = "msgr.v2.in.>";

    /// A batch of commands of one partition (`CommandBatch`).
    #[must_use]
    pub fn in_batch(partition: u32) -> String {
        format!("msgr.v2.in.{partition}.batch")
    }

    /// All batched commands of one partition (a sequencer consumer's filter).
    #[must_use]
    pub fn in_partition(partition: u32) -> String {
        format!("msgr.v2.in.{partition}.>")
    }

    /// Whether `subject` is a v2 command batch.
    #[must_use]
    pub fn is_batch(subject: &str) -> bool {
        subject.starts_with("msgr.v2.in.") && subject.ends_with(".batch")
    }

    /// The partition a v2 `in` subject names.
    #[must_use]
    pub fn partition_of(subject: &str) -> Option<u32> {
        subject
            .strip_prefix("msgr.v2.in.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// Everything for the users connected to one edge (`EdgeDelivery`).
    #[must_use]
    pub fn deliver_edge(edge_id: &str) -> String {
        format!("msgr.v2.deliver.edge.{edge_id}")
    }

    /// An edge's route updates (`RouteUpdate`).
    #[must_use]
    pub fn route(edge_id: &str) -> String {
        format!("msgr.v2.route.{edge_id}")
    }

    /// Every message one sequencer batch of `partition` stored, for
    /// integrators (`StoredMessages`).
    #[must_use]
    pub fn evt_messages(partition: u32) -> String {
        format!("msgr.v2.evt.messages.{partition}")
    }

    /// Every edge's route updates (the workers' subscription).
    pub const ROUTE_ALL: &str = "msgr.v2.route.*";

    /// Asks edges for their full route lists (`RouteSync`; each answers on
    /// the reply subject, a worker's [`routes_full`]).
    pub const ROUTE_SYNC: &str = "msgr.v2.routes.sync";

    /// Where a worker receives the full route lists it asked for.
    #[must_use]
    pub fn routes_full(worker: &str) -> String {
        format!("msgr.v2.routes.full.{worker}")
    }
}
