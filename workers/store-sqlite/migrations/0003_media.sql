-- Schema v3: uploaded media and the conversations it was sent in.
CREATE TABLE media (
    media_id      TEXT PRIMARY KEY,
    uploader_id   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    has_thumbnail INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Who may read a media object besides its uploader: members who saw a
-- message carrying it.
CREATE TABLE media_refs (
    media_id        TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (media_id, conversation_id, seq)
) WITHOUT ROWID;
