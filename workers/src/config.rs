//! Worker configuration: defaults ← TOML file (`--config`) ← `MSGR_*` env.

use std::path::PathBuf;

use msgr_core::config::NatsConfig;
use serde::{Deserialize, Serialize};

/// Which database the workers use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum StoreConfig {
    /// Embedded SQLite (default). `path` defaults to `<data_dir>/msgr.sqlite3`.
    Sqlite {
        #[serde(default)]
        path: Option<PathBuf>,
        /// `full` (fsync every commit, default) or `normal`.
        #[serde(default = "default_durability")]
        durability: String,
    },
    /// PostgreSQL, shared by every worker: `url` as
    /// `postgres://user:password@host:5432/db`.
    Postgres {
        url: String,
        /// Connections per worker process.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
    },
}

fn default_pool_size() -> usize {
    16
}

fn default_durability() -> String {
    "full".to_owned()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Sqlite {
            path: None,
            durability: default_durability(),
        }
    }
}

/// Everything a worker process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Where SQLite and the token key live unless set explicitly.
    pub data_dir: PathBuf,
    pub nats: NatsConfig,
    pub store: StoreConfig,
    /// Conversation partitions of the command stream. Fixed once the stream
    /// exists; 0 (the default) takes the stream's, or
    /// [`DEFAULT_PARTITIONS`] for a new one.
    pub partitions: u32,
    /// JetStream replicas for the stream and lease bucket (3 in a cluster).
    pub replicas: usize,
    /// A partition lease not renewed within this many ms passes to a standby.
    pub lease_ttl_ms: u64,
    /// Most commands one sequencer transaction takes (also the consumer's max ack pending).
    pub batch_max: usize,
    /// A held partition with commands waiting and none applied for this many
    /// seconds makes `/healthz` unhealthy (a store that hangs without failing).
    pub stall_secs: u64,
    /// Session token lifetime.
    pub token_ttl_secs: u64,
    /// Live sessions (signed-in devices) per user; a login past it ends the
    /// oldest, which also bounds the session list and the export.
    pub max_sessions_per_user: usize,
    /// A command stays in `MSGR_IN` at most this long, processed or not
    /// (what bounds the disk a consumer that never acks can hold).
    pub command_max_age_secs: u64,
    /// A consumer of `MSGR_IN` idle this long (no pulls, no acks) is deleted
    /// by JetStream, and stops holding commands (an integrator gone for good).
    pub consumer_idle_secs: u64,
    /// Most members a group may have.
    pub max_group_members: usize,
    /// How long after sending its sender may edit a text message (seconds).
    pub edit_window_secs: u64,
    /// How long after sending its sender may delete a message for everyone (seconds).
    pub delete_window_secs: u64,
    /// argon2id memory cost of new password hashes (KiB).
    pub password_memory_kib: u32,
    /// argon2id passes of new password hashes.
    pub password_iterations: u32,
    /// The PASETO secret key file; created (0600) if missing.
    /// Defaults to `<data_dir>/paseto-v4.secret`.
    pub secret_key_file: Option<PathBuf>,
    /// Where `/metrics` and `/healthz` are served; empty to disable.
    pub metrics_listen: String,
    /// This process's name in leases and logs (random by default).
    pub instance_id: Option<String>,
    /// Where media bytes live (for thumbnails); must match the edges'.
    pub media: msgr_core::media::MediaStoreConfig,
    /// When the v1 per-user inbox subjects (`msgr.v1.deliver.user.<user>`)
    /// are published: `unrouted` (users no `routed` edge holds) or `always`.
    pub deliver_v1: crate::deliver::DeliverV1,
    /// Which subjects carry stored messages for integrators: `v2`
    /// (`msgr.v2.evt.messages.<partition>`, one per batch), `v1`
    /// (`msgr.v1.evt.message.<conversation>`, one per message) or `both`.
    pub integrator_events: crate::sequencer::IntegratorEvents,
}

/// Partitions of a new command stream when none are configured. Few: an
/// edge batches the commands of one partition per PubAck round trip, so
/// fewer partitions make larger batches (at 8,000 msg/s on two cores: p99
/// 23 ms with 4, 65 ms with 8, 195-400 ms with 16); they bound how many
/// workers sequence at once, so a larger deployment sets more.
pub const DEFAULT_PARTITIONS: u32 = 4;

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            nats: NatsConfig::default(),
            store: StoreConfig::default(),
            partitions: 0,
            replicas: 1,
            lease_ttl_ms: 2_000,
            batch_max: 256,
            stall_secs: 20,
            token_ttl_secs: 24 * 3600,
            max_sessions_per_user: 100,
            command_max_age_secs: 7 * 24 * 3600,
            consumer_idle_secs: 24 * 3600,
            max_group_members: 1024,
            edit_window_secs: 15 * 60,
            delete_window_secs: 24 * 3600,
            password_memory_kib: 19_456,
            password_iterations: 2,
            secret_key_file: None,
            metrics_listen: "127.0.0.1:9464".to_owned(),
            instance_id: None,
            media: msgr_core::media::MediaStoreConfig::default(),
            deliver_v1: crate::deliver::DeliverV1::default(),
            integrator_events: crate::sequencer::IntegratorEvents::default(),
        }
    }
}
