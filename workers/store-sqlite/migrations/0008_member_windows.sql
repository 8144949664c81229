-- A member removed and added back keeps their earlier windows: each closed
-- window is kept here when they join again (members holds the current one).
CREATE TABLE member_windows (
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    joined_seq      INTEGER NOT NULL,
    left_seq        INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, user_id, joined_seq)
) WITHOUT ROWID;
