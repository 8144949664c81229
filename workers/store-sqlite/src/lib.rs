//! SQLite adapter of the msgr store port: the embedded default, zero setup.
//!
//! One writer thread owning the writer connection (SQLite allows one writer
//! at a time anyway) and a small pool of reader connections, all in WAL mode
//! so reads never wait for the writer. Reads run in `spawn_blocking`. The
//! writer commits every sequencer batch queued while it was busy in one
//! transaction (group commit: one fsync for many partitions); a checkpoint
//! thread copies the WAL into the database beside it, not inside commits.
//! Several worker processes may share one file; SQLite's write lock then
//! serialises their batches, and seqs stay dense because they are assigned
//! inside the writing transaction.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use msgr_core::id;
use msgr_core::store::{
    ChatEntry, ChatPage, ConversationKind, GroupError, GroupInfo, GroupMember, GroupRole,
    HistoryPage, MediaRecord, MemberState, MembershipChange, MessageStatus, MessageView,
    NewMessage, Op, OpOutcome, Page, ReceiptKind, Rejection, Store, StoreError, StoreResult,
    StoredMessage, Target, UserRecord, WatermarkUpdate,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_groups.sql"),
    include_str!("../migrations/0003_media.sql"),
];
const READERS: usize = 4;

/// How hard SQLite syncs to disk on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: an acked message survives power loss.
    Full,
    /// fsync at checkpoints: survives a process crash, may lose the last
    /// commits on power loss.
    Normal,
}

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Jobs for the writer thread; bounded, so callers wait when it is behind.
    writer: tokio::sync::mpsc::Sender<WriteJob>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    _checkpointer: CheckpointerGuard,
}

/// Queued writes before callers wait for the writer thread.
const WRITE_QUEUE: usize = 1024;

enum WriteJob {
    /// A sequencer batch: committed together with other queued batches.
    Apply(PendingBatch),
    /// Anything else, run alone.
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

type PendingBatch = (
    Vec<Op>,
    tokio::sync::oneshot::Sender<StoreResult<Vec<OpOutcome>>>,
);

/// The writer thread: runs jobs in order; consecutive `Apply` jobs that are
/// already queued share one transaction. When nothing is queued it finishes
/// the checkpoint the background thread started (little is left to copy), so
/// the next commit can restart the WAL from its beginning. Ends when the
/// store is dropped.
fn writer_loop(mut conn: Connection, mut jobs: tokio::sync::mpsc::Receiver<WriteJob>) {
    const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    let mut last_checkpoint = std::time::Instant::now();
    let mut next = jobs.blocking_recv();
    while let Some(job) = next.take() {
        match job {
            WriteJob::Call(f) => {
                // A panic rolls back the open transaction as it unwinds; the
                // connection stays usable, and its caller sees the job dropped.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut conn)));
            }
            WriteJob::Apply(first) => {
                let mut group = vec![first];
                loop {
                    match jobs.try_recv() {
                        Ok(WriteJob::Apply(b)) => group.push(b),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    commit_group(&mut conn, group);
                }));
            }
        }
        if next.is_none() {
            if jobs.is_empty() && last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                let started = std::time::Instant::now();
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                metrics::histogram!("msgr_store_idle_checkpoint_seconds")
                    .record(started.elapsed().as_secs_f64());
                last_checkpoint = std::time::Instant::now();
            }
            next = jobs.blocking_recv();
        }
    }
}

