//! Leases against a real nats-server: renewed beside other work (as the
//! sequencer does), a lease outlives its TTL and keeps others out; a renewal
//! built before another one landed is refused; release frees it at once.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream::StorageType};
use msgr_nats::lease::{Lease, LeaseError};

#[tokio::test]
async fn a_lease_renewed_beside_work_outlives_its_ttl_and_only_the_newest_renewal_counts() {
    let nats = msgr_nats_test_server::TestNats::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let ttl = Duration::from_secs(1);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "TEST_LEASES".to_owned(),
            history: 1,
            max_age: ttl,
            storage: StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("bucket");

    let mut lease = Lease::acquire(&bucket, "seq.0", "a", ttl)
        .await
        .expect("free lease");
    let first_deadline = lease.valid_until();
    let end = Instant::now() + 3 * ttl;
    while Instant::now() < end {
        // The request runs in a task of its own while the holder goes on.
        let renewed = tokio::spawn(lease.renewal(&bucket))
            .await
            .expect("renewal task")
            .expect("renewed");
        lease.renewed(renewed);
        assert!(lease.is_valid());
        assert!(
            matches!(
                Lease::acquire(&bucket, "seq.0", "b", ttl).await,
                Err(LeaseError::Taken)
            ),
            "a held lease cannot be taken"
        );
        tokio::time::sleep(ttl / 4).await;
    }
    assert!(
        lease.valid_until() > first_deadline + 2 * ttl,
        "renewals extended the lease past its first TTL"
    );

    // Built before a newer renewal landed, a renewal carries a stale revision.
    let stale = lease.renewal(&bucket);
    let fresh = lease.renewal(&bucket).await.expect("renewed");
    lease.renewed(fresh);
    assert!(matches!(stale.await, Err(LeaseError::Taken)));

    // Released with the newest revision, the lease is free without waiting.
    lease.release(&bucket).await;
    Lease::acquire(&bucket, "seq.0", "b", ttl)
        .await
        .expect("free right after release");
}

/// A holder whose renewals failed for a while (the bus was away) finds its
/// own entry still there: it takes the lease up again at once, while anyone
/// else must wait for the entry to age out.
#[tokio::test]
async fn a_holder_takes_its_own_unexpired_lease_up_again_at_once() {
    let nats = msgr_nats_test_server::TestNats::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let ttl = Duration::from_secs(5);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "TEST_LEASES".to_owned(),
            history: 1,
            max_age: ttl,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .expect("bucket");
    let lost = Lease::acquire(&bucket, "seq.3", "a", ttl)
        .await
        .expect("free");
    drop(lost); // not released: as if its holder stopped renewing
    assert!(matches!(
        Lease::acquire(&bucket, "seq.3", "b", ttl).await,
        Err(LeaseError::Taken)
    ));
    let again = Lease::acquire(&bucket, "seq.3", "a", ttl)
        .await
        .expect("its own entry");
    assert!(again.is_valid());
    assert!(matches!(
        Lease::acquire(&bucket, "seq.3", "b", ttl).await,
        Err(LeaseError::Taken)
    ));
}
