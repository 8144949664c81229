//! The store port: what the workers need from a database, shaped by the
//! queries (as in Cassandra data modelling), not by tables.
//!
//! Adapters: `msgr-store-sqlite` (embedded default) and
//! `msgr-store-postgres` (the networked store). Every adapter must pass
//! [`conformance`] (feature `testing`), so a Cassandra/ScyllaDB adapter can be
//! checked against the same rules. Nothing here names SQL: a Cassandra
//! adapter would answer the same calls with query-first tables (and a
//! lightweight transaction for the partition claims).
//!
//! Rules every adapter keeps:
//! - `seq` is dense per conversation (1, 2, 3, …) and assigned in the same
//!   atomic step that stores the message.
//! - `(sender_id, client_msg_id)` identifies a message: appending it again
//!   returns the stored one, never a second copy.
//! - Watermarks only move forward; a read watermark implies delivered.
//! - A sequencer batch carries its holder's [`Fence`]: it commits only while
//!   that holder's claim on the partition is the newest, so a holder that
//!   lost its lease (paused, cut off) can never write after its successor
//!   started.

#[cfg(feature = "testing")]
pub mod conformance;

use async_trait::async_trait;

/// Errors of a store operation. Adapters map their driver errors here, so no
/// driver type leaks out.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A newer claim on the batch's partition exists: nothing was written.
    #[error(
        "fenced: partition {partition} was claimed again (epoch {current}, batch had {batch})"
    )]
    Fenced {
        partition: u32,
        current: u64,
        batch: u64,
    },
}

/// A sequencer's claim on a partition. Every claim gets a higher `epoch`
/// than the one before; batches carry it ([`Fence`]) and commit only while
/// it is still the newest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionClaim {
    pub partition: u32,
    pub epoch: u64,
    /// Position in the command log (the bus stream's sequence) through
    /// which every command of this partition was applied and announced: the
    /// new holder resumes right after it. 0 means from the beginning, also
    /// when the log is a new one (the stream was re-created).
    pub resume_after: u64,
}

/// What a sequencer batch carries to be committed under a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub partition: u32,
    pub epoch: u64,
    /// The claim's resume point, recorded with this batch (it never moves
    /// back): every command through it was applied and announced before.
    pub done_through: u64,
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A user as stored, with the password hash (never leaves the workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: String,
    /// Canonical lowercase form.
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub created_at_ms: i64,
}

/// A signed-in device: one login, and the tokens refreshed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub user_id: String,
    pub created_at_ms: i64,
    /// When its latest token expires (a refresh moves it).
    pub expires_at_ms: i64,
    /// The client's `User-Agent` at login (cut short), to tell devices apart.
    pub user_agent: String,
}

/// Direct (two members) or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationKind {
    Direct,
    Group,
}

impl ConversationKind {
    /// As spelled in the API (`direct` / `group`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Group(String),
}

/// A message to append; `message_id` and `sent_at_ms` are chosen by the caller
/// and kept only if the message is new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub client_msg_id: String,
    pub target: Target,
    pub text: Option<String>,
    pub media_id: Option<String>,
    pub sent_at_ms: i64,
    /// An earlier message of the same conversation this one answers; the
    /// store keeps a [`Quote`] of it taken now.
    pub reply_to_seq: Option<u64>,
}

/// What a reply shows of the message it answers, taken when the reply was
/// sent (so a reader needs no extra fetch). Emptied if that message is
/// deleted for everyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub seq: u64,
    pub sender_id: String,
    /// The first [`QUOTE_CHARS`] characters of its text.
    pub text: Option<String>,
    /// It carried media.
    pub has_media: bool,
    /// It was deleted for everyone since.
    pub deleted: bool,
}

/// How much of the quoted message's text a reply keeps.
pub const QUOTE_CHARS: usize = 100;

/// One member's reaction to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    pub user_id: String,
    pub emoji: String,
}