/// Stops the checkpoint thread when the store is dropped.
struct CheckpointerGuard(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Drop for CheckpointerGuard {
    fn drop(&mut self) {
        let (stop, wake) = &*self.0;
        *stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_all();
    }
}

/// Copies committed WAL pages into the database file every 100 ms on its own
/// connection (PASSIVE never blocks the writer), so the page writes and the
/// fsync of the main file happen beside commits rather than between them.
fn spawn_checkpointer(conn: Connection) -> std::io::Result<CheckpointerGuard> {
    let signal = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let theirs = Arc::clone(&signal);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".to_owned())
        .spawn(move || {
            let (stop, wake) = &*theirs;
            let mut stopped = stop
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                stopped = wake
                    .wait_timeout(stopped, std::time::Duration::from_millis(100))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                if *stopped {
                    return;
                }
                drop(stopped);
                let started = std::time::Instant::now();
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                let took = started.elapsed();
                metrics::histogram!("msgr_store_checkpoint_seconds").record(took.as_secs_f64());
                if took > std::time::Duration::from_millis(100) {
                    tracing::warn!(ms = took.as_millis(), "slow WAL checkpoint");
                }
                stopped = stop
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        })?;
    Ok(CheckpointerGuard(signal))
}

/// Commits batches in one transaction (see [`commit_batches`]) and answers
/// each caller.
fn commit_group(conn: &mut Connection, jobs: Vec<PendingBatch>) {
    let started = std::time::Instant::now();
    metrics::histogram!("msgr_store_commit_batches").record(jobs.len() as f64);
    let batches: Vec<&[Op]> = jobs.iter().map(|(ops, _)| ops.as_slice()).collect();
    let committed = commit_batches(conn, &batches);
    metrics::histogram!("msgr_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match committed {
        Ok(results) => {
            for ((_, reply), r) in jobs.into_iter().zip(results) {
                // The caller may have given up waiting; its batch is durable anyway.
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for (_, reply) in jobs {
                let _ = reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
        }
    }
}

/// Commits `batches` in one transaction; a batch whose SQL fails fails alone.
///
/// Ops fail only on SQL errors (refusals are outcomes), so the batches are
/// first applied without savepoints: a savepoint makes SQLite copy every page
/// it changes to a statement journal, which was an eighth of the writer's CPU
/// at 2,000 msg/s. Only if a batch fails is the transaction rolled back and
/// redone with a savepoint per batch.
fn commit_batches(
    conn: &mut Connection,
    batches: &[&[Op]],
) -> rusqlite::Result<Vec<StoreResult<Vec<OpOutcome>>>> {
    if let Some(results) = commit_group_tx(conn, batches, false)? {
        return Ok(results);
    }
    Ok(commit_group_tx(conn, batches, true)?.unwrap_or_default())
}

/// One attempt of [`commit_batches`]. Without savepoints, a failing batch
/// rolls the whole transaction back and the answer is `None`.
fn commit_group_tx(
    conn: &mut Connection,
    batches: &[&[Op]],
    savepoints: bool,
) -> rusqlite::Result<Option<Vec<StoreResult<Vec<OpOutcome>>>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batches.len());
    for ops in batches {
        if savepoints {
            tx.execute_batch("SAVEPOINT batch")?;
        }
        match apply_ops(&tx, ops) {
            Ok(out) => {
                if savepoints {
                    tx.execute_batch("RELEASE batch")?;
                }
                results.push(Ok(out));
            }
            Err(e) if savepoints => {
                tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                results.push(Err(unavailable(e)));
            }
            Err(e) => {
                tracing::debug!(error = %e, "a batch failed; redoing the group with savepoints");
                return Ok(None); // dropping `tx` rolls it back
            }
        }
    }
    let sync = std::time::Instant::now();
    tx.commit()?;
    let synced = sync.elapsed();
    metrics::histogram!("msgr_store_commit_sync_seconds").record(synced.as_secs_f64());
    if synced > std::time::Duration::from_millis(100) {
        tracing::warn!(
            ms = synced.as_millis(),
            "slow commit: the disk took long to sync"
        );
    }
    Ok(Some(results))
}

fn apply_ops(tx: &Connection, ops: &[Op]) -> rusqlite::Result<Vec<OpOutcome>> {
    ops.iter()
        .map(|op| match op {
            Op::Append(m) => append(tx, m),
            Op::Receipt(w) => receipt(tx, w),
        })
        .collect()
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -16_000)?; // 16 MiB page cache
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    ///
    /// # Errors
    /// If the file cannot be opened or migrated.
    pub fn open(path: &Path, durability: Durability) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let mut writer = open_conn(path, durability).map_err(unavailable)?;
        migrate(&mut writer).map_err(unavailable)?;
        // Checkpoints run beside the writer (see `spawn_checkpointer` and
        // `writer_loop`); SQLite's own, run inside a commit, stays only as a
        // bound on the WAL (32 MiB) for a writer that is never idle.
        writer
            .pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(unavailable)?;
        let readers = (0..READERS)
            .map(|_| open_conn(path, durability).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        let checkpointer = spawn_checkpointer(open_conn(path, durability).map_err(unavailable)?)
            .map_err(unavailable)?;
        let (jobs, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer_loop(writer, rx))
            .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: jobs,
                readers,
                next_reader: AtomicUsize::new(0),
                _checkpointer: checkpointer,
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job = WriteJob::Call(Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        }));
        self.submit(job, result).await
    }

    async fn submit<T>(
        &self,
        job: WriteJob,
        result: tokio::sync::oneshot::Receiver<StoreResult<T>>,
    ) -> StoreResult<T> {
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".to_owned()))?;
        result
            .await
            .map_err(|_| StoreError::Unavailable("the write was abandoned".to_owned()))?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[i]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(unavailable)?
    }
}

const MESSAGE_COLUMNS: &str =
    "message_id, client_msg_id, conversation_id, seq, sender_id, to_user, to_group, text, media_id, sent_at";

