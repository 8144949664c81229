//! The store conformance suite against a real SQLite file on disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = msgr_store_sqlite::SqliteStore::open(
        &dir.path().join("msgr.sqlite3"),
        msgr_store_sqlite::Durability::Full,
    )
    .expect("open store");
    msgr_core::store::conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening_the_file() {
    use msgr_core::store::{Store, UserRecord};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msgr.sqlite3");
    let user = UserRecord {
        user_id: msgr_core::id::new_user_id(),
        username: "persisted".to_owned(),
        display_name: "P".to_owned(),
        password_hash: "h".to_owned(),
        created_at_ms: 1,
    };
    {
        let store =
            msgr_store_sqlite::SqliteStore::open(&path, msgr_store_sqlite::Durability::Full)
                .expect("open");
        store.create_user(user.clone()).await.expect("create");
    }
    let store = msgr_store_sqlite::SqliteStore::open(&path, msgr_store_sqlite::Durability::Full)
        .expect("reopen");
    assert_eq!(
        store.user_by_username("persisted").await.expect("lookup"),
        Some(user)
    );
}

/// Batches arriving together are committed together (group commit); each
/// caller still gets its own outcomes, and seqs stay dense across batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_keep_dense_seqs_and_their_own_outcomes() {
    use msgr_core::store::{NewMessage, Op, OpOutcome, Store, Target, UserRecord};
    use msgr_core::{id, time};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = std::sync::Arc::new(
        msgr_store_sqlite::SqliteStore::open(
            &dir.path().join("msgr.sqlite3"),
            msgr_store_sqlite::Durability::Full,
        )
        .expect("open store"),
    );
    let mut users = Vec::new();
    for i in 0..3 {
        let u = UserRecord {
            user_id: id::new_user_id(),
            username: format!("gc{i}"),
            display_name: "g".to_owned(),
            password_hash: "h".to_owned(),
            created_at_ms: 1,
        };
        store.create_user(u.clone()).await.expect("create");
        users.push(u);
    }
    let (a, b, stranger_id) = (users[0].clone(), users[1].clone(), id::new_user_id());
    let msg = |to: &str, cmid: String| {
        Op::Append(NewMessage {
            conversation_id: id::direct_conversation_id(&a.user_id, to),
            message_id: id::new_message_id(),
            sender_id: a.user_id.clone(),
            client_msg_id: cmid,
            target: Target::User(to.to_owned()),
            text: Some("x".to_owned()),
            media_id: None,
            sent_at_ms: time::now_ms(),
            reply_to_seq: None,
        })
    };
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = std::sync::Arc::clone(&store);
        // Five messages to b, then one to an unknown user (rejected, not an error).
        let mut ops: Vec<Op> = (0..5)
            .map(|i| msg(&b.user_id, format!("{t}-{i}")))
            .collect();
        ops.push(msg(&stranger_id, format!("{t}-x")));
        tasks.push(tokio::spawn(async move { store.apply(ops).await }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        let out = task.await.expect("join").expect("apply");
        assert_eq!(out.len(), 6, "one outcome per op");
        let mine: Vec<u64> = out[..5]
            .iter()
            .map(|o| match o {
                OpOutcome::Stored(m) => m.seq,
                other => panic!("expected Stored, got {other:?}"),
            })
            .collect();
        assert!(
            mine.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch's seqs are consecutive: {mine:?}"
        );
        assert!(
            !matches!(out[5], OpOutcome::Stored(_)),
            "unknown recipient is refused"
        );
        seqs.extend(mine);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=80).collect::<Vec<u64>>(),
        "dense across concurrent batches"
    );
}

/// The checkpoint thread and the writer's idle checkpoint keep the WAL small
/// (either one alone suffices here); SQLite's own only steps in at 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_in_the_background() {
    use msgr_core::store::{NewMessage, Op, Store, Target, UserRecord};
    use msgr_core::{id, time};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("msgr.sqlite3");
    let store = msgr_store_sqlite::SqliteStore::open(&path, msgr_store_sqlite::Durability::Normal)
        .expect("open store");
    let (a, b) = (id::new_user_id(), id::new_user_id());
    for (i, u) in [&a, &b].into_iter().enumerate() {
        store
            .create_user(UserRecord {
                user_id: u.clone(),
                username: format!("wal{i}"),
                display_name: "w".to_owned(),
                password_hash: "h".to_owned(),
                created_at_ms: 1,
            })
            .await
            .expect("create");
    }
    let wal = dir.path().join("msgr.sqlite3-wal");
    let mut largest = 0;
    for i in 0..1000 {
        let op = Op::Append(NewMessage {
            conversation_id: id::direct_conversation_id(&a, &b),
            message_id: id::new_message_id(),
            sender_id: a.clone(),
            client_msg_id: i.to_string(),
            target: Target::User(b.clone()),
            text: Some("x".repeat(2000)),
            media_id: None,
            sent_at_ms: time::now_ms(),
            reply_to_seq: None,
        });
        store.apply(vec![op]).await.expect("apply");
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        if i % 100 == 99 {
            // Idle moments, in which a checkpoint can complete and the WAL restart.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    // 1,000 commits of a 2 KB message write ~50 MB of WAL frames: without
    // our checkpoints the WAL reaches SQLite's 32 MiB bound (measured: 33 MB).
    assert!(largest < 16 << 20, "WAL grew to {largest} bytes");
    assert!(
        std::fs::metadata(&path).expect("db").len() > 2 << 20,
        "pages reached the main file"
    );
}
