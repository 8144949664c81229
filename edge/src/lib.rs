//! The edge: terminates WebSocket and HTTP clients, verifies tokens, validates
//! frames, publishes commands to JetStream and pushes inbox events. It holds
//! no database connection: reads and account operations are request/reply
//! calls to the workers.
//!
//! # Layout
//! - [`app`]: build (connect, bootstrap, bind) and run an edge.
//! - [`routes`]: REST endpoints, one module per resource.
//! - [`ws`]: `WS /messages/send` sessions.
//! - [`auth`]: the bearer-token extractor. [`error`]: the REST error body.
//! - [`limit`]: rate limits and login-failure locks. [`tls`]: HTTPS/WSS.
//! - [`config`], [`state`], `convert` (bus protobuf → client JSON).

pub mod app;
pub mod auth;
pub mod commands;
pub mod config;
mod convert;
pub mod error;
pub mod limit;
pub mod revoked;
pub mod routes;
pub mod state;
pub mod tls;
pub mod web;
pub mod ws;

pub use app::EdgeApp;
pub use config::EdgeConfig;

/// The `msgr-edge` command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "msgr-edge",
    version,
    about = "msgr edge: WebSocket and HTTP front of the messenger"
)]
pub struct Cli {
    /// TOML config file (keys as in EdgeConfig; `MSGR_*` env overrides it).
    #[arg(long, short, env = "MSGR_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

/// Entry point of `msgr-edge`: parse the CLI, load config, serve until
/// Ctrl-C / SIGTERM.
///
/// # Errors
/// Bad config, NATS unreachable, no worker, address in use.
pub async fn main_entry() -> anyhow::Result<()> {
    use clap::Parser as _;
    let cli = Cli::parse();
    msgr_core::telemetry::init_tracing("info,async_nats=warn");
    let config: EdgeConfig = msgr_core::config::load(cli.config.as_deref())
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let signal = tokio::spawn(async move {
        msgr_core::shutdown::signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    let app = tokio::select! {
        app = EdgeApp::build(config, shutdown.clone()) => app?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let res = app.run_until_stopped().await;
    signal.abort();
    res
}
