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