/// Messages with their media's metadata.
const MESSAGE_SELECT: &str =
    "SELECT m.message_id, m.client_msg_id, m.conversation_id, m.seq, m.sender_id,
     m.to_user, m.to_group, m.text, m.media_id, m.sent_at,
     md.uploader_id, md.content_type, md.size, md.sha256, md.has_thumbnail, md.created_at
     FROM messages m LEFT JOIN media md ON md.media_id = m.media_id";

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let to_user: Option<String> = r.get(5)?;
    let to_group: Option<String> = r.get(6)?;
    let target = match (to_user, to_group) {
        (Some(u), _) => Target::User(u),
        (None, Some(g)) => Target::Group(g),
        (None, None) => Target::User(String::new()),
    };
    let media_id: Option<String> = r.get(8)?;
    let uploader: Option<String> = r.get(10)?;
    let media = match (&media_id, uploader) {
        (Some(id), Some(uploader_id)) => Some(MediaRecord {
            media_id: id.clone(),
            uploader_id,
            content_type: r.get(11)?,
            size: r.get(12)?,
            sha256: r.get(13)?,
            has_thumbnail: r.get(14)?,
            created_at_ms: r.get(15)?,
        }),
        _ => None,
    };
    Ok(StoredMessage {
        message_id: r.get(0)?,
        client_msg_id: r.get(1)?,
        conversation_id: r.get(2)?,
        seq: r.get(3)?,
        sender_id: r.get(4)?,
        target,
        text: r.get(7)?,
        media_id,
        sent_at_ms: r.get(9)?,
        media,
    })
}

fn row_to_media(r: &rusqlite::Row<'_>) -> rusqlite::Result<MediaRecord> {
    Ok(MediaRecord {
        media_id: r.get(0)?,
        uploader_id: r.get(1)?,
        content_type: r.get(2)?,
        size: r.get(3)?,
        sha256: r.get(4)?,
        has_thumbnail: r.get(5)?,
        created_at_ms: r.get(6)?,
    })
}

const MEDIA_COLUMNS: &str =
    "media_id, uploader_id, content_type, size, sha256, has_thumbnail, created_at";

/// The media `user_id` may read (see [`Store::media_for`]).
fn media_for(
    conn: &Connection,
    media_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<MediaRecord>> {
    let Some(m) = conn
        .prepare_cached(&format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE media_id = ?1"
        ))?
        .query_row([media_id], row_to_media)
        .optional()?
    else {
        return Ok(None);
    };
    if m.uploader_id == user_id {
        return Ok(Some(m));
    }
    let seen = conn
        .prepare_cached(
            "SELECT 1 FROM media_refs r JOIN members mb ON mb.conversation_id = r.conversation_id
             WHERE r.media_id = ?1 AND mb.user_id = ?2
               AND mb.joined_seq < r.seq AND (mb.left_seq IS NULL OR r.seq <= mb.left_seq)
             LIMIT 1",
        )?
        .query_row([media_id, user_id], |_| Ok(()))
        .optional()?
        .is_some();
    Ok(seen.then_some(m))
}

fn message_at(conn: &Connection, conv: &str, seq: u64) -> rusqlite::Result<Option<StoredMessage>> {
    conn.prepare_cached(&format!(
        "{MESSAGE_SELECT} WHERE m.conversation_id = ?1 AND m.seq = ?2"
    ))?
    .query_row(params![conv, seq], row_to_message)
    .optional()
}

