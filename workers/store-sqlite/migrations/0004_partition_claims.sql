-- Schema v4: sequencer claims on partitions (fencing tokens) and where a new
-- holder resumes in the command log.
CREATE TABLE partition_claims (
    partition  INTEGER PRIMARY KEY,
    epoch      INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    log        TEXT NOT NULL,          -- the command stream's identity
    position   INTEGER NOT NULL,       -- applied and announced through here
    claimed_at INTEGER NOT NULL
) WITHOUT ROWID;
