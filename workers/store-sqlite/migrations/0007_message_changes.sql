-- Replies, edits, deletes for everyone, reactions, blocking, presence privacy.
-- A reply keeps a quote of what it answers, taken when it was sent.
ALTER TABLE messages ADD COLUMN reply_seq INTEGER;
ALTER TABLE messages ADD COLUMN reply_sender TEXT;
ALTER TABLE messages ADD COLUMN reply_text TEXT;
ALTER TABLE messages ADD COLUMN reply_media INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN reply_deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
-- The conversation's change counter at this message's latest change.
ALTER TABLE messages ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
-- Deleting a message empties the quotes of it.
CREATE INDEX messages_replies ON messages (conversation_id, reply_seq) WHERE reply_seq IS NOT NULL;
-- "What changed since rev N" for a client catching up.
CREATE INDEX messages_changed ON messages (conversation_id, rev) WHERE rev > 0;
ALTER TABLE conversations ADD COLUMN last_rev INTEGER NOT NULL DEFAULT 0;

-- Changes are deduplicated like sends: one per (actor, client_msg_id).
CREATE TABLE client_changes (
    actor_id        TEXT NOT NULL,
    client_msg_id   TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (actor_id, client_msg_id)
) WITHOUT ROWID;

CREATE TABLE reactions (
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    user_id         TEXT NOT NULL,
    emoji           TEXT NOT NULL,
    at              INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq, user_id)
) WITHOUT ROWID;

CREATE TABLE blocks (
    blocker_id TEXT NOT NULL,
    blocked_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
) WITHOUT ROWID;

ALTER TABLE users ADD COLUMN presence_visible INTEGER NOT NULL DEFAULT 1;
