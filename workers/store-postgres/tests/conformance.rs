//! The store conformance suite against a real, throwaway PostgreSQL server
//! (initdb + pg_ctl in a temporary directory, on a free loopback port).

use msgr_postgres_test_server::TestPostgres;
use msgr_store_postgres::PgStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .expect("start PostgreSQL");
    let store = PgStore::connect(&pg.url(), 8).await.expect("connect");
    msgr_core::store::conformance::run_all(&store).await;
}

/// Workers starting together migrate once; a second connect finds the
/// schema current, and data written before is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_versioned_and_idempotent() {
    use msgr_core::store::{Store, UserRecord};
    let pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .expect("start PostgreSQL");
    let url = pg.url();
    let (a, b) = tokio::join!(PgStore::connect(&url, 2), PgStore::connect(&url, 2));
    let (a, b) = (a.expect("first"), b.expect("second"));
    let user = UserRecord {
        user_id: msgr_core::id::new_user_id(),
        username: "migrated".to_owned(),
        display_name: "M".to_owned(),
        password_hash: "h".to_owned(),
        created_at_ms: 1,
    };
    a.create_user(user.clone()).await.expect("create");
    drop((a, b));
    let again = PgStore::connect(&pg.url(), 2).await.expect("reconnect");
    assert_eq!(
        again.user_by_username("migrated").await.expect("lookup"),
        Some(user)
    );
}

/// The database crashes (every server process killed) and comes back:
/// while it is down a batch fails as `Unavailable` with nothing written;
/// afterwards the pool replaces its broken connections by itself and the
/// next batch gets the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_from_a_database_crash() {
    use msgr_core::store::{NewMessage, Op, OpOutcome, Store, StoreError, Target, UserRecord};
    let mut pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .expect("start PostgreSQL");
    let store = PgStore::connect(&pg.url(), 4).await.expect("connect");
    let mut users = Vec::new();
    for name in ["crash_a", "crash_b"] {
        let u = UserRecord {
            user_id: msgr_core::id::new_user_id(),
            username: name.to_owned(),
            display_name: name.to_owned(),
            password_hash: "h".to_owned(),
            created_at_ms: 1,
        };
        store.create_user(u.clone()).await.expect("user");
        users.push(u);
    }
    let send = |cmid: &str| {
        vec![Op::Append(NewMessage {
            conversation_id: msgr_core::id::direct_conversation_id(
                &users[0].user_id,
                &users[1].user_id,
            ),
            message_id: msgr_core::id::new_message_id(),
            sender_id: users[0].user_id.clone(),
            client_msg_id: cmid.to_owned(),
            target: Target::User(users[1].user_id.clone()),
            text: Some("x".to_owned()),
            media_id: None,
            sent_at_ms: 1,
            reply_to_seq: None,
        })]
    };
    let seq = |out: Vec<OpOutcome>| match &out[..] {
        [OpOutcome::Stored(m)] => m.seq,
        other => panic!("expected one Stored, got {other:?}"),
    };
    assert_eq!(seq(store.apply(send("c1")).await.expect("before")), 1);

    pg.crash();
    match store.apply(send("c2")).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while the database is down, got {other:?}"),
    }
    pg.start_again();
    // Connections broken by the crash are dropped as they are found.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        match store.apply(send("c2")).await {
            Ok(out) => break out,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(seq(out), 2, "nothing of the failed attempt was kept");
    assert_eq!(seq(store.apply(send("c3")).await.expect("after")), 3);
}
