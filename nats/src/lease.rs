//! A lease in a JetStream KV bucket whose `max_age` is the lease TTL.
//!
//! Acquire is `create` (fails while another holder's entry exists); renew is
//! `update` with the last revision (fails if anyone else wrote). An entry that
//! is not renewed ages out of the bucket, freeing the lease for a standby.
//! The holder must stop acting once [`Lease::valid_until`] has passed without a
//! successful renewal, so two holders never act at once as long as clocks run
//! at similar speeds.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    key: String,
    revision: u64,
    owner: bytes::Bytes,
    valid_until: Instant,
    ttl: Duration,
}

/// A renewal that succeeded, to apply with [`Lease::renewed`].
#[derive(Debug)]
pub struct Renewed {
    revision: u64,
    started: Instant,
}

/// Why a lease could not be acquired or renewed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease is held by someone else")]
    Taken,
    #[error("lease store: {0}")]
    Store(String),
}

impl Lease {
    /// Tries to take `key`. `Err(Taken)` while someone else holds it.
    ///
    /// # Errors
    /// [`LeaseError::Taken`], or a store failure.
    pub async fn acquire(
        bucket: &kv::Store,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Self, LeaseError> {
        let started = Instant::now();
        let owner = bytes::Bytes::copy_from_slice(owner.as_bytes());
        match bucket.create(key, owner.clone()).await {
            Ok(revision) => Ok(Self {
                key: key.to_owned(),
                revision,
                owner,
                // Count the TTL from before the request: the entry's age on the
                // server started no earlier than that.
                valid_until: started + ttl.mul_f32(0.8),
                ttl,
            }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                // Still ours from before (our renewals failed while the bus was
                // away, and the entry has not aged out yet): nobody else can
                // have taken it while it exists under our name, so take it up
                // again at once instead of waiting for it to age out.
                match bucket.entry(key).await {
                    Ok(Some(entry))
                        if entry.value == owner && entry.operation == kv::Operation::Put =>
                    {
                        let started = Instant::now();
                        match bucket.update(key, owner.clone(), entry.revision).await {
                            Ok(revision) => Ok(Self {
                                key: key.to_owned(),
                                revision,
                                owner,
                                valid_until: started + ttl.mul_f32(0.8),
                                ttl,
                            }),
                            Err(_) => Err(LeaseError::Taken),
                        }
                    }
                    _ => Err(LeaseError::Taken),
                }
            }
            Err(e) => Err(LeaseError::Store(e.to_string())),
        }
    }

    /// Extends the lease by another TTL.
    ///
    /// # Errors
    /// [`LeaseError::Taken`] if the entry changed hands; a store failure.
    pub async fn renew(&mut self, bucket: &kv::Store) -> Result<(), LeaseError> {
        let renewed = self.renewal(bucket).await?;
        self.renewed(renewed);
        Ok(())
    }

    /// The renewal request on its own, borrowing nothing, so the holder can
    /// keep working (and keep checking [`Lease::is_valid`]) while it is in
    /// flight; apply its outcome with [`Lease::renewed`].
    pub fn renewal(
        &self,
        bucket: &kv::Store,
    ) -> impl std::future::Future<Output = Result<Renewed, LeaseError>> + Send + 'static {
        let (bucket, key, owner, revision) = (
            bucket.clone(),
            self.key.clone(),
            self.owner.clone(),
            self.revision,
        );
        async move {
            let started = Instant::now();
            match bucket.update(&key, owner, revision).await {
                Ok(revision) => Ok(Renewed { revision, started }),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Err(LeaseError::Taken)
                }
                Err(e) => Err(LeaseError::Store(e.to_string())),
            }
        }
    }

    /// Applies a successful [`Lease::renewal`]: the TTL counts from before
    /// its request was sent.
    pub fn renewed(&mut self, r: Renewed) {
        self.revision = r.revision;
        self.valid_until = r.started + self.ttl.mul_f32(0.8);
    }

    /// Gives the lease up at once so a standby need not wait for the TTL.
    /// The holder must not act on it afterwards.
    pub async fn release(&self, bucket: &kv::Store) {
        if let Err(e) = bucket
            .purge_expect_revision(&self.key, Some(self.revision))
            .await
        {
            tracing::debug!(key = %self.key, error = %e, "lease release failed; it will age out");
        }
    }

    /// Until when this holder may act without a further renewal.
    #[must_use]
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the lease is still safe to act on.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}
