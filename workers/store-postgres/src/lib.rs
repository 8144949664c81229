//! PostgreSQL adapter of the msgr store port: the networked store. With it
//! the workers hold no state of their own: any number of worker processes,
//! on any machines, share one database.
//!
//! - A small pool of connections (`deadpool-postgres` over `tokio-postgres`,
//!   prepared statements cached per connection); no TLS (a private network
//!   or loopback, as for NATS).
//! - A sequencer batch is one transaction: dense seq, `(sender,
//!   client_msg_id)` dedupe, chat index and watermarks commit together, and
//!   with a fence the partition's claim row is locked first (`FOR UPDATE`),
//!   so batches of one partition are serialised with each other and with a
//!   new claim: a stale holder's batch writes nothing.
//! - Rows a sequencer batch and a membership change both touch are locked in
//!   the same order (the conversation row first), so a member removed
//!   before their message is sequenced cannot get it in.
//! - The schema is versioned (`msgr_schema`) and migrated at start under an
//!   advisory lock, so workers starting together do not race.
//!
//! # Layout
//! One module per area of the store port, as in `msgr-store-sqlite`:
//! [`users`], [`messages`] (appends, receipts, history, chat list),
//! [`groups`], [`media`], [`partitions`] (sequencer claims). This file holds
//! the pool, the migrations and the port's implementation.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use msgr_core::store::{
    ChatPage, Fence, GroupError, GroupInfo, HistoryPage, MediaRecord, MemberState,
    MembershipChange, Op, OpOutcome, Page, PartitionClaim, SessionRecord, Store, StoreError,
    StoreResult, StoredMessage, UserRecord,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

mod changes;
mod groups;
mod media;
mod messages;
mod partitions;
mod sessions;
mod users;

/// Schema versions, applied in order; the version is the index + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_sessions.sql"),
    include_str!("../migrations/0003_closed_conversations.sql"),
    include_str!("../migrations/0004_message_changes.sql"),
    include_str!("../migrations/0005_member_windows.sql"),
    include_str!("../migrations/0006_media_removals.sql"),
];

/// Any lock id would do; this one is "msgr" in ASCII.
const MIGRATION_LOCK: i64 = 0x6d73_6772;

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgStore")
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// Runs `sql` (prepared once per connection) and returns its rows.
pub(crate) async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.query(&st, params).await.map_err(unavailable)
}

/// [`query`] for at most one row.
pub(crate) async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.query_opt(&st, params).await.map_err(unavailable)
}

/// Runs a statement; returns the rows it changed.
pub(crate) async fn exec(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let st = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.execute(&st, params).await.map_err(unavailable)
}

