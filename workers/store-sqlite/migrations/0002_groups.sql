-- Schema v2: group membership over time. A member sees the messages with
-- joined_seq < seq <= left_seq (left_seq NULL while still a member).
ALTER TABLE members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN left_seq INTEGER;
ALTER TABLE conversations ADD COLUMN created_by TEXT;
CREATE INDEX members_active ON members (conversation_id, left_seq);
