-- Media objects whose last message was deleted for everyone: their bytes are
-- removed from the object store after the commit, by any worker, and the row
-- goes once they are (so a crash between the two leaves nothing behind).
CREATE TABLE media_removals (
    media_id TEXT PRIMARY KEY,
    at       BIGINT NOT NULL
);
