//! Backups of the one-machine store taken while the system runs (and under
//! load), restored into a fresh data directory: every message, the media
//! and the sessions are back.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use msgr_tests::{http_get_raw, http_stream, TestApp};
use serde_json::Value;

use crate::T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_acked_message_media_and_session() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    for i in 0..200 {
        a.send_text_to(&bob.user_id, &format!("m-{i}"), &format!("before {i}"))
            .await;
    }
    let mut acked = HashSet::new();
    while acked.len() < 200 {
        let ack = a.expect("ack", T).await;
        acked.insert(ack["client_msg_id"].as_str().expect("cmid").to_owned());
    }
    let file = b"a file that must survive the restore".to_vec();
    let up = http_stream(
        app.addr,
        "POST",
        "/media",
        &[
            ("authorization", format!("Bearer {}", alice.token)),
            ("content-type", "text/plain".to_owned()),
            ("content-length", file.len().to_string()),
        ],
        futures_util::stream::iter([Bytes::from(file.clone())]),
    )
    .await;
    assert_eq!(up.status, 201);
    let media_id = serde_json::from_slice::<Value>(&up.body).expect("json")["media_id"]
        .as_str()
        .expect("media_id")
        .to_owned();

    // The backup runs while more messages are being written.
    for i in 200..300 {
        a.send_text_to(&bob.user_id, &format!("m-{i}"), "during")
            .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("backup");
    let config = app.worker_config();
    let manifest = tokio::task::spawn_blocking(move || msgr_workers::backup::create(&config, &to))
        .await
        .expect("task")
        .expect("backup");
    assert!(manifest.messages >= 200, "{manifest:?}");
    assert!(manifest.media_files >= 1, "{manifest:?}");
    // Everything acked before the backup started is in it.
    let in_backup = manifest.messages;
    drop(a);
    drop(app);

    // A fresh data directory, restored.
    let fresh = tempfile::tempdir().expect("fresh");
    let mut config = msgr_workers::WorkerConfig {
        data_dir: fresh.path().to_path_buf(),
        ..msgr_workers::WorkerConfig::default()
    };
    config.metrics_listen = String::new();
    let from = dir.path().join("backup");
    tokio::task::spawn_blocking(move || msgr_workers::backup::restore(&config, &from, false))
        .await
        .expect("task")
        .expect("restore");
    let restored = TestApp::spawn_on_data(fresh).await;
    // The old session token still works: the signing key came back too.
    let msgs = restored.direct_history(&alice, &bob).await;
    let seqs: Vec<u64> = msgs
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=in_backup).collect::<Vec<_>>(),
        "dense, as in the backup"
    );
    let restored_ids: HashSet<String> = msgs
        .iter()
        .map(|m| m["client_msg_id"].as_str().expect("cmid").to_owned())
        .collect();
    for cmid in &acked {
        assert!(
            restored_ids.contains(cmid),
            "{cmid} was acked before the backup and is missing"
        );
    }
    let r = http_get_raw(
        restored.addr,
        &format!("/media/{media_id}"),
        &[("authorization", format!("Bearer {}", bob.token))],
    )
    .await;
    // Bob never received a message with it, so he may not read it; Alice may.
    assert_eq!(r.status, 404);
    let r = http_get_raw(
        restored.addr,
        &format!("/media/{media_id}"),
        &[("authorization", format!("Bearer {}", alice.token))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), file.as_slice());
    // And messaging goes on where it stopped.
    let mut a = restored.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "after-restore", "hello again")
        .await;
    let ack = a.expect("ack", T).await;
    assert_eq!(ack["seq"].as_u64(), Some(in_backup + 1));
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Restoring over an existing database is refused unless forced, and a
/// backup of a PostgreSQL store is refused with where to look instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_to_overwrite_and_postgres_is_not_its_job() {
    let app = TestApp::spawn().await;
    let _ = app.user("someone").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("b");
    let config = app.worker_config();
    let c2 = config.clone();
    let t2 = to.clone();
    tokio::task::spawn_blocking(move || msgr_workers::backup::create(&c2, &t2))
        .await
        .expect("task")
        .expect("backup");
    let c3 = config.clone();
    let err = tokio::task::spawn_blocking(move || msgr_workers::backup::restore(&c3, &to, false))
        .await
        .expect("task")
        .expect_err("the live database is there");
    assert!(err.to_string().contains("--force"), "{err}");
    let pg = msgr_workers::WorkerConfig {
        store: msgr_workers::config::StoreConfig::Postgres {
            url: "postgres://x@127.0.0.1/x".to_owned(),
            pool_size: 1,
        },
        ..config
    };
    let err = msgr_workers::backup::create(&pg, &dir.path().join("c")).expect_err("pg");
    assert!(err.to_string().contains("pg_dump"), "{err}");
}
