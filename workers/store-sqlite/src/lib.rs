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

//!
//! # Layout
//! One module per area of the store port, as in `msgr-store-postgres`:
//! [`users`], [`messages`] (appends, receipts, history, chat list),
//! [`groups`], [`media`], [`partitions`] (sequencer claims). This file holds
//! the connections, the writer thread and the port's implementation.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use msgr_core::store::{
    ChatPage, Fence, GroupError, GroupInfo, HistoryPage, MediaRecord, MemberState,
    MembershipChange, Op, OpOutcome, Page, PartitionClaim, SessionRecord, Store, StoreError,
    StoreResult, StoredMessage, UserRecord,
};
use rusqlite::{Connection, TransactionBehavior};

mod changes;
mod groups;
mod media;
mod messages;
mod partitions;
mod sessions;
mod users;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_groups.sql"),
    include_str!("../migrations/0003_media.sql"),
    include_str!("../migrations/0004_partition_claims.sql"),
    include_str!("../migrations/0005_sessions.sql"),
    include_str!("../migrations/0006_closed_conversations.sql"),
    include_str!("../migrations/0007_message_changes.sql"),
    include_str!("../migrations/0008_member_windows.sql"),
    include_str!("../migrations/0009_media_removals.sql"),
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

/// A sequencer batch: its fence, its ops, and where its outcomes go.
struct PendingBatch {
    fence: Option<Fence>,
    ops: Vec<Op>,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<OpOutcome>>>,
}

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
    let batches: Vec<(Option<&Fence>, &[Op])> = jobs
        .iter()
        .map(|j| (j.fence.as_ref(), j.ops.as_slice()))
        .collect();
    let committed = commit_batches(conn, &batches);
    metrics::histogram!("msgr_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match committed {
        Ok(results) => {
            for (job, r) in jobs.into_iter().zip(results) {
                // The caller may have given up waiting; its batch is durable anyway.
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable(msg.clone())));
            }
        }
    }
}