/// An uploaded media object's metadata (the bytes are in the media store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    pub media_id: String,
    pub uploader_id: String,
    /// Sniffed for images; as declared otherwise.
    pub content_type: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes, computed by the server.
    pub sha256: String,
    pub has_thumbnail: bool,
    pub created_at_ms: i64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: String,
    pub client_msg_id: String,
    pub conversation_id: String,
    pub seq: u64,
    pub sender_id: String,
    pub target: Target,
    pub text: Option<String>,
    pub media_id: Option<String>,
    pub sent_at_ms: i64,
    /// The media's metadata when the message carries media.
    pub media: Option<MediaRecord>,
    pub reply_to: Option<Quote>,
    /// When its text was last edited.
    pub edited_at_ms: Option<i64>,
    /// When it was deleted for everyone (its text and media are gone).
    pub deleted_at_ms: Option<i64>,
    /// Reactions, one per member, in the order they were made.
    pub reactions: Vec<Reaction>,
    /// The conversation's change counter at this message's latest edit,
    /// deletion or reaction (0: never changed). See [`Store::changes`].
    pub rev: u64,
}

/// Delivered or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    Delivered,
    Read,
}

/// A member's claim: everything up to `up_to_seq` was delivered to / read by them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkUpdate {
    pub conversation_id: String,
    pub user_id: String,
    pub kind: ReceiptKind,
    pub up_to_seq: u64,
    pub at_ms: i64,
}

/// What a [`MessageChange`] does to a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// New text (the sender's text message, within the edit window).
    Edit(String),
    /// Delete for everyone (the sender, within the delete window): text,
    /// media reference, quotes of it and reactions go for good.
    Delete,
    /// A member's reaction; `None` removes theirs.
    React(Option<String>),
}

impl ChangeKind {
    /// As spelled in the API (`edited`, `deleted`, `reaction`).
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Edit(_) => "edited",
            Self::Delete => "deleted",
            Self::React(_) => "reaction",
        }
    }
}

/// A change to a stored message: sequenced like a send (same partition, same
/// order for everyone), deduplicated by `(actor_id, client_msg_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageChange {
    pub conversation_id: String,
    pub seq: u64,
    pub actor_id: String,
    pub client_msg_id: String,
    pub kind: ChangeKind,
    pub at_ms: i64,
    /// How long after sending the sender may still edit or delete (ms).
    pub window_ms: i64,
}

/// The other member of a direct chat when a block between the two must
/// stop this change: an edit or a reaction reaches the other person as a
/// send would; deleting your own message stays possible.
#[must_use]
pub fn blocked_change_peer(c: &MessageChange) -> Option<&str> {
    if matches!(c.kind, ChangeKind::Delete) {
        return None;
    }
    let (a, b) = crate::id::direct_members(&c.conversation_id)?;
    Some(if a == c.actor_id { b } else { a })
}

/// The rules of a change that every adapter checks the same way, once it
/// knows the message exists, is not deleted, and the actor is a current
/// member who saw it: only the sender edits (text) or deletes, within the
/// window; any such member reacts.
#[must_use]
pub fn check_change(
    c: &MessageChange,
    sender_id: &str,
    has_text: bool,
    sent_at_ms: i64,
) -> Option<Rejection> {
    match &c.kind {
        ChangeKind::Edit(_) | ChangeKind::Delete => {
            if c.actor_id != sender_id {
                Some(Rejection::NotSender)
            } else if matches!(c.kind, ChangeKind::Edit(_)) && !has_text {
                Some(Rejection::NotText)
            } else if c.at_ms.saturating_sub(sent_at_ms) > c.window_ms {
                Some(Rejection::WindowClosed)
            } else {
                None
            }
        }
        ChangeKind::React(_) => None,
    }
}

/// One operation of a sequencer batch, applied in order in one atomic step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Append(NewMessage),
    Receipt(WatermarkUpdate),
    Change(MessageChange),
}

/// Why an operation was refused (nothing was stored for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UnknownRecipient,
    NotMember,
    UnknownConversation,
    /// No such media, or the sender may not read it.
    UnknownMedia,
    /// No message with that seq the actor could see.
    UnknownMessage,
    /// Only the sender may edit or delete a message.
    NotSender,
    /// The edit or delete window has passed.
    WindowClosed,
    /// The message was deleted for everyone.
    MessageDeleted,
    /// Only text can be edited (a media message without text cannot).
    NotText,
    /// The recipient does not take messages from the sender (blocked).
    RecipientUnavailable,
    /// The sender blocked the recipient: unblock to send.
    YouBlocked,
}

