//! Stream, consumer and bucket definitions as code. Workers call
//! [`ensure_all`] at start and again whenever the bus may have lost them (a
//! reconnect, a periodic check, an error naming a missing stream): it is
//! idempotent, creates only what is missing, and checks that the partition
//! count matches the stream's (changing it would reorder conversations).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use crate::subject;

/// The command stream: every `send` and `receipt` from edges, kept until the
/// sequencer (and any integrator consumer) has acked it.
pub const IN_STREAM: &str = "MSGR_IN";
/// Media events (uploads to thumbnail), kept until the thumbnail worker acks.
pub const MEDIA_STREAM: &str = "MSGR_MEDIA";
/// The durable consumer that makes thumbnails.
pub const THUMBNAIL_CONSUMER: &str = "THUMBS";
/// The bucket of partition leases.
pub const LEASE_BUCKET: &str = "MSGR_LEASES";
/// The bucket of revoked sessions (key: session id, value: user id), which
/// every edge watches.
pub const REVOKED_BUCKET: &str = "MSGR_REVOKED";
/// How long a revocation is kept: longer than any token lives
/// (`token_ttl_secs` is at most this).
pub const REVOCATION_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Metadata key recording the partition count on the stream.
const PARTITIONS_KEY: &str = "msgr.partitions";

/// The partition count recorded on the command stream, if it exists.
///
/// # Errors
/// JetStream failures other than the stream being absent.
pub async fn existing_partitions(js: &jetstream::Context) -> Result<Option<u32>, EnsureError> {
    let mut s = match js.get_stream(IN_STREAM).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(js_err(e)),
    };
    let info = s.info().await.map_err(js_err)?;
    Ok(info
        .config
        .metadata
        .get(PARTITIONS_KEY)
        .and_then(|v| v.parse().ok()))
}

/// The command stream's subjects: single commands (v1) and batches (v2).
fn in_subjects() -> Vec<String> {
    vec![subject::IN_ALL.to_owned(), subject::v2::IN_ALL.to_owned()]
}

/// The durable consumer a sequencer holding `partition` under claim
/// `epoch` pulls from: `SEQ_<p>_<epoch>`. Each new holder makes its own,
/// starting right after the point its store records, and deletes the ones
/// before it; the one with epoch 0 is made by [`ensure_all`] so that a
/// partition nobody holds yet still keeps its commands (interest retention).
#[must_use]
pub fn sequencer_consumer(partition: u32, epoch: u64) -> String {
    format!("SEQ_{partition}_{epoch}")
}

/// Whether `name` is one of `partition`'s sequencer consumers (including
/// `SEQ_<p>`, the single durable consumer of earlier releases).
#[must_use]
pub fn is_sequencer_consumer_of(name: &str, partition: u32) -> bool {
    sequencer_consumer_epoch(name, partition).is_some()
}

/// The claim epoch in the name of one of `partition`'s sequencer consumers
/// (0 for `SEQ_<p>` of earlier releases); `None` for any other name.
#[must_use]
pub fn sequencer_consumer_epoch(name: &str, partition: u32) -> Option<u64> {
    let bare = format!("SEQ_{partition}");
    if name == bare {
        return Some(0);
    }
    let epoch = name.strip_prefix(&bare)?.strip_prefix('_')?;
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    epoch.parse().ok()
}

/// How long a pulled command may stay unacked before JetStream offers it
/// again. Takeovers do not wait for it (a new holder gets a consumer of its
/// own), so it only bounds a command lost in transit to a live holder,
/// which notices the gap first anyway.
pub const SEQUENCER_ACK_WAIT: Duration = Duration::from_secs(30);

/// The configuration of a sequencer consumer that starts after stream
/// sequence `start_after` (0: from the first command the stream holds).
#[must_use]
pub fn sequencer_consumer_config(
    partition: u32,
    name: &str,
    start_after: u64,
    max_ack_pending: usize,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        // The partition's single commands (v1) and batches (v2), in stream order.
        filter_subjects: vec![
            subject::in_partition(partition),
            subject::v2::in_partition(partition),
        ],
        deliver_policy: if start_after == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start_after + 1,
            }
        },
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: SEQUENCER_ACK_WAIT,
        max_ack_pending: i64::try_from(max_ack_pending).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// The identity of the command stream's current incarnation (its creation