/// Commits `batches` in one transaction; a batch whose SQL fails fails alone,
/// and a batch whose fence is stale writes nothing and gets
/// [`StoreError::Fenced`].
///
/// Ops fail only on SQL errors (refusals are outcomes), so the batches are
/// first applied without savepoints: a savepoint makes SQLite copy every page
/// it changes to a statement journal, which was an eighth of the writer's CPU
/// at 2,000 msg/s. Only if a batch fails is the transaction rolled back and
/// redone with a savepoint per batch.
fn commit_batches(
    conn: &mut Connection,
    batches: &[(Option<&Fence>, &[Op])],
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
    batches: &[(Option<&Fence>, &[Op])],
    savepoints: bool,
) -> rusqlite::Result<Option<Vec<StoreResult<Vec<OpOutcome>>>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batches.len());
    for (fence, ops) in batches {
        if let Some(fence) = fence {
            // Checked before anything of the batch is written, so a stale
            // batch needs no savepoint to leave no trace.
            if let Err(fenced) = partitions::check_and_advance(&tx, fence)? {
                results.push(Err(fenced));
                continue;
            }
        }
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
            Op::Append(m) => messages::append(tx, m),
            Op::Receipt(w) => messages::receipt(tx, w),
            Op::Change(c) => changes::change(tx, c),
        })
        .collect()
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
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
    // Deleted text is overwritten in the pages a change writes anyway (a
    // delete for everyone should not leave the words in free pages).
    conn.pragma_update(None, "secure_delete", "FAST")?;
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

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        self.write(move |conn| users::create(conn, &user)).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |conn| users::by_username(conn, &username))
            .await
    }

    async fn users_by_ids(&self, ids: &[String]) -> StoreResult<Vec<UserRecord>> {
        let ids = ids.to_vec();
        self.read(move |conn| users::by_ids(conn, &ids)).await
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRecord>> {
        let prefix = prefix.to_owned();
        self.read(move |conn| users::search(conn, &prefix, limit))
            .await
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        let user = user_id.to_owned();
        self.write(move |conn| users::delete(conn, &user)).await
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.write(move |conn| sessions::create(conn, &session))
            .await
    }

    async fn sessions(&self, user_id: &str, now_ms: i64) -> StoreResult<Vec<SessionRecord>> {
        let user = user_id.to_owned();
        self.read(move |conn| sessions::live(conn, &user, now_ms))
            .await
    }

    async fn extend_session(
        &self,
        user_id: &str,
        session_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        let (user, sid) = (user_id.to_owned(), session_id.to_owned());
        self.write(move |conn| sessions::extend(conn, &user, &sid, now_ms, expires_at_ms))
            .await
    }

    async fn revoke_sessions(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Vec<String>> {
        let (user, sid) = (user_id.to_owned(), session_id.map(str::to_owned));
        self.write(move |conn| sessions::revoke(conn, &user, sid.as_deref(), now_ms))
            .await
    }

    async fn apply_batch(&self, fence: Option<Fence>, ops: Vec<Op>) -> StoreResult<Vec<OpOutcome>> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job = WriteJob::Apply(PendingBatch { fence, ops, reply });
        self.submit(job, result).await
    }

    async fn claim_partition(
        &self,
        partition: u32,
        holder: &str,
        log: &str,
    ) -> StoreResult<PartitionClaim> {
        let (holder, log) = (holder.to_owned(), log.to_owned());
        let now = msgr_core::time::now_ms();
        self.write(move |conn| partitions::claim(conn, partition, &holder, &log, now))
            .await
    }

    async fn message_by_client_id(
        &self,
        sender_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredMessage>> {
        let (sender_id, client_msg_id) = (sender_id.to_owned(), client_msg_id.to_owned());
        self.read(move |conn| messages::by_client_id(conn, &sender_id, &client_msg_id))
            .await
    }

    async fn is_member(&self, conversation_id: &str, user_id: &str) -> StoreResult<bool> {
        let (conv, user) = (conversation_id.to_owned(), user_id.to_owned());
        self.read(move |conn| messages::is_member(conn, &conv, &user).map_err(unavailable))
            .await
    }

    async fn members(&self, conversation_id: &str) -> StoreResult<Vec<MemberState>> {
        let conv = conversation_id.to_owned();
        self.read(move |conn| messages::all_members(conn, &conv).map_err(unavailable))
            .await
    }

    async fn changes(
        &self,
        conversation_id: &str,
        caller_id: &str,
        after_rev: u64,
        limit: u32,
    ) -> StoreResult<HistoryPage> {
        let (conv, caller) = (conversation_id.to_owned(), caller_id.to_owned());
        self.read(move |conn| {
            changes::changes(conn, &conv, &caller, after_rev, limit).map_err(unavailable)
        })
        .await
    }

    async fn block(&self, user_id: &str, other: &str, at_ms: i64) -> StoreResult<bool> {
        let (user, other) = (user_id.to_owned(), other.to_owned());
        self.write(move |conn| changes::block(conn, &user, &other, at_ms))
            .await
    }

    async fn unblock(&self, user_id: &str, other: &str) -> StoreResult<bool> {
        let (user, other) = (user_id.to_owned(), other.to_owned());
        self.write(move |conn| changes::unblock(conn, &user, &other))
            .await
    }

    async fn blocked(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let user = user_id.to_owned();
        self.read(move |conn| changes::blocked(conn, &user)).await
    }

    async fn set_presence_visible(&self, user_id: &str, visible: bool) -> StoreResult<()> {
        let user = user_id.to_owned();
        self.write(move |conn| changes::set_presence_visible(conn, &user, visible))
            .await
    }

    async fn presence_visible(&self, user_id: &str) -> StoreResult<bool> {
        let user = user_id.to_owned();
        self.read(move |conn| changes::presence_visible(conn, &user))
            .await
    }

    async fn presence_allowed(
        &self,
        caller_id: &str,
        others: &[String],
    ) -> StoreResult<Vec<String>> {
        let (caller, others) = (caller_id.to_owned(), others.to_vec());
        self.read(move |conn| changes::presence_allowed(conn, &caller, &others))
            .await
    }

    async fn history(
        &self,
        conversation_id: &str,
        caller_id: &str,
        page: Page,
    ) -> StoreResult<HistoryPage> {
        let (conv, caller) = (conversation_id.to_owned(), caller_id.to_owned());
        self.read(move |conn| messages::history(conn, &conv, &caller, page).map_err(unavailable))
            .await
    }

    async fn chats(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<ChatPage> {
        let (user, cursor) = (user_id.to_owned(), cursor.map(str::to_owned));
        self.read(move |conn| messages::chats(conn, &user, limit, cursor.as_deref()))
            .await
    }

    async fn create_media(&self, media: MediaRecord) -> StoreResult<()> {
        self.write(move |conn| media::create(conn, &media)).await
    }

    async fn media_for(&self, media_id: &str, user_id: &str) -> StoreResult<Option<MediaRecord>> {
        let (media_id, user_id) = (media_id.to_owned(), user_id.to_owned());
        self.read(move |conn| media::media_for(conn, &media_id, &user_id).map_err(unavailable))
            .await
    }

    async fn set_thumbnail(&self, media_id: &str) -> StoreResult<()> {
        let media_id = media_id.to_owned();
        self.write(move |conn| media::set_thumbnail(conn, &media_id))
            .await
    }

    async fn media_removals(&self, limit: usize) -> StoreResult<Vec<String>> {
        self.read(move |conn| media::removals(conn, limit)).await
    }

    async fn media_removed(&self, media_id: &str) -> StoreResult<()> {
        let media_id = media_id.to_owned();
        self.write(move |conn| media::removed(conn, &media_id))
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
        self.write(move |conn| {
            Ok(groups::create(
                conn, &group_id, &name, &creator, &others, at_ms,
            ))
        })
        .await?
    }

    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupInfo>> {
        let group_id = group_id.to_owned();
        self.read(move |conn| groups::group_info(conn, &group_id).map_err(unavailable))
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
            Ok(groups::add_member(
                conn,
                &group_id,
                &actor,
                &user_id,
                max_members,
                at_ms,
            ))
        })
        .await?
    }

    async fn remove_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        _at_ms: i64,
    ) -> Result<MembershipChange, GroupError> {
        let (group_id, actor, user_id) =
            (group_id.to_owned(), actor.to_owned(), user_id.to_owned());
        self.write(move |conn| Ok(groups::remove_member(conn, &group_id, &actor, &user_id)))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msgr_core::id;
    use msgr_core::store::{NewMessage, Target};
    use rusqlite::params;

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
                reply_to_seq: None,
            })]
        };
        let (first, bad, last) = (send("c-1"), send("bad"), send("c-2"));
        let out = commit_batches(&mut conn, &[(None, &first), (None, &bad), (None, &last)])
            .expect("commit");
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
