//! Backups of the one-machine store, taken while the system runs.
//!
//! A backup directory holds:
//! - `msgr.sqlite3`: the database as of one moment (`VACUUM INTO` reads a
//!   consistent snapshot inside one read transaction; writers go on);
//! - `paseto-v4.secret`: the token signing key (sessions stay valid after a
//!   restore);
//! - `media/`: the uploaded files, when media is stored locally (each file is
//!   written once, under a temporary name and renamed, so a copy never holds
//!   half a file; a file uploaded during the copy may or may not be in it);
//! - `manifest.json`: when, what, and how many users and messages, so a
//!   restore can be checked.
//!
//! Commands still in JetStream (not yet stored) are not in it: no client has
//! an ack for them, and clients resend what is unacked.
//!
//! The networked store (PostgreSQL) is backed up with its own tools
//! (`pg_dump`, or `pg_basebackup` with WAL archiving): see
//! docs/OPERATIONS.md.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{StoreConfig, WorkerConfig};

/// What a backup holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub created_at: String,
    pub version: String,
    pub users: u64,
    pub messages: u64,
    pub media_files: u64,
    /// Set when media lives in S3 and is not part of the backup.
    pub media_elsewhere: Option<String>,
}

const DB: &str = "msgr.sqlite3";
const KEY: &str = "paseto-v4.secret";

fn sqlite_path(config: &WorkerConfig) -> anyhow::Result<PathBuf> {
    match &config.store {
        StoreConfig::Sqlite { path, .. } => {
            Ok(path.clone().unwrap_or_else(|| config.data_dir.join(DB)))
        }
        StoreConfig::Postgres { .. } => anyhow::bail!(
            "the store is PostgreSQL: back it up with pg_dump or pg_basebackup (docs/OPERATIONS.md)"
        ),
    }
}

fn key_path(config: &WorkerConfig) -> PathBuf {
    config
        .secret_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(KEY))
}

fn local_media(config: &WorkerConfig) -> Result<PathBuf, String> {
    match &config.media {
        msgr_core::media::MediaStoreConfig::Local { path } => Ok(path
            .clone()
            .unwrap_or_else(|| config.data_dir.join("media"))),
        msgr_core::media::MediaStoreConfig::S3 { bucket, .. } => Err(bucket.clone()),
    }
}

/// Copies `from` into `to` (created), file by file; returns the files copied.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut n = 0;
    if !from.is_dir() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            n += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            // A file another process is still writing has a temporary name;
            // the store renames it when complete.
            if entry.file_name().to_string_lossy().contains("#") {
                continue;
            }
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

fn count(db: &Path, table: &str) -> anyhow::Result<u64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
}

/// Takes a backup of the running (or stopped) one-machine store into `to`,
/// which must not exist yet or be empty.
///
/// # Errors
/// A PostgreSQL store, a non-empty target, or I/O failures.
pub fn create(config: &WorkerConfig, to: &Path) -> anyhow::Result<Manifest> {
    let db = sqlite_path(config)?;
    anyhow::ensure!(db.is_file(), "no database at {}", db.display());
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        anyhow::bail!("{} is not empty", to.display());
    }
    std::fs::create_dir_all(to)?;
    let snapshot = to.join(DB);
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute("VACUUM INTO ?1", [snapshot.to_string_lossy().as_ref()])
            .context("snapshotting the database")?;
    }
    let key = key_path(config);
    if key.is_file() {
        std::fs::copy(&key, to.join(KEY)).context("copying the token key")?;
    }
    let (media_files, media_elsewhere) = match local_media(config) {
        Ok(dir) => (copy_tree(&dir, &to.join("media"))?, None),
        Err(bucket) => (0, Some(format!("s3 bucket {bucket}"))),
    };
    let manifest = Manifest {
        created_at: msgr_core::time::rfc3339_ms(msgr_core::time::now_ms()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        users: count(&snapshot, "users")?,
        messages: count(&snapshot, "messages")?,
        media_files,
        media_elsewhere,
    };
    std::fs::write(
        to.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(manifest)
}

/// Restores a backup into the data directory `config` names. The system must
/// be stopped, and the target must hold no database (or `force`).
///
/// # Errors
/// A missing or damaged backup, an existing database, or I/O failures.
pub fn restore(config: &WorkerConfig, from: &Path, force: bool) -> anyhow::Result<Manifest> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(from.join("manifest.json")).context("reading manifest.json")?,
    )
    .context("manifest.json")?;
    let backup_db = from.join(DB);
    anyhow::ensure!(
        count(&backup_db, "messages")? == manifest.messages,
        "the backup's database does not match its manifest"
    );
    let db = sqlite_path(config)?;
    if db.exists() && !force {
        anyhow::bail!(
            "{} exists: restore into an empty data directory, or pass --force to replace it (stop msgr first)",
            db.display()
        );
    }
    if let Some(dir) = db.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Replace the whole database: a WAL left beside the old file would be
    // replayed over the restored one.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup_db, &db).context("restoring the database")?;
    if from.join(KEY).is_file() {
        std::fs::copy(from.join(KEY), key_path(config)).context("restoring the token key")?;
    }
    if let Ok(dir) = local_media(config) {
        copy_tree(&from.join("media"), &dir)?;
    }
    Ok(manifest)
}

/// `msgr-backup create --to DIR` / `msgr-backup restore --from DIR [--force]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "msgr-backup",
    about = "Back up and restore the one-machine store"
)]
pub struct Cli {
    /// The worker's TOML config (its data directory, store and media settings).
    #[arg(long, short, env = "MSGR_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Take a backup while msgr runs.
    Create {
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup (msgr stopped).
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing database.
        #[arg(long)]
        force: bool,
    },
}

/// Entry point of `msgr-backup`.
///
/// # Errors
/// Bad config or a failed backup/restore.
pub fn main_entry() -> anyhow::Result<()> {
    use clap::Parser as _;
    let cli = Cli::parse();
    let config: WorkerConfig = msgr_core::config::load(cli.config.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let (verb, m) = match cli.action {
        Action::Create { to } => ("backed up", create(&config, &to)?),
        Action::Restore { from, force } => ("restored", restore(&config, &from, force)?),
    };
    println!(
        "{verb}: {} users, {} messages, {} media files{} (taken {})",
        m.users,
        m.messages,
        m.media_files,
        m.media_elsewhere
            .map(|w| format!("; media in {w} is not included"))
            .unwrap_or_default(),
        m.created_at
    );
    Ok(())
}
