-- A direct chat with a deleted account is closed: nothing more is appended
-- (the send hot path skips closed rows and finds the recipient gone).
ALTER TABLE conversations ADD COLUMN closed BOOLEAN NOT NULL DEFAULT FALSE;