impl Rejection {
    /// The API error code.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownRecipient => "unknown_recipient",
            Self::NotMember => "not_member",
            Self::UnknownConversation => "unknown_conversation",
            Self::UnknownMedia => "unknown_media",
            Self::UnknownMessage => "unknown_message",
            Self::NotSender => "not_sender",
            Self::WindowClosed => "window_closed",
            Self::MessageDeleted => "message_deleted",
            Self::NotText => "not_text",
            Self::RecipientUnavailable => "recipient_unavailable",
            Self::YouBlocked => "blocked",
        }
    }

    /// The API error message.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::UnknownRecipient => "no such recipient",
            Self::NotMember => "you are not a member of this conversation",
            Self::UnknownConversation => "no such conversation",
            Self::UnknownMedia => "no such media",
            Self::UnknownMessage => "no such message in this conversation",
            Self::NotSender => "only its sender may change a message",
            Self::WindowClosed => "this message can no longer be changed",
            Self::MessageDeleted => "this message was deleted",
            Self::NotText => "only text can be edited",
            Self::RecipientUnavailable => "this user cannot receive your messages",
            Self::YouBlocked => "you blocked this user; unblock them to send",
        }
    }
}

/// The outcome of one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// Newly stored with its `seq`.
    Stored(StoredMessage),
    /// Seen before: the original message.
    Duplicate(StoredMessage),
    /// A watermark moved; the new values (the read one implies delivered).
    Advanced {
        delivered: Option<u64>,
        read: Option<u64>,
        at_ms: i64,
    },
    /// Nothing moved (a lower or equal watermark).
    Unchanged,
    Rejected(Rejection),
    /// A message changed (or, `fresh == false`, this change was applied
    /// before): the message as it is now, with its new `rev`.
    Changed {
        message: StoredMessage,
        fresh: bool,
        /// A media object nothing references any more (a deleted message
        /// carried it): its metadata is gone, the bytes are the caller's to
        /// remove.
        orphaned_media: Option<String>,
    },
}

/// `before` / `after` paging of history (exclusive bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Page {
    pub limit: u32,
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// A message with its status as seen by the caller (for their own messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    pub message: StoredMessage,
    /// `Some` on messages the caller sent.
    pub status: Option<MessageStatus>,
}

/// Sent, delivered to every recipient, or read by every recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageStatus {
    Sent,
    Delivered,
    Read,
}

/// A page of history, ascending by `seq` (or by `rev` for [`Store::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<MessageView>,
    pub has_more: bool,
    /// The conversation's change counter: a client that holds this page
    /// asks [`Store::changes`] after it to catch up on edits, deletions
    /// and reactions.
    pub rev: u64,
}

/// One row of a user's chat list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEntry {
    pub conversation_id: String,
    pub kind: ConversationKind,
    pub peer_id: Option<String>,
    pub group_id: Option<String>,
    pub title: String,
    pub last_message: Option<MessageView>,
    pub last_seq: u64,
    pub unread_count: u64,
    pub updated_at_ms: i64,
}

/// A page of the chat list, latest activity first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPage {
    pub chats: Vec<ChatEntry>,
    pub next_cursor: Option<String>,
}

/// A member's watermarks in one conversation, and when they were a member:
/// they see the messages with `joined_seq < seq <= left_seq`, and those of
/// their `earlier` windows (a member removed and added back keeps what they
/// saw before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub user_id: String,
    pub delivered_seq: u64,
    pub read_seq: u64,
    pub joined_seq: u64,
    /// `None` while still a member.
    pub left_seq: Option<u64>,
    /// Earlier windows `(joined_seq, left_seq)`, oldest first.
    pub earlier: Vec<(u64, u64)>,
}

impl MemberState {
    /// Whether this member was in the conversation when `seq` was sent.
    #[must_use]
    pub fn saw(&self, seq: u64) -> bool {
        (self.joined_seq < seq && self.left_seq.is_none_or(|l| seq <= l))
            || self.earlier.iter().any(|&(j, l)| j < seq && seq <= l)
    }

