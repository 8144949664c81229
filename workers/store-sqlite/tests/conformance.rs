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
