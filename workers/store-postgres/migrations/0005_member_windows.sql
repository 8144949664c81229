-- A member removed and added back keeps their earlier windows (as SQLite's 0008).
CREATE TABLE member_windows (
    conversation_id TEXT COLLATE "C" NOT NULL,
    user_id         TEXT COLLATE "C" NOT NULL,
    joined_seq      BIGINT NOT NULL,
    left_seq        BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, user_id, joined_seq)
);
