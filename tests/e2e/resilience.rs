use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use msgr_tests::TestApp;

use crate::T;

/// kill -9 the worker while 1,000 messages are being sent; after a restart
/// every acked message is in history exactly once with dense seqs, and the
/// recipient received all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_worker_mid_stream_loses_and_duplicates_nothing() {
    let mut app = TestApp::spawn_with_worker_process(env!("CARGO_BIN_EXE_msgr-test-worker")).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;

    let total = 1_000;
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut received: BTreeMap<u64, String> = BTreeMap::new();
    let mut killed = false;
    for i in 0..total {
        a.send_text_to(&bob.user_id, &format!("k-{i}"), &format!("n{i}"))
            .await;
        if i % 100 == 99 {
            // Collect what has been acked so far without waiting long.
            for f in a.drain(Duration::from_millis(50)).await {
                if f["type"] == "ack" {
                    acked.insert(
                        f["client_msg_id"].as_str().expect("cmid").to_owned(),
                        f["seq"].as_u64().expect("seq"),
                    );
                }
            }
        }
        if i == 400 && !killed {
            app.kill_worker().await; // SIGKILL
            killed = true;
        }
        if i == 600 {
            app.start_worker().await;
        }
    }
    assert!(killed);
    // Resend anything unacked after a while, as a client does after a timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_resend = tokio::time::Instant::now();
    while acked.len() < total && tokio::time::Instant::now() < deadline {
        for f in a.drain(Duration::from_millis(200)).await {
            if f["type"] == "ack" {
                acked.insert(
                    f["client_msg_id"].as_str().expect("cmid").to_owned(),
                    f["seq"].as_u64().expect("seq"),
                );
            }
        }
        if last_resend.elapsed() > Duration::from_secs(15) {
            for i in 0..total {
                let cmid = format!("k-{i}");
                if !acked.contains_key(&cmid) {
                    a.send_text_to(&bob.user_id, &cmid, &format!("n{i}")).await;
                }
            }
            last_resend = tokio::time::Instant::now();
        }
    }
    assert_eq!(acked.len(), total, "every message was eventually acked");

    // Dense, unique seqs in history, each message exactly once.
    let mut history = Vec::new();
    let mut after = 0;
    loop {
        let (s, page) = app
            .get(
                &format!(
                    "/messages/{}/{}?after={after}&limit=200",
                    alice.user_id, bob.user_id
                ),
                &alice.token,
            )
            .await;
        assert_eq!(s, 200);
        let msgs = page["messages"].as_array().expect("messages").clone();
        if msgs.is_empty() {
            break;
        }
        after = msgs.last().expect("last")["seq"].as_u64().expect("seq");
        history.extend(msgs);
    }
    let seqs: Vec<u64> = history
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "dense seqs 1..=1000"
    );
    let cmids: HashSet<_> = history
        .iter()
        .map(|m| m["client_msg_id"].as_str().expect("cmid").to_owned())
        .collect();
    assert_eq!(cmids.len(), total, "each message exactly once");
    for m in &history {
        assert_eq!(
            acked[m["client_msg_id"].as_str().expect("cmid")],
            m["seq"].as_u64().expect("seq")
        );
    }

    // Bob received every message (pushes may repeat after a redelivery; a
    // client keys them by seq).
    let deadline = tokio::time::Instant::now() + T;
    while received.len() < total && tokio::time::Instant::now() < deadline {
        for f in b.drain(Duration::from_millis(200)).await {
            if f["type"] == "message" {
                let m = &f["message"];
                received.insert(
                    m["seq"].as_u64().expect("seq"),
                    m["client_msg_id"].as_str().expect("cmid").to_owned(),
                );
            }
        }
    }
    assert_eq!(received.len(), total, "bob received all {total} messages");
}

/// A second worker against the same NATS (and database) stands by; when the
/// first dies mid-stream it takes over without breaking order or density.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_takes_over_without_breaking_order() {
    let mut app = TestApp::spawn().await;
    let standby = app.start_extra_worker().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;

    // The first worker dies with commands in flight (unacked, leases held).
    for i in 1..=100 {
        a.send_text_to(&bob.user_id, &format!("w-{i}"), "x").await;
    }
    app.abort_worker().await;
    for i in 101..=200 {
        a.send_text_to(&bob.user_id, &format!("w-{i}"), "x").await;
    }
    let mut acks = HashMap::new();
    while acks.len() < 200 {
        let ack = a.expect("ack", Duration::from_secs(40)).await;
        acks.insert(
            ack["client_msg_id"].as_str().expect("cmid").to_owned(),
            ack["seq"].as_u64().expect("seq"),
        );
    }
    for i in 1..=200u64 {
        assert_eq!(
            acks[&format!("w-{i}")],
            i,
            "seq follows send order across the takeover"
        );
    }
    drop(standby);
}

/// A worker that stops gracefully gives its partitions up, with the revision
/// of its latest renewal (renewals run beside the batches): a standby takes
/// over at its next poll instead of waiting for the lease to age out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_hands_its_partitions_over_before_the_lease_ttl() {
    let ttl_ms = 10_000;
    let mut app = TestApp::spawn_with_worker(|w| w.lease_ttl_ms = ttl_ms).await;
    let standby = app.start_extra_worker().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "h-1", "before").await;
    let ack = a.expect("ack", T).await;
    assert_eq!(ack["seq"], 1);
    // Past a renewal (every TTL/4): the release must carry its revision.
    tokio::time::sleep(Duration::from_millis(ttl_ms / 4 + 1_000)).await;

    app.kill_worker().await; // in-process: a graceful stop
    let stopped = std::time::Instant::now();
    a.send_text_to(&bob.user_id, "h-2", "after").await;
    let ack = a.expect("ack", Duration::from_secs(30)).await;
    let took = stopped.elapsed();
    assert_eq!(ack["client_msg_id"], "h-2");
    assert_eq!(ack["seq"], 2);
    assert!(
        took < Duration::from_millis(ttl_ms / 2),
        "the standby took {took:?}: the lease was not released and had to age out"
    );
    drop(standby);
}
