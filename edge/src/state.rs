//! Shared state of one edge process, passed to handlers through axum `State`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use msgr_core::auth::token::TokenVerifier;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::EdgeConfig;

/// Everything handlers need; cheap to clone.
#[derive(Clone)]
pub struct EdgeState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub config: EdgeConfig,
    pub edge_id: String,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    /// Commands to the bus, batched per partition.
    pub commands: crate::commands::Commands,
    pub verifier: TokenVerifier,
    /// Partition count of the command stream (from the bootstrap call).
    pub partitions: u32,
    /// One permit per open WebSocket.
    pub connections: Arc<Semaphore>,
    pub next_conn_id: AtomicU64,
    /// Cancelled on shutdown: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// The media object store.
    pub media: msgr_core::media::MediaStore,
    /// Per-user inbox subscriptions of this edge's connections.
    pub inbox: crate::ws::Inbox,
    /// Every WebSocket session, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
    /// What keeps this edge from serving (the NATS link), for `/healthz`.
    pub health: msgr_nats::health::Health,
    /// Rate limits of this edge.
    pub limits: crate::limit::Limits,
    /// Revoked sessions (followed from `MSGR_REVOKED`).
    pub revoked: crate::revoked::Revocations,
    /// Who is connected here, and who watches whose presence.
    pub presence: crate::ws::Presence,
}

impl std::ops::Deref for EdgeState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.config.rpc_timeout_ms.max(1))
    }

    /// How long a send may wait for its `ack` before the edge asks the store.
    pub fn ack_check_after(&self) -> Duration {
        Duration::from_millis(self.config.ack_check_ms.max(100))
    }
}
