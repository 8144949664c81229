-- Replies, edits, deletes for everyone, reactions, blocking, presence privacy
-- (as SQLite's 0007).
ALTER TABLE messages ADD COLUMN reply_seq BIGINT;
ALTER TABLE messages ADD COLUMN reply_sender TEXT COLLATE "C";
ALTER TABLE messages ADD COLUMN reply_text TEXT;
ALTER TABLE messages ADD COLUMN reply_media BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE messages ADD COLUMN reply_deleted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
ALTER TABLE messages ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
CREATE INDEX messages_replies ON messages (conversation_id, reply_seq) WHERE reply_seq IS NOT NULL;
CREATE INDEX messages_changed ON messages (conversation_id, rev) WHERE rev > 0;
ALTER TABLE conversations ADD COLUMN last_rev BIGINT NOT NULL DEFAULT 0;

CREATE TABLE client_changes (
    actor_id        TEXT COLLATE "C" NOT NULL,
    client_msg_id   TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (actor_id, client_msg_id)
);

CREATE TABLE reactions (
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    user_id         TEXT COLLATE "C" NOT NULL,
    emoji           TEXT NOT NULL,
    at              BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq, user_id)
);

CREATE TABLE blocks (
    blocker_id TEXT COLLATE "C" NOT NULL,
    blocked_id TEXT COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

ALTER TABLE users ADD COLUMN presence_visible BOOLEAN NOT NULL DEFAULT TRUE;