    /// Every window `(after, through)`, oldest first (`through` is `None`
    /// for the current one).
    #[must_use]
    pub fn windows(&self) -> Vec<(u64, Option<u64>)> {
        self.earlier
            .iter()
            .map(|&(j, l)| (j, Some(l)))
            .chain(std::iter::once((self.joined_seq, self.left_seq)))
            .collect()
    }

    /// The seq before the first message they could see.
    #[must_use]
    pub fn first_joined(&self) -> u64 {
        self.earlier
            .iter()
            .map(|&(j, _)| j)
            .fold(self.joined_seq, u64::min)
    }
}

/// A group role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRole {
    Admin,
    Member,
}

impl GroupRole {
    /// As spelled in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }
}

/// A current member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub user_id: String,
    pub role: GroupRole,
    pub joined_at_ms: i64,
}

/// A group and its current members, oldest member first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group_id: String,
    pub name: String,
    pub created_by: String,
    pub members: Vec<GroupMember>,
}

/// The result of adding or removing a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub group: GroupInfo,
    /// False if nothing changed (adding a member who already is one).
    pub changed: bool,
    /// The member promoted to admin because the last admin left.
    pub promoted: Option<String>,
}

/// Why a group operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    NotFound,
    #[error("not a member of this group")]
    NotMember,
    #[error("only admins may do that")]
    NotAdmin,
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("a group has at most {0} members")]
    TooManyMembers(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The port. Both adapters are laid out the same way, one module per area:
/// users, messages and receipts, groups, media, partition claims.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a user; [`StoreError::Conflict`] if the username is taken.
    async fn create_user(&self, user: UserRecord) -> StoreResult<()>;
    /// A user by canonical username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    /// Users by id; unknown ids are left out.
    async fn users_by_ids(&self, ids: &[String]) -> StoreResult<Vec<UserRecord>>;
    /// Up to `limit` users whose canonical username starts with `prefix`, in
    /// username order.
    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRecord>>;

    /// Deletes an account: its profile goes (the username is free again, the
    /// password can no longer log in, look-ups no longer find it, nobody can
    /// send to it) and its sessions with it; the messages others received
    /// stay, with its id. `false` if there was no such (live) account.
    async fn delete_user(&self, user_id: &str) -> StoreResult<bool>;

    /// Records a new session (a login).
    async fn create_session(&self, session: SessionRecord) -> StoreResult<()>;
    /// `user_id`'s sessions neither revoked nor expired at `now_ms`, newest first.
    async fn sessions(&self, user_id: &str, now_ms: i64) -> StoreResult<Vec<SessionRecord>>;
    /// Moves the expiry of `user_id`'s live session (a refreshed token);
    /// [`StoreError::NotFound`] if it is revoked, expired or not theirs.
    async fn extend_session(
        &self,
        user_id: &str,
        session_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()>;
    /// Revokes `user_id`'s live session `session_id`, or every live one of
    /// theirs when `None`; returns the ids it revoked (none for an unknown,
    /// expired, another user's or an already revoked session).
    async fn revoke_sessions(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Vec<String>>;

    /// Applies a sequencer batch atomically and in order: either every outcome
    /// is durable when this returns, or none is. With a fence, it commits
    /// only if the fence's epoch is the partition's newest claim
    /// ([`StoreError::Fenced`] otherwise, with nothing written), and records
    /// the fence's `done_through` as the claim's resume point in the same
    /// transaction.
    async fn apply_batch(&self, fence: Option<Fence>, ops: Vec<Op>) -> StoreResult<Vec<OpOutcome>>;

    /// [`Store::apply_batch`] without a fence (tests, tools).
    async fn apply(&self, ops: Vec<Op>) -> StoreResult<Vec<OpOutcome>> {
        self.apply_batch(None, ops).await
    }

    /// Claims `partition` for `holder`: a new, higher epoch that fences out
    /// every earlier claim, and where to resume in the command log `log`
    /// (an identity of the bus stream; a different one resets the point).
    async fn claim_partition(
        &self,
        partition: u32,
        holder: &str,
        log: &str,
    ) -> StoreResult<PartitionClaim>;

    /// A message by its sender's `client_msg_id`.
    async fn message_by_client_id(
        &self,
        sender_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredMessage>>;

    /// Whether `user_id` is a current member of the conversation (false if unknown).
    async fn is_member(&self, conversation_id: &str, user_id: &str) -> StoreResult<bool>;
    /// Everyone who is or was a member, with watermarks (empty if unknown).
    async fn members(&self, conversation_id: &str) -> StoreResult<Vec<MemberState>>;

    /// A page of history as `caller_id` may see it: only messages sent while
    /// they were a member (empty if never one), with statuses on their own.
    async fn history(
        &self,
        conversation_id: &str,
        caller_id: &str,
        page: Page,
    ) -> StoreResult<HistoryPage>;

    /// The messages `caller_id` may see that changed after `after_rev`, as
    /// they are now, ascending by `rev` (each once, at its latest change).
    async fn changes(
        &self,
        conversation_id: &str,
        caller_id: &str,
        after_rev: u64,
        limit: u32,
    ) -> StoreResult<HistoryPage>;

    /// `user_id` blocks `other`: `other` can no longer send to them in a
    /// direct chat (nor start one) nor see their presence. `false` if
    /// already blocked; [`StoreError::NotFound`] for an unknown `other`.
    async fn block(&self, user_id: &str, other: &str, at_ms: i64) -> StoreResult<bool>;
    /// Lifts a block; `false` if there was none.
    async fn unblock(&self, user_id: &str, other: &str) -> StoreResult<bool>;
    /// Whom `user_id` blocked, earliest first.
    async fn blocked(&self, user_id: &str) -> StoreResult<Vec<String>>;

    /// Who may see `user_id`'s presence: everyone they have a chat with
    /// (`true`, the default) or nobody.
    async fn set_presence_visible(&self, user_id: &str, visible: bool) -> StoreResult<()>;
    /// Whether `user_id` shows their presence (false for unknown users).
    async fn presence_visible(&self, user_id: &str) -> StoreResult<bool>;
    /// Of `others`, those whose presence `caller_id` may see: they share a
    /// conversation (a direct chat or a group, current members), show
    /// their presence, and have not blocked the caller.
    async fn presence_allowed(
        &self,
        caller_id: &str,
        others: &[String],
    ) -> StoreResult<Vec<String>>;

    /// A page of `user_id`'s chat list; `cursor` comes from a previous page.
    async fn chats(&self, user_id: &str, limit: u32, cursor: Option<&str>)
        -> StoreResult<ChatPage>;

    /// Records an uploaded media object.
    async fn create_media(&self, media: MediaRecord) -> StoreResult<()>;
    /// A media object `user_id` may read: they uploaded it, or they were a
    /// member of a conversation when a message carrying it was sent there.
    async fn media_for(&self, media_id: &str, user_id: &str) -> StoreResult<Option<MediaRecord>>;
    /// Marks that a media object's thumbnail exists.
    async fn set_thumbnail(&self, media_id: &str) -> StoreResult<()>;
    /// Media objects whose bytes are still to be removed from the object
    /// store (the last message carrying them was deleted for everyone),
    /// oldest first, at most `limit`.
    async fn media_removals(&self, limit: usize) -> StoreResult<Vec<String>>;
    /// The bytes of `media_id` are gone: forget the removal.
    async fn media_removed(&self, media_id: &str) -> StoreResult<()>;

    /// Creates a group; the creator is its admin, `members` join as members.
    async fn create_group(
        &self,
        group_id: &str,
        name: &str,
        creator: &str,
        members: &[String],
        max_members: usize,
        at_ms: i64,
    ) -> Result<GroupInfo, GroupError>;
    /// A group with its current members.
    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupInfo>>;
    /// `actor` (an admin) adds `user_id`; they see messages sent from now on.
    async fn add_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        max_members: usize,
        at_ms: i64,
    ) -> Result<MembershipChange, GroupError>;
    /// `actor` (an admin, or `user_id` themself) removes `user_id`. They keep
    /// what they could see and get nothing sent later. If the last admin
    /// leaves, the oldest remaining member becomes admin.
    async fn remove_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        at_ms: i64,
    ) -> Result<MembershipChange, GroupError>;
}