/// time): stream sequences restart when it is re-created, and a store's
/// resume point for an older incarnation must not be used.
///
/// # Errors
/// JetStream failures.
pub async fn command_log_identity(js: &jetstream::Context) -> Result<String, EnsureError> {
    let mut s = js.get_stream(IN_STREAM).await.map_err(js_err)?;
    let info = s.info().await.map_err(js_err)?;
    Ok(format!(
        "{IN_STREAM}@{}",
        info.created.unix_timestamp_nanos()
    ))
}

/// Makes the consumer of `partition` for claim `epoch` (starting after
/// `start_after`), then, [`STALE_CONSUMER_GRACE`] later and in the
/// background, deletes the partition's sequencer consumers of older claims:
/// a previous holder's pull requests end with its consumer, so nothing new
/// reaches a holder that lost the partition (the store's fence keeps it from
/// committing meanwhile).
///
/// Why later: with interest retention, deleting a consumer drops every
/// command no other consumer needs, and in a cluster the stream's leader may
/// learn of the new consumer after it applies the delete (a node that has
/// just restarted and is catching up, say): the commands in between were
/// dropped, published again by the edges, and stored out of their senders'
/// order. Deleting right away also held the takeover for up to 10 s when the
/// old consumer's leader had died.
///
/// # Errors
/// JetStream failures.
pub async fn seat_sequencer(
    js: &jetstream::Context,
    partition: u32,
    epoch: u64,
    start_after: u64,
    max_ack_pending: usize,
) -> Result<consumer::PullConsumer, EnsureError> {
    let s = js.get_stream(IN_STREAM).await.map_err(js_err)?;
    let name = sequencer_consumer(partition, epoch);
    let consumer = s
        .get_or_create_consumer(
            &name,
            sequencer_consumer_config(partition, &name, start_after, max_ack_pending),
        )
        .await
        .map_err(js_err)?;
    tokio::spawn(async move {
        tokio::time::sleep(STALE_CONSUMER_GRACE).await;
        delete_older_sequencers(&s, partition, epoch).await;
    });
    Ok(consumer)
}

/// How long a new holder's consumer exists before the older claims' go.
pub const STALE_CONSUMER_GRACE: Duration = Duration::from_secs(5);

/// Deletes `partition`'s sequencer consumers of claims older than `epoch`.
async fn delete_older_sequencers(s: &jetstream::stream::Stream, partition: u32, epoch: u64) {
    let mut names = s.consumer_names();
    let mut stale = Vec::new();
    while let Some(n) = futures_util::StreamExt::next(&mut names).await {
        let Ok(n) = n else {
            // The next holder's seat (or this one's next) tries again.
            return;
        };
        // Only older claims' consumers: two holders seating at once (one
        // that has just lost the lease and does not know it yet) must not
        // delete each other's, leaving the partition with none (interest
        // retention would drop the commands published meanwhile).
        if sequencer_consumer_epoch(&n, partition).is_some_and(|e| e < epoch) {
            stale.push(n);
        }
    }
    for n in stale {
        if let Err(e) = s.delete_consumer(&n).await {
            tracing::warn!(consumer = %n, error = %e, "could not delete a previous holder's consumer");
        }
    }
}

/// Errors of [`ensure_all`].
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("stream {IN_STREAM} has {existing} partitions but this worker is configured for {configured}")]
    PartitionMismatch { existing: u32, configured: u32 },
    #[error("bucket {LEASE_BUCKET} has a lease TTL of {existing:?} but this worker is configured for {configured:?}; use the same lease_ttl_ms everywhere (or delete the bucket while no worker runs)")]
    LeaseTtlMismatch {
        existing: Duration,
        configured: Duration,
    },
}

fn js_err(e: impl std::fmt::Display) -> EnsureError {
    EnsureError::JetStream(e.to_string())
}

/// What bounds the command stream's disk: every command leaves `MSGR_IN`
/// after `max_age`, processed or not; a consumer idle for `consumer_idle`
/// (an integrator gone) is deleted by JetStream and stops holding commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLogLimits {
    pub max_age: Duration,
    pub consumer_idle: Duration,
}