fn user_exists(conn: &Connection, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE user_id = ?1")?
        .query_row([user_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn is_member(conn: &Connection, conv: &str, user_id: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )?
        .query_row([conv, user_id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn append(tx: &Connection, m: &NewMessage) -> rusqlite::Result<OpOutcome> {
    let seen: Option<(String, u64)> = tx
        .prepare_cached(
            "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row([&m.sender_id, &m.client_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((conv, seq)) = seen {
        return match message_at(tx, &conv, seq)? {
            Some(orig) => Ok(OpOutcome::Duplicate(orig)),
            None => Err(rusqlite::Error::QueryReturnedNoRows),
        };
    }
    let (to_user, to_group) = match &m.target {
        Target::User(to) => {
            if id::direct_conversation_id(&m.sender_id, to) != m.conversation_id
                || to == &m.sender_id
            {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            (Some(to.as_str()), None)
        }
        Target::Group(g) => {
            if g != &m.conversation_id {
                return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
            }
            if !is_member(tx, g, &m.sender_id)? {
                return Ok(OpOutcome::Rejected(Rejection::NotMember));
            }
            (None, Some(g.as_str()))
        }
    };
    let media = match &m.media_id {
        Some(id) => match media_for(tx, id, &m.sender_id)? {
            Some(md) => Some(md),
            None => return Ok(OpOutcome::Rejected(Rejection::UnknownMedia)),
        },
        None => None,
    };
    let mut next_seq = tx.prepare_cached(
        "UPDATE conversations SET last_seq = last_seq + 1, updated_at = max(updated_at, ?2)
         WHERE conversation_id = ?1 RETURNING last_seq",
    )?;
    let seq: u64 = match next_seq
        .query_row(params![m.conversation_id, m.sent_at_ms], |r| r.get(0))
        .optional()?
    {
        Some(seq) => seq,
        // The first message of a direct chat creates it (users are never
        // deleted, so an existing chat needs no user checks: the hot path is
        // one statement here).
        None => match to_user {
            Some(to) => {
                if !user_exists(tx, to)? || !user_exists(tx, &m.sender_id)? {
                    return Ok(OpOutcome::Rejected(Rejection::UnknownRecipient));
                }
                tx.prepare_cached(
                    "INSERT INTO conversations (conversation_id, kind, last_seq, updated_at)
                     VALUES (?1, 'direct', 1, ?2)",
                )?
                .execute(params![m.conversation_id, m.sent_at_ms])?;
                let mut add = tx.prepare_cached(
                    "INSERT OR IGNORE INTO members (conversation_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
                )?;
                add.execute(params![m.conversation_id, m.sender_id, m.sent_at_ms])?;
                add.execute(params![m.conversation_id, to, m.sent_at_ms])?;
                1
            }
            // A member of a group whose conversation row is missing: corrupt.
            None => return Err(rusqlite::Error::QueryReturnedNoRows),
        },
    };
    tx.prepare_cached(&format!(
        "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        m.message_id,
        m.client_msg_id,
        m.conversation_id,
        seq,
        m.sender_id,
        to_user,
        to_group,
        m.text,
        m.media_id,
        m.sent_at_ms
    ])?;
    tx.prepare_cached(
        "INSERT INTO client_msgs (sender_id, client_msg_id, conversation_id, seq) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![m.sender_id, m.client_msg_id, m.conversation_id, seq])?;
    if let Some(id) = &m.media_id {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO media_refs (media_id, conversation_id, seq) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, m.conversation_id, seq])?;
    }
    // Sending reads everything before it, on every device of the sender.
    tx.prepare_cached(
        "UPDATE members SET read_seq = max(read_seq, ?3), delivered_seq = max(delivered_seq, ?3)
         WHERE conversation_id = ?1 AND user_id = ?2",
    )?
    .execute(params![m.conversation_id, m.sender_id, seq])?;
    Ok(OpOutcome::Stored(StoredMessage {
        message_id: m.message_id.clone(),
        client_msg_id: m.client_msg_id.clone(),
        conversation_id: m.conversation_id.clone(),
        seq,
        sender_id: m.sender_id.clone(),
        target: m.target.clone(),
        text: m.text.clone(),
        media_id: m.media_id.clone(),
        sent_at_ms: m.sent_at_ms,
        media,
    }))
}

fn receipt(tx: &Connection, w: &WatermarkUpdate) -> rusqlite::Result<OpOutcome> {
    let last_seq: Option<u64> = tx
        .prepare_cached("SELECT last_seq FROM conversations WHERE conversation_id = ?1")?
        .query_row([&w.conversation_id], |r| r.get(0))
        .optional()?;
    let Some(last_seq) = last_seq else {
        return Ok(OpOutcome::Rejected(Rejection::UnknownConversation));
    };
    let current: Option<(u64, u64)> = tx
        .prepare_cached(
            "SELECT delivered_seq, read_seq FROM members
             WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )?
        .query_row([&w.conversation_id, &w.user_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((delivered, read)) = current else {
        return Ok(OpOutcome::Rejected(Rejection::NotMember));
    };
    let up = w.up_to_seq.min(last_seq);
    let (new_delivered, new_read) = match w.kind {
        ReceiptKind::Delivered => (delivered.max(up), read),
        ReceiptKind::Read => (delivered.max(up), read.max(up)),
    };
    if new_delivered == delivered && new_read == read {
        return Ok(OpOutcome::Unchanged);
    }
    tx.prepare_cached(
        "UPDATE members SET delivered_seq = ?3, read_seq = ?4 WHERE conversation_id = ?1 AND user_id = ?2",
    )?
    .execute(params![w.conversation_id, w.user_id, new_delivered, new_read])?;
    Ok(OpOutcome::Advanced {
        delivered: (new_delivered != delivered).then_some(new_delivered),
        read: (new_read != read).then_some(new_read),
        at_ms: w.at_ms,
    })
}

fn all_members(conn: &Connection, conv: &str) -> rusqlite::Result<Vec<MemberState>> {
    conn.prepare_cached(
        "SELECT user_id, delivered_seq, read_seq, joined_seq, left_seq FROM members
         WHERE conversation_id = ?1 ORDER BY joined_at, user_id",
    )?
    .query_map([conv], |r| {
        Ok(MemberState {
            user_id: r.get(0)?,
            delivered_seq: r.get(1)?,
            read_seq: r.get(2)?,
            joined_seq: r.get(3)?,
            left_seq: r.get(4)?,
        })
    })?
    .collect()
}

/// The caller's view of a message: the status of their own messages is the
/// lowest watermark among everyone else who was a member when it was sent.
fn view(m: StoredMessage, caller: &str, members: &[MemberState]) -> MessageView {
    if m.sender_id != caller {
        return MessageView {
            message: m,
            status: None,
        };
    }
    let (mut delivered, mut read) = (true, true);
    for o in members
        .iter()
        .filter(|o| o.user_id != caller && o.saw(m.seq))
    {
        delivered &= o.delivered_seq >= m.seq;
        read &= o.read_seq >= m.seq;
    }
    let status = if read {
        MessageStatus::Read
    } else if delivered {
        MessageStatus::Delivered
    } else {
        MessageStatus::Sent
    };
    MessageView {
        message: m,
        status: Some(status),
    }
}

fn history(
    conn: &Connection,
    conv: &str,
    caller: &str,
    page: Page,
) -> rusqlite::Result<HistoryPage> {
    let limit = u64::from(page.limit.clamp(1, 1000));
    let fetch = limit + 1;
    let members = all_members(conn, conv)?;
    let Some(me) = members.iter().find(|m| m.user_id == caller) else {
        return Ok(HistoryPage {
            messages: Vec::new(),
            has_more: false,
        });
    };
    // Only what was sent while the caller was a member.
    let lo = page.after.unwrap_or(0).max(me.joined_seq);
    let hi = page
        .before
        .unwrap_or(u64::MAX >> 1)
        .min(me.left_seq.map_or(u64::MAX >> 1, |l| l + 1));
    let descending = page.after.is_none();
    let sql = format!(
        "{MESSAGE_SELECT} WHERE m.conversation_id = ?1 AND m.seq > ?2 AND m.seq < ?3
         ORDER BY m.seq {} LIMIT ?4",
        if descending { "DESC" } else { "ASC" }
    );
    let mut rows: Vec<StoredMessage> = conn
        .prepare_cached(&sql)?
        .query_map(params![conv, lo, hi, fetch], row_to_message)?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    if descending {
        rows.reverse();
    }
    Ok(HistoryPage {
        messages: rows
            .into_iter()
            .map(|m| view(m, caller, &members))
            .collect(),
        has_more,
    })
}

fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (ms, conv) = cursor.split_once(':')?;
    Some((ms.parse().ok()?, conv.to_owned()))
}

/// conversation_id, kind, title, last_seq, updated_at, read_seq, joined_seq.
type ChatRow = (String, String, Option<String>, u64, i64, u64, u64);

fn chats(
    conn: &Connection,
    user_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> StoreResult<ChatPage> {
    let limit = limit.clamp(1, 200);
    let (c_ms, c_conv) = match cursor {
        None => (None, None),
        Some(c) => {
            let (ms, conv) = parse_cursor(c).ok_or(StoreError::NotFound)?;
            (Some(ms), Some(conv))
        }
    };
    let rows: Vec<ChatRow> = conn
        .prepare_cached(
            "SELECT c.conversation_id, c.kind, c.title, c.last_seq, c.updated_at, m.read_seq, m.joined_seq
             FROM members m JOIN conversations c ON c.conversation_id = m.conversation_id
             WHERE m.user_id = ?1 AND m.left_seq IS NULL
               AND (?2 IS NULL OR c.updated_at < ?2 OR (c.updated_at = ?2 AND c.conversation_id < ?3))
             ORDER BY c.updated_at DESC, c.conversation_id DESC
             LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![user_id, c_ms, c_conv, limit + 1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?,
                    r.get(6)?))
            })?
            .collect()
        })
        .map_err(unavailable)?;
    let has_more = rows.len() > limit as usize;
    let mut chats = Vec::with_capacity(rows.len().min(limit as usize));
    for (conv, kind, title, last_seq, updated_at, read_seq, joined_seq) in
        rows.into_iter().take(limit as usize)
    {
        let (kind, peer_id, group_id, title) = if kind == "group" {
            (
                ConversationKind::Group,
                None,
                Some(conv.clone()),
                title.unwrap_or_default(),
            )
        } else {
            let peer = id::direct_members(&conv)
                .map(|(a, b)| if a == user_id { b } else { a }.to_owned())
                .ok_or_else(|| StoreError::Corrupt(format!("bad direct id {conv}")))?;
            let name: String = conn
                .prepare_cached("SELECT display_name FROM users WHERE user_id = ?1")
                .and_then(|mut s| s.query_row([&peer], |r| r.get(0)).optional())
                .map_err(unavailable)?
                .unwrap_or_default();
            (ConversationKind::Direct, Some(peer), None, name)
        };
        // Only what the caller may see: nothing from before they joined.
        let last_message = if last_seq > joined_seq {
            let members = all_members(conn, &conv).map_err(unavailable)?;
            message_at(conn, &conv, last_seq)
                .map_err(unavailable)?
                .map(|m| view(m, user_id, &members))
        } else {
            None
        };
        chats.push(ChatEntry {
            conversation_id: conv,
            kind,
            peer_id,
            group_id,
            title,
            last_message,
            last_seq,
            unread_count: last_seq.saturating_sub(read_seq),
            updated_at_ms: updated_at,
        });
    }
    let next_cursor = if has_more {
        chats
            .last()
            .map(|c| format!("{}:{}", c.updated_at_ms, c.conversation_id))
    } else {
        None
    };
    Ok(ChatPage { chats, next_cursor })
}

fn group_info(conn: &Connection, group_id: &str) -> rusqlite::Result<Option<GroupInfo>> {
    let head: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT coalesce(title, ''), created_by FROM conversations
             WHERE conversation_id = ?1 AND kind = 'group'",
        )?
        .query_row([group_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((name, created_by)) = head else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached(
            "SELECT user_id, role, joined_at FROM members
             WHERE conversation_id = ?1 AND left_seq IS NULL ORDER BY joined_at, user_id",
        )?
        .query_map([group_id], |r| {
            let role: String = r.get(1)?;
            Ok(GroupMember {
                user_id: r.get(0)?,
                role: if role == "admin" {
                    GroupRole::Admin
                } else {
                    GroupRole::Member
                },
                joined_at_ms: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(GroupInfo {
        group_id: group_id.to_owned(),
        name,
        created_by: created_by.unwrap_or_default(),
        members,
    }))
}

fn group_err(e: rusqlite::Error) -> GroupError {
    GroupError::Store(unavailable(e))
}

/// The caller's current role in a group, or the right error.
fn role_of(
    tx: &rusqlite::Transaction<'_>,
    group_id: &str,
    user_id: &str,
) -> Result<GroupRole, GroupError> {
    let exists: bool = tx
        .prepare_cached("SELECT 1 FROM conversations WHERE conversation_id = ?1 AND kind = 'group'")
        .and_then(|mut s| s.query_row([group_id], |_| Ok(())).optional())
        .map_err(group_err)?
        .is_some();
    if !exists {
        return Err(GroupError::NotFound);
    }
    let role: Option<String> = tx
        .prepare_cached(
            "SELECT role FROM members WHERE conversation_id = ?1 AND user_id = ?2 AND left_seq IS NULL",
        )
        .and_then(|mut s| s.query_row([group_id, user_id], |r| r.get(0)).optional())
        .map_err(group_err)?;
    match role.as_deref() {
        Some("admin") => Ok(GroupRole::Admin),
        Some(_) => Ok(GroupRole::Member),
        None => Err(GroupError::NotMember),
    }
}

fn active_count(tx: &rusqlite::Transaction<'_>, group_id: &str) -> Result<usize, GroupError> {
    tx.prepare_cached(
        "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL",
    )
    .and_then(|mut s| s.query_row([group_id], |r| r.get::<_, i64>(0)))
    .map(|n| usize::try_from(n).unwrap_or(0))
    .map_err(group_err)
}

/// Inserts or re-activates a membership starting after the current last seq.
fn join(
    tx: &rusqlite::Transaction<'_>,
    group_id: &str,
    user_id: &str,
    role: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    let last_seq: u64 = tx
        .prepare_cached("SELECT last_seq FROM conversations WHERE conversation_id = ?1")?
        .query_row([group_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO members (conversation_id, user_id, role, delivered_seq, read_seq, joined_at, joined_seq, left_seq)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?4, NULL)
         ON CONFLICT (conversation_id, user_id) DO UPDATE SET
           role = excluded.role, delivered_seq = excluded.delivered_seq, read_seq = excluded.read_seq,
           joined_at = excluded.joined_at, joined_seq = excluded.joined_seq, left_seq = NULL",
    )?
    .execute(params![group_id, user_id, role, last_seq, at_ms])?;
    Ok(())
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        password_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        self.write(move |conn| {
            let res = conn.execute(
                "INSERT INTO users (user_id, username, display_name, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    user.user_id,
                    user.username,
                    user.display_name,
                    user.password_hash,
                    user.created_at_ms
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict("username taken".to_owned()))
                }
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT user_id, username, display_name, password_hash, created_at FROM users WHERE username = ?1",
            )
            .and_then(|mut s| s.query_row([&username], row_to_user).optional())
            .map_err(unavailable)
        })
        .await
    }

    async fn users_by_ids(&self, ids: &[String]) -> StoreResult<Vec<UserRecord>> {
        let ids = ids.to_vec();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user_id, username, display_name, password_hash, created_at FROM users WHERE user_id = ?1",
                )
                .map_err(unavailable)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(u) = stmt.query_row([id], row_to_user).optional().map_err(unavailable)? {
                    out.push(u);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRecord>> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            // A range scan on the unique index: usernames only hold ASCII
            // below DEL, so `prefix || DEL` bounds every name with that prefix.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT user_id, username, display_name, password_hash, created_at FROM users \
                     WHERE username >= ?1 AND username < ?1 || char(127) ORDER BY username LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(rusqlite::params![prefix, limit], row_to_user)
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }

    async fn apply(&self, ops: Vec<Op>) -> StoreResult<Vec<OpOutcome>> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.submit(WriteJob::Apply((ops, reply)), result).await
    }

    async fn message_by_client_id(
        &self,
        sender_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredMessage>> {
        let (sender_id, client_msg_id) = (sender_id.to_owned(), client_msg_id.to_owned());
        self.read(move |conn| {
            let seen: Option<(String, u64)> = conn
                .prepare_cached(
                    "SELECT conversation_id, seq FROM client_msgs WHERE sender_id = ?1 AND client_msg_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row([&sender_id, &client_msg_id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(unavailable)?;
            match seen {
                Some((conv, seq)) => message_at(conn, &conv, seq).map_err(unavailable),
                None => Ok(None),
            }
        })
        .await
    }

    async fn is_member(&self, conversation_id: &str, user_id: &str) -> StoreResult<bool> {
        let (conv, user) = (conversation_id.to_owned(), user_id.to_owned());
        self.read(move |conn| is_member(conn, &conv, &user).map_err(unavailable))
            .await
    }

    async fn members(&self, conversation_id: &str) -> StoreResult<Vec<MemberState>> {
        let conv = conversation_id.to_owned();
        self.read(move |conn| all_members(conn, &conv).map_err(unavailable))
            .await
    }

    async fn history(
        &self,
        conversation_id: &str,
        caller_id: &str,
        page: Page,
    ) -> StoreResult<HistoryPage> {
        let (conv, caller) = (conversation_id.to_owned(), caller_id.to_owned());
        self.read(move |conn| history(conn, &conv, &caller, page).map_err(unavailable))
            .await
    }

    async fn chats(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<ChatPage> {
        let (user, cursor) = (user_id.to_owned(), cursor.map(str::to_owned));
        self.read(move |conn| chats(conn, &user, limit, cursor.as_deref()))
            .await
    }
    async fn create_media(&self, media: MediaRecord) -> StoreResult<()> {
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO media ({MEDIA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    media.media_id,
                    media.uploader_id,
                    media.content_type,
                    media.size,
                    media.sha256,
                    media.has_thumbnail,
                    media.created_at_ms
                ])
            })
            .map(|_| ())
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::Conflict("media id exists".to_owned())
                }
                e => unavailable(e),
            })
        })
        .await
    }

    async fn media_for(&self, media_id: &str, user_id: &str) -> StoreResult<Option<MediaRecord>> {
        let (media_id, user_id) = (media_id.to_owned(), user_id.to_owned());
        self.read(move |conn| media_for(conn, &media_id, &user_id).map_err(unavailable))
            .await
    }

    async fn set_thumbnail(&self, media_id: &str) -> StoreResult<()> {
        let media_id = media_id.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE media SET has_thumbnail = 1 WHERE media_id = ?1")
                .and_then(|mut s| s.execute([&media_id]))
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    async fn create_group(
        &self,
        group_id: &str,
        name: &str,
        creator: &str,
        members: &[String],
        max_members: usize,
        at_ms: i64,
    ) -> Result<GroupInfo, GroupError> {
        let (group_id, name, creator) = (group_id.to_owned(), name.to_owned(), creator.to_owned());
        let mut others: Vec<String> = members.iter().filter(|m| **m != creator).cloned().collect();
        others.sort();
        others.dedup();
        if others.len() + 1 > max_members {
            return Err(GroupError::TooManyMembers(max_members));
        }
        let result = self
            .write(move |conn| {
                let mut inner = || -> Result<GroupInfo, GroupError> {
                    let tx = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(group_err)?;
                    for u in std::iter::once(&creator).chain(&others) {
                        if !user_exists(&tx, u).map_err(group_err)? {
                            return Err(GroupError::UnknownUser(u.clone()));
                        }
                    }
                    tx.prepare_cached(
                        "INSERT INTO conversations (conversation_id, kind, title, last_seq, updated_at, created_by)
                         VALUES (?1, 'group', ?2, 0, ?3, ?4)",
                    )
                    .and_then(|mut s| s.execute(params![group_id, name, at_ms, creator]))
                    .map_err(group_err)?;
                    join(&tx, &group_id, &creator, "admin", at_ms).map_err(group_err)?;
                    for u in &others {
                        join(&tx, &group_id, u, "member", at_ms).map_err(group_err)?;
                    }
                    let info = group_info(&tx, &group_id).map_err(group_err)?.ok_or(GroupError::NotFound)?;
                    tx.commit().map_err(group_err)?;
                    Ok(info)
                };
                Ok(inner())
            })
            .await?;
        result
    }

    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupInfo>> {
        let group_id = group_id.to_owned();
        self.read(move |conn| group_info(conn, &group_id).map_err(unavailable))
            .await
    }

    async fn add_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        max_members: usize,
        at_ms: i64,
    ) -> Result<MembershipChange, GroupError> {
        let (group_id, actor, user_id) =
            (group_id.to_owned(), actor.to_owned(), user_id.to_owned());
        self.write(move |conn| {
            let mut inner = || -> Result<MembershipChange, GroupError> {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(group_err)?;
                if role_of(&tx, &group_id, &actor)? != GroupRole::Admin {
                    return Err(GroupError::NotAdmin);
                }
                if !user_exists(&tx, &user_id).map_err(group_err)? {
                    return Err(GroupError::UnknownUser(user_id.clone()));
                }
                let changed = match role_of(&tx, &group_id, &user_id) {
                    Ok(_) => false,
                    Err(GroupError::NotMember) => {
                        if active_count(&tx, &group_id)? + 1 > max_members {
                            return Err(GroupError::TooManyMembers(max_members));
                        }
                        join(&tx, &group_id, &user_id, "member", at_ms).map_err(group_err)?;
                        true
                    }
                    Err(e) => return Err(e),
                };
                let group = group_info(&tx, &group_id)
                    .map_err(group_err)?
                    .ok_or(GroupError::NotFound)?;
                tx.commit().map_err(group_err)?;
                Ok(MembershipChange {
                    group,
                    changed,
                    promoted: None,
                })
            };
            Ok(inner())
        })
        .await?
    }

    async fn remove_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        at_ms: i64,
    ) -> Result<MembershipChange, GroupError> {
        let (group_id, actor, user_id) =
            (group_id.to_owned(), actor.to_owned(), user_id.to_owned());
        let _ = at_ms;
        self.write(move |conn| {
            let mut inner = || -> Result<MembershipChange, GroupError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(group_err)?;
                let actor_role = role_of(&tx, &group_id, &actor)?;
                if actor != user_id && actor_role != GroupRole::Admin {
                    return Err(GroupError::NotAdmin);
                }
                let removed_role = role_of(&tx, &group_id, &user_id)?;
                // Removal takes effect at the current last seq: everything
                // sequenced after this transaction is invisible to them.
                tx.prepare_cached(
                    "UPDATE members SET left_seq = (SELECT last_seq FROM conversations WHERE conversation_id = ?1)
                     WHERE conversation_id = ?1 AND user_id = ?2",
                )
                .and_then(|mut s| s.execute(params![group_id, user_id]))
                .map_err(group_err)?;
                let mut promoted = None;
                if removed_role == GroupRole::Admin {
                    let admins: i64 = tx
                        .prepare_cached(
                            "SELECT count(*) FROM members WHERE conversation_id = ?1 AND left_seq IS NULL AND role = 'admin'",
                        )
                        .and_then(|mut s| s.query_row([&group_id], |r| r.get(0)))
                        .map_err(group_err)?;
                    if admins == 0 {
                        promoted = tx
                            .prepare_cached(
                                "SELECT user_id FROM members WHERE conversation_id = ?1 AND left_seq IS NULL
                                 ORDER BY joined_at, user_id LIMIT 1",
                            )
                            .and_then(|mut s| s.query_row([&group_id], |r| r.get::<_, String>(0)).optional())
                            .map_err(group_err)?;
                        if let Some(p) = &promoted {
                            tx.prepare_cached(
                                "UPDATE members SET role = 'admin' WHERE conversation_id = ?1 AND user_id = ?2",
                            )
                            .and_then(|mut s| s.execute(params![group_id, p]))
                            .map_err(group_err)?;
                        }
                    }
                }
                let group = group_info(&tx, &group_id).map_err(group_err)?.ok_or(GroupError::NotFound)?;
                tx.commit().map_err(group_err)?;
                Ok(MembershipChange { group, changed: true, promoted })
            };
            Ok(inner())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msgr_core::store::NewMessage;

    /// One batch of a group fails on SQL: the group is redone with savepoints,
    /// so the batches beside it still commit, with dense seqs.
    #[test]
    fn a_failing_batch_fails_alone_in_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_conn(&dir.path().join("t.sqlite3"), Durability::Full).expect("open");
        migrate(&mut conn).expect("migrate");
        let (a, b) = (id::new_user_id(), id::new_user_id());
        for (u, name) in [(&a, "a"), (&b, "b")] {
            conn.execute(
                "INSERT INTO users (user_id, username, display_name, password_hash, created_at)
                 VALUES (?1, ?2, ?2, 'h', 1)",
                params![u, name],
            )
            .expect("user");
        }
        let conv = id::direct_conversation_id(&a, &b);
        // A dedup entry without its message: appending "bad" again is an SQL error.
        conn.execute(
            "INSERT INTO client_msgs (sender_id, client_msg_id, conversation_id, seq) VALUES (?1, 'bad', ?2, 99)",
            params![a, conv],
        )
        .expect("corrupt row");
        let send = |cmid: &str| {
            vec![Op::Append(NewMessage {
                conversation_id: conv.clone(),
                message_id: id::new_message_id(),
                sender_id: a.clone(),
                client_msg_id: cmid.to_owned(),
                target: Target::User(b.clone()),
                text: Some("x".to_owned()),
                media_id: None,
                sent_at_ms: 1,
            })]
        };
        let (first, bad, last) = (send("c-1"), send("bad"), send("c-2"));
        let out = commit_batches(&mut conn, &[&first, &bad, &last]).expect("commit");
        let seq = |r: &StoreResult<Vec<OpOutcome>>| match r {
            Ok(o) => match &o[..] {
                [OpOutcome::Stored(m)] => m.seq,
                other => panic!("expected one Stored, got {other:?}"),
            },
            Err(e) => panic!("expected Ok, got {e}"),
        };
        assert_eq!(seq(&out[0]), 1);
        assert!(out[1].is_err(), "the corrupt batch fails: {:?}", out[1]);
        assert_eq!(seq(&out[2]), 2);
        let stored: Vec<String> = conn
            .prepare("SELECT client_msg_id FROM messages ORDER BY seq")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(stored, ["c-1", "c-2"]);
    }
}
