//! What every worker role shares. Passed explicitly; there are no globals.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use msgr_core::auth::token::TokenSigner;
use msgr_core::store::Store;

use crate::config::WorkerConfig;

/// Shared state of one worker process.
pub struct WorkerContext {
    pub config: WorkerConfig,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub store: Arc<dyn Store>,
    pub signer: Arc<TokenSigner>,
    pub leases: jetstream::kv::Store,
    /// Name of this process in leases and logs.
    pub instance_id: String,
    /// argon2 hash of a random password: login for an unknown user verifies
    /// against it so that it takes as long as for a known one.
    pub dummy_hash: String,
    /// The media object store (thumbnails).
    pub media: msgr_core::media::MediaStore,
    /// What this worker needs on the bus, to re-create it when missing.
    pub bus: BusSpec,
    /// What keeps this worker from making progress (`/healthz`).
    pub health: msgr_nats::health::Health,
    /// The NATS link's state (a holder seats its partitions again after a reconnect).
    pub link: tokio::sync::watch::Receiver<msgr_nats::connect::Link>,
    /// Wakes the bus keeper to check the bus now (after an error that
    /// suggests something it depends on is gone).
    pub bus_check: tokio::sync::Notify,
    /// Which users each `routed` edge holds.
    pub routes: crate::deliver::Routes,
}

/// The streams, consumers and lease bucket a worker depends on.
#[derive(Debug, Clone, Copy)]
pub struct BusSpec {
    pub partitions: u32,
    pub lease_ttl: Duration,
    pub max_ack_pending: usize,
    pub replicas: usize,
    pub limits: msgr_nats::stream::CommandLogLimits,
}

impl BusSpec {
    /// Creates whatever is missing; returns the lease bucket.
    ///
    /// # Errors
    /// JetStream failures, or definitions that conflict with this worker's.
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
    ) -> Result<jetstream::kv::Store, msgr_nats::stream::EnsureError> {
        msgr_nats::stream::ensure_all_with(
            js,
            self.partitions,
            self.lease_ttl,
            self.max_ack_pending,
            self.replicas,
            self.limits,
        )
        .await
    }
}

impl WorkerContext {
    /// The partition lease TTL.
    #[must_use]
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.config.lease_ttl_ms.max(200))
    }
}