impl Default for CommandLogLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            consumer_idle: Duration::from_secs(24 * 3600),
        }
    }
}

/// [`ensure_all_with`] with the default [`CommandLogLimits`].
///
/// # Errors
/// As [`ensure_all_with`].
pub async fn ensure_all(
    js: &jetstream::Context,
    partitions: u32,
    lease_ttl: Duration,
    max_ack_pending: usize,
    replicas: usize,
) -> Result<kv::Store, EnsureError> {
    ensure_all_with(
        js,
        partitions,
        lease_ttl,
        max_ack_pending,
        replicas,
        CommandLogLimits::default(),
    )
    .await
}

/// Creates (or checks) the command stream (bringing its limits in line),
/// one durable pull consumer per partition, and the buckets. Returns the
/// lease bucket.
///
/// # Errors
/// JetStream failures, or a partition count that differs from the stream's.
pub async fn ensure_all_with(
    js: &jetstream::Context,
    partitions: u32,
    lease_ttl: Duration,
    max_ack_pending: usize,
    replicas: usize,
    limits: CommandLogLimits,
) -> Result<kv::Store, EnsureError> {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(PARTITIONS_KEY.to_owned(), partitions.to_string());
    let consumer_limits = Some(stream::ConsumerLimits {
        // The default (and most) a consumer may set: one that neither pulls
        // nor acks for this long is deleted (sequencers pull all the time).
        inactive_threshold: limits.consumer_idle,
        max_ack_pending: 0,
    });
    let mut s = js
        .get_or_create_stream(stream::Config {
            name: IN_STREAM.to_owned(),
            subjects: in_subjects(),
            // Interest: a command stays until every durable consumer acked it,
            // and at most `max_age`.
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            max_age: limits.max_age,
            consumer_limits: consumer_limits.clone(),
            metadata,
            ..Default::default()
        })
        .await
        .map_err(js_err)?;
    let mut info = s.info().await.map_err(js_err)?.clone();
    // A stream made by an earlier release (or with other limits): bring its
    // limits in line; everything else about it stays.
    if info.config.max_age != limits.max_age
        || info.config.consumer_limits != consumer_limits
        || info.config.subjects != in_subjects()
    {
        let mut config = info.config.clone();
        config.max_age = limits.max_age;
        config.consumer_limits = consumer_limits;
        config.subjects = in_subjects();
        info = js.update_stream(config).await.map_err(js_err)?;
    }
    if let Some(existing) = info
        .config
        .metadata
        .get(PARTITIONS_KEY)
        .and_then(|v| v.parse().ok())
    {
        if existing != partitions {
            return Err(EnsureError::PartitionMismatch {
                existing,
                configured: partitions,
            });
        }
    }
    // One listing for all partitions; a partition with no sequencer consumer
    // at all gets one from the start of the stream.
    let mut existing = Vec::new();
    let mut names = s.consumer_names();
    while let Some(n) = futures_util::StreamExt::next(&mut names).await {
        existing.push(n.map_err(js_err)?);
    }
    for p in 0..partitions {
        if existing.iter().any(|n| is_sequencer_consumer_of(n, p)) {
            continue;
        }
        let name = sequencer_consumer(p, 0);
        s.get_or_create_consumer(
            &name,
            sequencer_consumer_config(p, &name, 0, max_ack_pending),
        )
        .await
        .map_err(js_err)?;
    }
    let media = js
        .get_or_create_stream(stream::Config {
            name: MEDIA_STREAM.to_owned(),
            subjects: vec![subject::MEDIA_UPLOADED.to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(js_err)?;
    media
        .get_or_create_consumer(
            THUMBNAIL_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(THUMBNAIL_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_deliver: 5,
                ..Default::default()
            },
        )
        .await
        .map_err(js_err)?;
    revocations_bucket(js, replicas).await?;
    presence_bucket(js, replicas).await?;
    let bucket = lease_bucket(js, lease_ttl, replicas).await?;
    // Holders renew on their own TTL; a bucket expiring entries sooner would
    // hand a live holder's partition to a standby.
    let existing = bucket.status().await.map_err(js_err)?.max_age();
    if existing != lease_ttl {
        return Err(EnsureError::LeaseTtlMismatch {
            existing,
            configured: lease_ttl,
        });
    }
    Ok(bucket)
}

/// The bucket of revoked sessions, created if missing (file storage: a
/// revocation must outlive a restart of the bus).
///
/// # Errors
/// JetStream failures.
pub async fn revocations_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, EnsureError> {
    if let Ok(b) = js.get_key_value(REVOKED_BUCKET).await {
        return Ok(b);
    }
    match js
        .create_key_value(kv::Config {
            bucket: REVOKED_BUCKET.to_owned(),
            history: 1,
            max_age: REVOCATION_KEPT,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
    {
        Ok(b) => Ok(b),
        Err(_) => js.get_key_value(REVOKED_BUCKET).await.map_err(js_err),
    }
}

/// Presence: `u.<user_id>` holds which edges a user is connected to and
/// when they were last seen; `e.<edge_id>` is an edge's heartbeat.
pub const PRESENCE_BUCKET: &str = "MSGR_PRESENCE";

/// The presence bucket, created if missing. Entries of users not seen for
/// 30 days and of edges gone for good age out.
///
/// # Errors
/// JetStream failures.
pub async fn presence_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, EnsureError> {
    if let Ok(b) = js.get_key_value(PRESENCE_BUCKET).await {
        return Ok(b);
    }
    match js
        .create_key_value(kv::Config {
            bucket: PRESENCE_BUCKET.to_owned(),
            history: 1,
            max_age: Duration::from_secs(30 * 24 * 3600),
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
    {
        Ok(b) => Ok(b),
        Err(_) => js.get_key_value(PRESENCE_BUCKET).await.map_err(js_err),
    }
}

/// The lease bucket, created if missing. File storage: a lease must outlive
/// a restart of the server (with memory storage the bucket vanished, every
/// renewal failed with "no stream found", and nothing re-created it). A
/// memory bucket left by an earlier release is replaced once; its holders
/// then re-acquire.
async fn lease_bucket(
    js: &jetstream::Context,
    lease_ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, EnsureError> {
    let stream_name = format!("KV_{LEASE_BUCKET}");
    match js.get_stream(&stream_name).await {
        Ok(mut s) => {
            let info = s.info().await.map_err(js_err)?;
            if info.config.storage == stream::StorageType::File {
                return js.get_key_value(LEASE_BUCKET).await.map_err(js_err);
            }
            tracing::warn!("replacing the memory-backed lease bucket with a file-backed one");
            js.delete_key_value(LEASE_BUCKET).await.map_err(js_err)?;
        }
        Err(e) if is_not_found(&e.kind()) => {}
        Err(e) => return Err(js_err(e)),
    }
    match js
        .create_key_value(kv::Config {
            bucket: LEASE_BUCKET.to_owned(),
            history: 1,
            // An entry not renewed within the TTL ages out: the lease is free.
            max_age: lease_ttl,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
    {
        Ok(b) => Ok(b),
        // Another worker made it first.
        Err(_) => js.get_key_value(LEASE_BUCKET).await.map_err(js_err),
    }
}

fn is_not_found(kind: &jetstream::context::GetStreamErrorKind) -> bool {
    matches!(kind, jetstream::context::GetStreamErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequencer_consumers_are_told_apart_by_partition() {
        assert_eq!(sequencer_consumer(3, 7), "SEQ_3_7");
        assert!(is_sequencer_consumer_of("SEQ_3_7", 3));
        assert!(
            is_sequencer_consumer_of("SEQ_3", 3),
            "the earlier single consumer"
        );
        assert!(!is_sequencer_consumer_of("SEQ_31_7", 3));
        assert!(!is_sequencer_consumer_of("SEQ_3_", 3));
        assert!(!is_sequencer_consumer_of("SEQ_3_x", 3));
        assert!(!is_sequencer_consumer_of("SEQ_1_3", 3));
        assert!(!is_sequencer_consumer_of("MINE", 3));
        assert_eq!(sequencer_consumer_epoch("SEQ_3_12", 3), Some(12));
        assert_eq!(sequencer_consumer_epoch("SEQ_3", 3), Some(0));
        assert_eq!(sequencer_consumer_epoch("SEQ_31_2", 3), None);
    }
}
