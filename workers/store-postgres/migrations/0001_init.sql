-- Schema v1 of the PostgreSQL store: the same tables as the SQLite
-- adapter's, keyed for the queries of the store port. Ids and usernames
-- compare bytewise (COLLATE "C"), as in SQLite, so orderings and prefix
-- ranges agree between the adapters whatever the database's locale.
CREATE TABLE users (
    user_id       TEXT COLLATE "C" PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL UNIQUE,   -- canonical lowercase form
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE conversations (
    conversation_id TEXT COLLATE "C" PRIMARY KEY,
    kind            TEXT NOT NULL,        -- 'direct' | 'group'
    title           TEXT,                 -- group name; NULL for direct chats
    last_seq        BIGINT NOT NULL DEFAULT 0,
    updated_at      BIGINT NOT NULL,
    created_by      TEXT COLLATE "C"
);

-- Membership over time with each member's watermarks (they only move
-- forward): a member sees the messages with joined_seq < seq <= left_seq.
CREATE TABLE members (
    conversation_id TEXT COLLATE "C" NOT NULL,
    user_id         TEXT COLLATE "C" NOT NULL,
    role            TEXT NOT NULL DEFAULT 'member',
    delivered_seq   BIGINT NOT NULL DEFAULT 0,
    read_seq        BIGINT NOT NULL DEFAULT 0,
    joined_at       BIGINT NOT NULL,
    joined_seq      BIGINT NOT NULL DEFAULT 0,
    left_seq        BIGINT,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id, conversation_id);

CREATE TABLE messages (
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    message_id      TEXT COLLATE "C" NOT NULL,
    sender_id       TEXT COLLATE "C" NOT NULL,
    client_msg_id   TEXT COLLATE "C" NOT NULL,
    to_user         TEXT COLLATE "C",
    to_group        TEXT COLLATE "C",
    text            TEXT,
    media_id        TEXT COLLATE "C",
    sent_at         BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

-- Idempotency: one message per (sender, client_msg_id).
CREATE TABLE client_msgs (
    sender_id       TEXT COLLATE "C" NOT NULL,
    client_msg_id   TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (sender_id, client_msg_id)
);

CREATE TABLE media (
    media_id      TEXT COLLATE "C" PRIMARY KEY,
    uploader_id   TEXT COLLATE "C" NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    has_thumbnail BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

-- Who may read a media object besides its uploader: members who saw a
-- message carrying it.
CREATE TABLE media_refs (
    media_id        TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
);

-- Sequencer claims on partitions (fencing tokens) and where a new holder
-- resumes in the command log.
CREATE TABLE partition_claims (
    partition  BIGINT PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    holder     TEXT NOT NULL,
    log        TEXT NOT NULL,
    position   BIGINT NOT NULL,
    claimed_at BIGINT NOT NULL
);