/// BIGINT columns hold seqs and sizes, which are never negative.
pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db` or
    /// `host=… user=…`) with a pool of up to `pool_size` connections, and
    /// migrates the schema.
    ///
    /// # Errors
    /// A malformed URL, an unreachable server, or a failed migration.
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        config.application_name("msgr-worker");
        config.connect_timeout(Duration::from_secs(5));
        // A worker stopped in the middle of a transaction (SIGSTOP, a stall)
        // would hold its row locks, and with them the partition's next
        // holder, until it woke: the server ends such a transaction after
        // 10 s idle instead (the sequencer's own never idle: they are
        // statements back to back).
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c idle_in_transaction_session_timeout=10000"),
            _ => "-c idle_in_transaction_session_timeout=10000".to_owned(),
        };
        config.options(options);
        // A dead server is noticed by the kernel's keepalives too, not only
        // by a query that times out.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A connection is checked when taken from the pool, so one
                // broken by a database restart is replaced, not handed out.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Applies the migrations this database has not had yet, each in the
    /// same transaction as the version bump, under an advisory lock.
    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(unavailable)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS msgr_schema (version INTEGER NOT NULL)")
            .await
            .map_err(unavailable)?;
        let version: i32 = match tx
            .query_opt("SELECT version FROM msgr_schema", &[])
            .await
            .map_err(unavailable)?
        {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO msgr_schema (version) VALUES (0)", &[])
                    .await
                    .map_err(unavailable)?;
                0
            }
        };
        let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        if version > known {
            return Err(StoreError::Unavailable(format!(
                "the database has schema version {version}, newer than this worker's {known}: \
                 upgrade the worker"
            )));
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await.map_err(unavailable)?;
            let v = i32::try_from(n + 1).unwrap_or(i32::MAX);
            tx.execute("UPDATE msgr_schema SET version = $1", &[&v])
                .await
                .map_err(unavailable)?;
            tracing::info!(version = v, "PostgreSQL schema migrated");
        }
        tx.commit().await.map_err(unavailable)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        users::create(&self.conn().await?, &user).await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        users::by_username(&self.conn().await?, username).await
    }

    async fn users_by_ids(&self, ids: &[String]) -> StoreResult<Vec<UserRecord>> {
        users::by_ids(&self.conn().await?, ids).await
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> StoreResult<Vec<UserRecord>> {
        users::search(&self.conn().await?, prefix, limit).await
    }

    async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
        users::delete(&self.conn().await?, user_id).await
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        sessions::create(&self.conn().await?, &session).await
    }

    async fn sessions(&self, user_id: &str, now_ms: i64) -> StoreResult<Vec<SessionRecord>> {
        sessions::live(&self.conn().await?, user_id, now_ms).await
    }

    async fn extend_session(
        &self,
        user_id: &str,
        session_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> StoreResult<()> {
        sessions::extend(
            &self.conn().await?,
            user_id,
            session_id,
            now_ms,
            expires_at_ms,
        )
        .await
    }

    async fn revoke_sessions(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Vec<String>> {
        sessions::revoke(&self.conn().await?, user_id, session_id, now_ms).await
    }

    async fn apply_batch(&self, fence: Option<Fence>, ops: Vec<Op>) -> StoreResult<Vec<OpOutcome>> {
        let started = std::time::Instant::now();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(unavailable)?;
        if let Some(fence) = &fence {
            partitions::check_and_advance(&tx, fence).await?;
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in &ops {
            out.push(match op {
                Op::Append(m) => messages::append(&tx, m).await,
                Op::Receipt(w) => messages::receipt(&tx, w).await,
                Op::Change(c) => changes::change(&tx, c).await,
            }?);
        }
        let sync = std::time::Instant::now();
        tx.commit().await.map_err(unavailable)?;
        metrics::histogram!("msgr_store_commit_sync_seconds").record(sync.elapsed().as_secs_f64());
        metrics::histogram!("msgr_store_commit_seconds").record(started.elapsed().as_secs_f64());
        Ok(out)
    }

    async fn claim_partition(
        &self,
        partition: u32,
        holder: &str,
        log: &str,
    ) -> StoreResult<PartitionClaim> {
        let mut conn = self.conn().await?;
        partitions::claim(&mut conn, partition, holder, log, msgr_core::time::now_ms()).await
    }

    async fn message_by_client_id(
        &self,
        sender_id: &str,
        client_msg_id: &str,
    ) -> StoreResult<Option<StoredMessage>> {
        messages::by_client_id(&self.conn().await?, sender_id, client_msg_id).await
    }

    async fn changes(
        &self,
        conversation_id: &str,
        caller_id: &str,
        after_rev: u64,
        limit: u32,
    ) -> StoreResult<HistoryPage> {
        changes::changes(
            &self.conn().await?,
            conversation_id,
            caller_id,
            after_rev,
            limit,
        )
        .await
    }

    async fn block(&self, user_id: &str, other: &str, at_ms: i64) -> StoreResult<bool> {
        changes::block(&self.conn().await?, user_id, other, at_ms).await
    }

    async fn unblock(&self, user_id: &str, other: &str) -> StoreResult<bool> {
        changes::unblock(&self.conn().await?, user_id, other).await
    }

    async fn blocked(&self, user_id: &str) -> StoreResult<Vec<String>> {
        changes::blocked(&self.conn().await?, user_id).await
    }

    async fn set_presence_visible(&self, user_id: &str, visible: bool) -> StoreResult<()> {
        changes::set_presence_visible(&self.conn().await?, user_id, visible).await
    }

    async fn presence_visible(&self, user_id: &str) -> StoreResult<bool> {
        changes::presence_visible(&self.conn().await?, user_id).await
    }

    async fn presence_allowed(
        &self,
        caller_id: &str,
        others: &[String],
    ) -> StoreResult<Vec<String>> {
        changes::presence_allowed(&self.conn().await?, caller_id, others).await
    }

    async fn is_member(&self, conversation_id: &str, user_id: &str) -> StoreResult<bool> {
        messages::is_member(&self.conn().await?, conversation_id, user_id).await
    }

    async fn members(&self, conversation_id: &str) -> StoreResult<Vec<MemberState>> {
        messages::all_members(&self.conn().await?, conversation_id).await
    }

    async fn history(
        &self,
        conversation_id: &str,
        caller_id: &str,
        page: Page,
    ) -> StoreResult<HistoryPage> {
        messages::history(&self.conn().await?, conversation_id, caller_id, page).await
    }

    async fn chats(
        &self,
        user_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<ChatPage> {
        messages::chats(&self.conn().await?, user_id, limit, cursor).await
    }

    async fn create_media(&self, media: MediaRecord) -> StoreResult<()> {
        media::create(&self.conn().await?, &media).await
    }

    async fn media_for(&self, media_id: &str, user_id: &str) -> StoreResult<Option<MediaRecord>> {
        media::media_for(&self.conn().await?, media_id, user_id).await
    }

    async fn set_thumbnail(&self, media_id: &str) -> StoreResult<()> {
        media::set_thumbnail(&self.conn().await?, media_id).await
    }

    async fn media_removals(&self, limit: usize) -> StoreResult<Vec<String>> {
        media::removals(&self.conn().await?, limit).await
    }

    async fn media_removed(&self, media_id: &str) -> StoreResult<()> {
        media::removed(&self.conn().await?, media_id).await
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
        let mut others: Vec<String> = members.iter().filter(|m| *m != creator).cloned().collect();
        others.sort();
        others.dedup();
        if others.len() + 1 > max_members {
            return Err(GroupError::TooManyMembers(max_members));
        }
        let mut conn = self.conn().await?;
        groups::create(&mut conn, group_id, name, creator, &others, at_ms).await
    }

    async fn group(&self, group_id: &str) -> StoreResult<Option<GroupInfo>> {
        groups::group_info(&self.conn().await?, group_id).await
    }

    async fn add_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        max_members: usize,
        at_ms: i64,
    ) -> Result<MembershipChange, GroupError> {
        let mut conn = self.conn().await?;
        groups::add_member(&mut conn, group_id, actor, user_id, max_members, at_ms).await
    }

    async fn remove_member(
        &self,
        group_id: &str,
        actor: &str,
        user_id: &str,
        _at_ms: i64,
    ) -> Result<MembershipChange, GroupError> {
        let mut conn = self.conn().await?;
        groups::remove_member(&mut conn, group_id, actor, user_id).await
    }
}
