//! Building and running an edge: connect to NATS, bootstrap from the workers
//! (token public key, partition count), bind, serve until shutdown.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::routing::{get, post};
use axum::Router;
use msgr_core::auth::token::TokenVerifier;
use msgr_nats::{rpc, subject};
use msgr_schemas::pb::v1 as pb;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;
use crate::error::ApiError;
use crate::state::{EdgeState, Inner};

/// An edge, bound and ready to serve.
pub struct EdgeApp {
    state: EdgeState,
    listener: tokio::net::TcpListener,
    /// Set when the config names a certificate and key.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The HTTP routes of the client contract.
pub fn router(state: EdgeState) -> Router {
    let mut app = Router::new()
        .route("/user/register", post(crate::routes::user::register))
        .route("/user/login", post(crate::routes::user::login))
        .route(
            "/user",
            axum::routing::delete(crate::routes::user::delete_account),
        )
        .route("/user/export", get(crate::routes::user::export))
        .route("/user/logout", post(crate::routes::user::logout))
        .route("/user/token", post(crate::routes::user::refresh))
        .route(
            "/user/sessions",
            get(crate::routes::user::sessions).delete(crate::routes::user::revoke_all),
        )
        .route(
            "/user/sessions/{session_id}",
            axum::routing::delete(crate::routes::user::revoke_one),
        )
        .route(
            "/user/blocks",
            get(crate::routes::privacy::list).post(crate::routes::privacy::block),
        )
        .route(
            "/user/blocks/{user_id}",
            axum::routing::delete(crate::routes::privacy::unblock),
        )
        .route(
            "/user/privacy",
            get(crate::routes::privacy::get).put(crate::routes::privacy::set),
        )
        .route("/users", get(crate::routes::users::find))
        .route("/users/{user_id}", get(crate::routes::users::get))
        .route("/chat/{user_id}", get(crate::routes::chat::list))
        .route("/messages/send", get(crate::ws::upgrade))
        .route(
            "/messages/{user_id}/{receiver_id}",
            get(crate::routes::messages::history),
        )
        .route(
            "/conversations/{conversation_id}/changes",
            get(crate::routes::messages::changes),
        )
        .route("/groups/create", post(crate::routes::groups::create))
        .route("/groups/{group_id}", get(crate::routes::groups::get))
        .route("/groups/{group_id}/add", post(crate::routes::groups::add))
        .route(
            "/groups/{group_id}/remove",
            axum::routing::delete(crate::routes::groups::remove),
        )
        .route(
            "/groups/{group_id}/messages/{seq}/receipts",
            get(crate::routes::groups::receipts),
        )
        .route(
            "/media",
            post(crate::routes::media::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/media/{media_id}", get(crate::routes::media::download))
        .route(
            "/media/{media_id}/thumbnail",
            get(crate::routes::media::thumbnail),
        )
        .route("/healthz", get(crate::routes::health::healthz))
        .route("/metrics", get(crate::routes::health::metrics))
        .route("/openapi.yaml", get(crate::routes::health::openapi));
    app = crate::web::routes(app, state.config.web_dir.clone());
    let hsts_header = state
        .config
        .tls
        .as_ref()
        .filter(|t| t.hsts_max_age_secs > 0)
        .and_then(|t| {
            axum::http::HeaderValue::from_str(&format!("max-age={}", t.hsts_max_age_secs)).ok()
        });
    app.fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
        })
        .layer(axum::middleware::map_response(move |r| {
            hsts(r, hsts_header.clone())
        }))
        .with_state(state)
}

/// Adds `Strict-Transport-Security` when the edge serves TLS.
async fn hsts(
    mut r: axum::response::Response,
    value: Option<axum::http::HeaderValue>,
) -> axum::response::Response {
    if let Some(v) = value {
        r.headers_mut()
            .insert(axum::http::header::STRICT_TRANSPORT_SECURITY, v);
    }
    r
}

async fn bootstrap(
    nats: &async_nats::Client,
    within: Duration,
) -> anyhow::Result<pb::BootstrapResponse> {
    let deadline = Instant::now() + within;
    let mut warned = Instant::now();
    loop {
        match rpc::call(
            nats,
            subject::rpc::BOOTSTRAP,
            &pb::BootstrapRequest {},
            Duration::from_secs(2),
        )
        .await
        {
            Ok(b) => return Ok(b),
            Err(e) => {
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "no worker answered {} within {within:?}: {e}",
                        subject::rpc::BOOTSTRAP
                    );
                }
                if warned.elapsed() > Duration::from_secs(5) {
                    tracing::info!("waiting for a worker to answer the bootstrap call");
                    warned = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl EdgeApp {
    /// Connects to NATS, fetches the bootstrap data and binds the listener.
    ///
    /// # Errors
    /// NATS unreachable, no worker answering, or the address in use.
    pub async fn build(config: EdgeConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // Install the recorder before anything records a metric.
        let _ = msgr_core::telemetry::prometheus();
        metrics::gauge!("msgr_edge_max_connections").set(config.max_connections as f64);
        crate::limit::describe();
        // Counters alerted on exist from the start, at 0, so rates are defined.
        for c in [
            "msgr_edge_slow_clients_closed_total",
            "msgr_edge_ack_checks_total",
            "msgr_edge_acks_from_store_total",
            "msgr_edge_sends_republished_total",
        ] {
            metrics::counter!(c).increment(0);
        }
        for outcome in ["ok", "too_large", "refused", "failed"] {
            metrics::counter!("msgr_edge_media_uploads_total", "outcome" => outcome).increment(0);
        }
        // Events wait here only until the pump or dispatcher moves them to
        // connection mailboxes (which are bounded per connection).
        let mut options =
            async_nats::ConnectOptions::new().subscription_capacity(match config.inbox {
                crate::ws::InboxMode::PerUser => 1024,
                crate::ws::InboxMode::Wildcard => 65_536,
                // One message per batch, each carrying many events.
                crate::ws::InboxMode::Routed => 8_192,
            });
        if let Some((user, password)) = config.nats.credentials().map_err(anyhow::Error::msg)? {
            options = options.user_and_password(user, password);
        }
        let (nats, link) = msgr_nats::connect::connect(&config.nats.url, "msgr-edge", options)
            .await
            .with_context(|| format!("connecting to NATS at {}", config.nats.url))?;
        let health = msgr_nats::health::Health::new();
        tokio::spawn(msgr_nats::connect::report_link(
            link.clone(),
            health.clone(),
            shutdown.clone(),
        ));
        let edge_id = config
            .edge_id
            .clone()
            .unwrap_or_else(|| format!("edge-{}", &msgr_core::id::new_user_id()[1..9]));
        let inbox = crate::ws::Inbox::start(config.inbox, &nats, link.clone(), &edge_id)
            .await
            .context("subscribing to inboxes")?;
        let boot = bootstrap(&nats, Duration::from_secs(config.bootstrap_timeout_secs)).await?;
        let verifier = TokenVerifier::from_public_bytes(&boot.token_public_key)
            .map_err(|e| anyhow::anyhow!("bad token public key from bootstrap: {e}"))?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::acceptor)
            .transpose()
            .context("TLS")?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        msgr_core::telemetry::build_info("edge", &edge_id);
        let js = async_nats::jetstream::new(nats.clone());
        let media = msgr_core::media::open(&config.media, &config.data_dir)
            .map_err(|e| anyhow::anyhow!("media store: {e}"))?;
        let state = EdgeState {
            inner: Arc::new(Inner {
                connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
                limits: crate::limit::Limits::new(config.limits.clone()),
                revoked: crate::revoked::Revocations::default(),
                presence: crate::ws::Presence::default(),
                config,
                edge_id,
                nats,
                commands: crate::commands::Commands::start(js.clone(), boot.partitions.max(1)),
                js,
                verifier,
                partitions: boot.partitions.max(1),
                next_conn_id: AtomicU64::new(1),
                shutdown,
                media,
                inbox,
                tracker: tokio_util::task::TaskTracker::new(),
                health,
            }),
        };
        tokio::spawn(crate::revoked::follow(state.clone()));
        if state.config.presence {
            tokio::spawn(crate::ws::presence::run(state.clone()));
        }
        Ok(Self {
            state,
            listener,
            tls,
        })
    }

    /// The bound address (port 0 in tests resolves here).
    ///
    /// # Errors
    /// If the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then closes every
    /// WebSocket with 1001 and waits (bounded) for the sessions to end.
    ///
    /// # Errors
    /// If the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = self.state.clone();
        tracing::info!(addr = ?self.listener.local_addr().ok(), edge = %state.edge_id, "edge serving");
        let token = state.shutdown.clone();
        let app = router(self.state).into_make_service_with_connect_info::<crate::tls::Peer>();
        match self.tls {
            Some(acceptor) => {
                let listener = crate::tls::TlsListener::new(self.listener, acceptor)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .context("serving HTTPS")?;
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .context("serving HTTP")?;
            }
        }
        state.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not end within 5 s");
        }
        // Bounded: a flush waits for a server that may be gone for good.
        let _ = tokio::time::timeout(Duration::from_secs(2), state.nats.flush()).await;
        Ok(())
    }
}
