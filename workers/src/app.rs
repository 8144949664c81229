//! Building and running a worker process: connect, ensure the bus, open the
//! store, then supervise the roles. The first role to fail stops the others
//! and the process exits non-zero, so an orchestrator restarts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use msgr_core::auth::token::TokenSigner;
use msgr_core::store::Store;
use msgr_store_sqlite::{Durability, SqliteStore};
use tokio_util::sync::CancellationToken;

use crate::config::{StoreConfig, WorkerConfig};
use crate::context::WorkerContext;

/// The command stream's partition count, or [`crate::config::DEFAULT_PARTITIONS`]
/// for a new stream. JetStream may still be starting: asked a few times.
async fn resolve_partitions(js: &async_nats::jetstream::Context) -> u32 {
    for attempt in 0..20 {
        match msgr_nats::stream::existing_partitions(js).await {
            Ok(Some(p)) => return p,
            Ok(None) => return crate::config::DEFAULT_PARTITIONS,
            Err(e) => {
                if attempt % 5 == 0 {
                    tracing::warn!(error = %e, "reading the command stream's partitions; retrying");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    crate::config::DEFAULT_PARTITIONS
}

/// Roles a worker process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every role below.
    All,
    /// Sequencer/persister with receipts and inbox fan-out.
    Sequencer,
    /// Register, login, user lookup, edge bootstrap.
    Account,
    /// History, chat list, message lookup.
    Query,
    /// Group create/add/remove, group page, message receipts.
    Group,
    /// Media registration and read authorization.
    Media,
    /// Thumbnails of uploaded images.
    Thumbnail,
}

/// A worker process, built and ready to run.
pub struct WorkerApp {
    ctx: Arc<WorkerContext>,
    roles: Vec<Role>,
    metrics: Option<tokio::net::TcpListener>,
    link: tokio::sync::watch::Receiver<msgr_nats::connect::Link>,
}

fn load_or_create_key(path: &Path) -> anyhow::Result<TokenSigner> {
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return TokenSigner::from_secret_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a PASETO v4 secret key: {e}", path.display()));
    }
    let signer = TokenSigner::generate().map_err(|e| anyhow::anyhow!("generating key: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write to a temp file and rename, so two workers starting at once cannot
    // leave a torn key; the loser then reads the winner's key.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(signer.secret_bytes())?;
        f.sync_all()?;
    }
    if std::fs::hard_link(&tmp, path).is_err() && !path.is_file() {
        anyhow::bail!("could not install key at {}", path.display());
    }
    let _ = std::fs::remove_file(&tmp);
    let bytes = std::fs::read(path)?;
    TokenSigner::from_secret_bytes(&bytes).map_err(|e| anyhow::anyhow!("reading back key: {e}"))
}

/// Connects to NATS (any of the comma-separated servers), retrying until one
/// answers (it may still be starting); returns the client and its link state.
pub async fn connect_nats(
    nats: &msgr_core::config::NatsConfig,
    name: &str,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::watch::Receiver<msgr_nats::connect::Link>,
)> {
    let mut options = async_nats::ConnectOptions::new().subscription_capacity(8192);
    if let Some((user, password)) = nats.credentials().map_err(anyhow::Error::msg)? {
        options = options.user_and_password(user, password);
    }
    msgr_nats::connect::connect(&nats.url, name, options)
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.url))
}

impl WorkerApp {
    /// Connects, creates streams and consumers, opens the store, loads keys,
    /// binds the metrics listener. Fails fast on anything wrong.
    ///
    /// # Errors
    /// Any of the above failing, with context.
    pub async fn build(mut config: WorkerConfig, roles: Vec<Role>) -> anyhow::Result<Self> {
        let _ = msgr_core::telemetry::prometheus();
        if argon2::Params::new(
            config.password_memory_kib,
            config.password_iterations,
            1,
            None,
        )
        .is_err()
        {
            anyhow::bail!("password_memory_kib / password_iterations are outside argon2's range");
        }
        if config.partitions > 1024 {
            anyhow::bail!(
                "partitions must be 1..=1024 (or 0: the stream's), got {}",
                config.partitions
            );
        }
        let roles = if roles.is_empty() || roles.contains(&Role::All) {
            vec![
                Role::Sequencer,
                Role::Account,
                Role::Query,
                Role::Group,
                Role::Media,
                Role::Thumbnail,
            ]
        } else {
            roles
        };
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Sqlite { path, durability } => {
                let path: PathBuf = path
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("msgr.sqlite3"));
                let durability = match durability.as_str() {
                    "full" => Durability::Full,
                    "normal" => Durability::Normal,
                    other => {
                        anyhow::bail!("store.durability must be full or normal, got {other:?}")
                    }
                };
                Arc::new(
                    SqliteStore::open(&path, durability)
                        .with_context(|| format!("opening SQLite at {}", path.display()))?,
                )
            }
            StoreConfig::Postgres { url, pool_size } => {
                // A database that is down or still recovering (after a crash,
                // or when everything starts at once) is waited for; a malformed
                // URL is not.
                let mut waited = std::time::Instant::now();
                let store = loop {
                    match msgr_store_postgres::PgStore::connect(url, *pool_size).await {
                        Ok(s) => break s,
                        Err(e) if e.to_string().contains("bad PostgreSQL URL") => {
                            return Err(anyhow::anyhow!(e).context("connecting to PostgreSQL"))
                        }
                        Err(e) => {
                            if waited.elapsed() > Duration::from_secs(5) {
                                tracing::warn!(error = %e, "waiting for PostgreSQL");
                                waited = std::time::Instant::now();
                            }
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                };
                Arc::new(store)
            }
        };
        let key_path = config
            .secret_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("paseto-v4.secret"));
        let signer = Arc::new(load_or_create_key(&key_path)?);
        let cost = msgr_core::auth::password::Cost {
            memory_kib: config.password_memory_kib,
            iterations: config.password_iterations,
        };
        let dummy_hash = tokio::task::spawn_blocking(move || {
            msgr_core::auth::password::hash_with(&msgr_core::id::new_user_id(), cost)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;

        let media = msgr_core::media::open(&config.media, &config.data_dir)
            .map_err(|e| anyhow::anyhow!("media store: {e}"))?;
        let (nats, link) = connect_nats(&config.nats, "msgr-worker").await?;
        let js = async_nats::jetstream::new(nats.clone());
        if config.partitions == 0 {
            config.partitions = resolve_partitions(&js).await;
        }
        let bus = crate::context::BusSpec {
            partitions: config.partitions,
            lease_ttl: Duration::from_millis(config.lease_ttl_ms.max(200)),
            max_ack_pending: config.batch_max.max(1),
            replicas: config.replicas.max(1),
            limits: msgr_nats::stream::CommandLogLimits {
                max_age: Duration::from_secs(config.command_max_age_secs.max(60)),
                consumer_idle: Duration::from_secs(config.consumer_idle_secs.max(1)),
            },
        };
        // JetStream may still be electing leaders (a cluster starting, or
        // coming back from losing every node): wait for it, with short
        // requests, rather than exit and be restarted.
        let quick = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(nats.clone());
        let mut waited = std::time::Instant::now();
        let leases = loop {
            match bus.ensure(&quick).await {
                Ok(l) => break l,
                Err(e @ msgr_nats::stream::EnsureError::JetStream(_)) => {
                    if waited.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(error = %e, "waiting for JetStream to create the streams");
                        waited = std::time::Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(anyhow::anyhow!(e).context("creating streams and consumers")),
            }
        };

        let metrics = if config.metrics_listen.is_empty() {
            None
        } else {
            Some(
                tokio::net::TcpListener::bind(&config.metrics_listen)
                    .await
                    .with_context(|| format!("binding metrics on {}", config.metrics_listen))?,
            )
        };
        let instance_id = config.instance_id.clone().unwrap_or_else(|| {
            format!(
                "worker-{}-{}",
                std::process::id(),
                &msgr_core::id::new_user_id()[1..9]
            )
        });
        msgr_core::telemetry::build_info("worker", &instance_id);
        Ok(Self {
            ctx: Arc::new(WorkerContext {
                config,
                nats,
                js,
                store,
                signer,
                leases,
                instance_id,
                dummy_hash,
                media,
                bus,
                health: msgr_nats::health::Health::new(),
                link: link.clone(),
                bus_check: tokio::sync::Notify::new(),
                routes: crate::deliver::Routes::default(),
            }),
            roles,
            metrics,
            link,
        })
    }

    /// Where `/metrics` is served, if enabled.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The token signer (tests forge expired tokens with it).
    #[must_use]
    pub fn signer(&self) -> Arc<TokenSigner> {
        Arc::clone(&self.ctx.signer)
    }

    /// Runs the roles until `shutdown` is cancelled or one fails.
    ///
    /// # Errors
    /// The first role error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(listener) = self.metrics {
            let token = shutdown.clone();
            let health = self.ctx.health.clone();
            tasks.spawn(async move {
                let app = axum::Router::new()
                    .route(
                        "/metrics",
                        axum::routing::get(|| std::future::ready(msgr_core::telemetry::render())),
                    )
                    .route(
                        "/healthz",
                        axum::routing::get(move || std::future::ready(healthz(&health))),
                    );
                axum::serve(listener, app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .context("metrics server")
            });
        }
        tokio::spawn(msgr_nats::connect::report_link(
            self.link.clone(),
            self.ctx.health.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::keeper::run(
            Arc::clone(&self.ctx),
            self.link.clone(),
            shutdown.clone(),
        ));
        // Where users are connected: asked of every edge now, so that the
        // first batches already reach them.
        tasks.spawn(crate::deliver::run_routes(
            Arc::clone(&self.ctx),
            shutdown.clone(),
        ));
        tokio::time::sleep(crate::deliver::ROUTES_SETTLE).await;
        for role in &self.roles {
            let (ctx, token) = (Arc::clone(&self.ctx), shutdown.clone());
            match role {
                Role::Sequencer => tasks.spawn(crate::sequencer::run(ctx, token)),
                Role::Account => {
                    tasks.spawn(crate::social::run(Arc::clone(&ctx), token.clone()));
                    tasks.spawn(crate::account::run(ctx, token))
                }
                Role::Query => tasks.spawn(crate::query::run(ctx, token)),
                Role::Group => tasks.spawn(crate::group::run(ctx, token)),
                Role::Media => tasks.spawn(crate::media::run(ctx, token)),
                Role::Thumbnail => {
                    tasks.spawn(crate::media::run_removals(Arc::clone(&ctx), token.clone()));
                    tasks.spawn(crate::media::run_thumbnails(ctx, token))
                }
                Role::All => continue,
            };
        }
        tracing::info!(instance = %self.ctx.instance_id, roles = ?self.roles, "worker running");
        let mut result = Ok(());
        while let Some(res) = tasks.join_next().await {
            let res = res
                .map_err(|e| anyhow::anyhow!("role panicked: {e}"))
                .and_then(|r| r);
            if let Err(e) = res {
                if result.is_ok() {
                    result = Err(e);
                }
                shutdown.cancel();
            }
        }
        // Deliver what is buffered (fan-out, acks) before the connection drops;
        // bounded, since a flush waits for a server that may be gone for good.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ctx.nats.flush()).await;
        result
    }
}

/// `/healthz`: 200 `{"status":"ready"}`, or 503 with what keeps this worker
/// from making progress (NATS link, bus definitions, store, leases).
fn healthz(health: &msgr_nats::health::Health) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (status, body) = health.report();
    (
        axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
