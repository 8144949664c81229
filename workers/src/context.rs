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
}

impl WorkerContext {
    /// The partition lease TTL.
    #[must_use]
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.config.lease_ttl_ms.max(200))
    }
}
