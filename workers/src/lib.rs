//! Stateless workers: everything behind the bus that touches the store.
//!
//! # Layout
//! - [`app`]: build a worker process and supervise its roles.
//! - [`sequencer`]: per-partition sequencer/persister with receipts and inbox fan-out.
//! - [`account`]: register/login/users/bootstrap over request/reply.
//! - [`query`]: history, chat list, lookup over request/reply.
//! - [`group`]: group create/add/remove, group page, per-member receipts.
//! - [`media`]: media registration/authorization and the thumbnail worker.
//! - [`backup`]: backups of the one-machine store (`msgr-backup`).
//! - `social`: blocking, presence privacy and watch rights, group typing.
//! - `balance`: shares the partitions among the live workers.
//! - `keeper`: re-creates streams, consumers and buckets the bus may have lost.
//! - [`config`]: configuration. `context`, `convert`, `rpc`: shared plumbing.

pub mod account;
pub mod app;
pub mod backup;
mod balance;
pub mod config;
pub mod context;
mod convert;
pub mod deliver;
pub mod group;
mod keeper;
pub mod media;
pub mod query;
mod rpc;
pub mod sequencer;
mod social;

pub use app::{Role, WorkerApp};
pub use config::WorkerConfig;

/// The `msgr-worker` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "msgr-worker",
    version,
    about = "msgr workers: sequencer, account and query services"
)]
pub struct Cli {
    /// TOML config file (keys as in WorkerConfig; `MSGR_*` env overrides it).
    #[arg(long, short, env = "MSGR_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Roles to run.
    #[arg(value_enum, default_values_t = [Role::All])]
    pub roles: Vec<Role>,
}

/// Entry point shared by `msgr-worker` and the test binary: parse the CLI,
/// load config, run until Ctrl-C / SIGTERM.
///
/// # Errors
/// Bad config or a failed role.
pub async fn main_entry() -> anyhow::Result<()> {
    use clap::Parser as _;
    let cli = Cli::parse();
    msgr_core::telemetry::init_tracing("info,async_nats=warn");
    let config: WorkerConfig = msgr_core::config::load(cli.config.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let app = WorkerApp::build(config, cli.roles).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        msgr_core::shutdown::signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    app.run_until_stopped(shutdown).await
}
