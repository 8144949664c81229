-- Signed-in devices: one row per login; a token names its session, and a
-- revoked session's tokens stop working on every edge.
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
