//! The bus restarts (or loses what workers created on it) under a running
//! system. No process is restarted by the test: messaging must resume by
//! itself within seconds, and a send whose ack event was lost must still be
//! answered on the socket that sent it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use msgr_tests::{signal, ChildGuard, TestApp, TestUser, WsClient, WsEvent};
use serde_json::Value;

use crate::T;

/// How long a message sent after the bus is back may take to be acked.
const ACK_BOUND: Duration = Duration::from_secs(5);

/// A client with an outbox, as the web client keeps one: every send is kept
/// until acked and resent with the same `client_msg_id` after an
/// `unavailable` error (or, failing any answer, after `RESEND_AFTER`).
struct Outbox {
    to: String,
    first_sent: HashMap<String, Instant>,
    last_sent: HashMap<String, Instant>,
    retry_at: HashMap<String, Instant>,
    acked: HashMap<String, (u64, Instant)>,
}

const RESEND_AFTER: Duration = Duration::from_secs(10);

impl Outbox {
    fn new(to: &TestUser) -> Self {
        Self {
            to: to.user_id.clone(),
            first_sent: HashMap::new(),
            last_sent: HashMap::new(),
            retry_at: HashMap::new(),
            acked: HashMap::new(),
        }
    }

    async fn send(&mut self, ws: &mut WsClient, cmid: &str) {
        let now = Instant::now();
        self.first_sent.entry(cmid.to_owned()).or_insert(now);
        self.last_sent.insert(cmid.to_owned(), now);
        self.retry_at.insert(cmid.to_owned(), now + RESEND_AFTER);
        ws.send_text_to(&self.to, cmid, &format!("text of {cmid}"))
            .await;
    }

    /// Reads what arrives for `quiet`, then resends what is due.
    async fn pump(&mut self, ws: &mut WsClient, quiet: Duration) {
        while let Some(ev) = ws.next(quiet).await {
            let WsEvent::Json(f) = ev else {
                panic!("socket closed: {ev:?}");
            };
            let cmid = f["client_msg_id"].as_str().unwrap_or_default().to_owned();
            match f["type"].as_str() {
                Some("ack") => {
                    let seq = f["seq"].as_u64().expect("seq");
                    self.acked
                        .entry(cmid.clone())
                        .or_insert((seq, Instant::now()));
                    self.retry_at.remove(&cmid);
                }
                Some("error") if f["code"] == "unavailable" => {
                    self.retry_at
                        .insert(cmid, Instant::now() + Duration::from_millis(300));
                }
                Some("error") => panic!("unexpected error: {f}"),
                _ => {}
            }
        }
        let due: Vec<String> = self
            .retry_at
            .iter()
            .filter(|(_, at)| **at <= Instant::now())
            .map(|(k, _)| k.clone())
            .collect();
        for cmid in due {
            self.send(ws, &cmid).await;
        }
    }

    fn unacked(&self) -> Vec<&String> {
        self.first_sent
            .keys()
            .filter(|k| !self.acked.contains_key(*k))
            .collect()
    }
}

/// Runs a std-blocking server operation without stalling the runtime's
/// other tasks (the in-process edge shares it).
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

async fn chat_through_a_restart(clean: bool) {
    // The default lease TTL (2 s): a restart of a second or two does not
    // cost the worker its partitions.
    let mut app =
        TestApp::spawn_with_worker_process_ttl(env!("CARGO_BIN_EXE_msgr-test-worker"), 2_000).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    let mut out = Outbox::new(&bob);

    for i in 0..10 {
        out.send(&mut a, &format!("pre-{i}")).await;
    }
    let deadline = Instant::now() + T;
    while out.acked.len() < 10 && Instant::now() < deadline {
        out.pump(&mut a, Duration::from_millis(100)).await;
    }
    assert_eq!(out.acked.len(), 10, "acked before the restart");

    // Some in flight as the server goes down.
    for i in 0..5 {
        out.send(&mut a, &format!("mid-{i}")).await;
    }
    blocking(|| {
        if clean {
            app.nats.restart_clean();
        } else {
            app.nats.restart();
        }
    });
    let back = Instant::now();

    // One message every 200 ms for 4 s, each due an ack within ACK_BOUND.
    let mut next = Instant::now();
    let mut sent_after = Vec::new();
    for i in 0..20 {
        while Instant::now() < next {
            out.pump(&mut a, Duration::from_millis(20)).await;
        }
        let cmid = format!("post-{i}");
        out.send(&mut a, &cmid).await;
        sent_after.push(cmid);
        next += Duration::from_millis(200);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    while !out.unacked().is_empty() && Instant::now() < deadline {
        out.pump(&mut a, Duration::from_millis(100)).await;
    }
    assert!(out.unacked().is_empty(), "never acked: {:?}", out.unacked());
    let first_ack = sent_after
        .iter()
        .map(|c| out.acked[c].1)
        .min()
        .expect("acks");
    let worst = sent_after
        .iter()
        .map(|c| (out.acked[c].1 - out.first_sent[c], c))
        .max()
        .expect("acks");
    println!(
        "nats-server {} restart: first ack {} ms after the server was back; slowest message sent after it acked in {} ms ({})",
        if clean { "clean" } else { "kill -9" },
        (first_ack - back).as_millis(),
        worst.0.as_millis(),
        worst.1,
    );
    assert!(
        worst.0 <= ACK_BOUND,
        "{} took {:?} to be acked after the restart",
        worst.1,
        worst.0
    );

    // Nothing lost or doubled: dense seqs, each message once, with the
    // acked seq; and bob got every one of them.
    let hist = app.direct_history(&alice, &bob).await;
    let seqs: Vec<u64> = hist
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=35).collect::<Vec<u64>>(), "dense seqs");
    let cmids: HashSet<&str> = hist
        .iter()
        .map(|m| m["client_msg_id"].as_str().expect("cmid"))
        .collect();
    assert_eq!(cmids.len(), 35, "each message once");
    for m in &hist {
        let cmid = m["client_msg_id"].as_str().expect("cmid");
        assert_eq!(out.acked[cmid].0, m["seq"].as_u64().expect("seq"), "{cmid}");
    }
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + T;
    while got.len() < 35 && Instant::now() < deadline {
        for f in b.drain(Duration::from_millis(200)).await {
            if f["type"] == "message" {
                got.insert(f["message"]["seq"].as_u64().expect("seq"), ());
            }
        }
        if got.len() < 35 {
            // Pushes lost with the server are found by a sync, as clients do.
            for m in app.direct_history(&bob, &alice).await {
                got.insert(m["seq"].as_u64().expect("seq"), ());
            }
        }
    }
    assert_eq!(got.len(), 35, "bob has every message");
}

/// kill -9 of nats-server in the middle of a conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_resumes_by_itself_after_nats_server_is_killed() {
    chat_through_a_restart(false).await;
}

/// A clean stop (SIGTERM) and start of nats-server mid-conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_resumes_by_itself_after_a_clean_nats_server_restart() {
    chat_through_a_restart(true).await;
}

/// The ack event of a stored message is lost: the bus restarts while the
/// sender's edge is frozen (SIGSTOP), after the command was accepted and
/// before the worker stored it and published its event, so the event finds
/// no subscriber. The sockets stay open throughout. On one edge the client
/// resends on the same socket and gets its ack; on the other it only waits,
/// and the edge asks the store by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_ack_event_was_lost_is_answered_on_the_same_socket() {
    let mut app =
        TestApp::spawn_with_worker_process_ttl(env!("CARGO_BIN_EXE_msgr-test-worker"), 2_000).await;
    let edge_bin = env!("CARGO_BIN_EXE_msgr-test-edge");
    // Only a resend makes this edge look the send up (no timer within the test).
    let (e1, addr1) = app
        .edge_process(edge_bin, &[("MSGR_ACK_CHECK_MS", "600000".to_owned())])
        .await;
    let (e2, addr2) = app
        .edge_process(edge_bin, &[("MSGR_ACK_CHECK_MS", "2000".to_owned())])
        .await;
    // Killed (and woken first) however the test ends.
    let (e1, e2) = (ChildGuard(e1), ChildGuard(e2));
    let (alice, carol, bob) = (
        app.user("alice").await,
        app.user("carol").await,
        app.user("bob").await,
    );
    let ws = |addr, token: &str| {
        let path = format!("/messages/send?token={token}");
        async move { WsClient::connect(addr, &path, None).await.expect("ws") }
    };
    let mut a = ws(addr1, &alice.token).await;
    let mut c = ws(addr2, &carol.token).await;

    // Both edges work.
    a.send_text_to(&bob.user_id, "a-0", "hello").await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);
    c.send_text_to(&bob.user_id, "c-0", "hello").await;
    assert_eq!(c.expect("ack", T).await["seq"], 1);

    let worker = app.worker_pid().expect("worker process");
    signal(worker, "STOP");
    a.send_text_to(&bob.user_id, "a-1", "lost ack").await;
    c.send_text_to(&bob.user_id, "c-1", "lost ack").await;
    // Let the edges publish them and get their PubAcks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(e1.0.id(), "STOP");
    signal(e2.0.id(), "STOP");
    blocking(|| app.nats.restart());
    signal(worker, "CONT");
    // The worker stores both and publishes their events while the edges
    // are frozen and disconnected: nobody receives the acks. (Bob's push may
    // be lost too, for the same reason; he reads history, as a client that
    // finds a gap does.)
    let mut stored = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(stored.contains("a-1") && stored.contains("c-1")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for peer in [&alice, &carol] {
            for m in app.direct_history(&bob, peer).await {
                stored.insert(m["client_msg_id"].as_str().expect("cmid").to_owned());
            }
        }
    }
    assert!(
        stored.contains("a-1") && stored.contains("c-1"),
        "stored: {stored:?}"
    );
    signal(e1.0.id(), "CONT");
    signal(e2.0.id(), "CONT");
    let resumed = Instant::now();

    // Alice resends on the same socket, as an outbox does after a while.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.send_text_to(&bob.user_id, "a-1", "lost ack").await;
    let ack = a.expect("ack", ACK_BOUND).await;
    assert_eq!(ack["client_msg_id"], "a-1");
    assert_eq!(ack["seq"], 2);
    // Carol only waits.
    let ack = c.expect("ack", ACK_BOUND).await;
    assert_eq!(ack["client_msg_id"], "c-1");
    assert_eq!(ack["seq"], 2);
    println!(
        "lost ack events answered {} ms after the edges resumed",
        resumed.elapsed().as_millis()
    );
    // And the sockets go on working.
    a.send_text_to(&bob.user_id, "a-2", "after").await;
    assert_eq!(a.expect("ack", T).await["seq"], 3);
    c.send_text_to(&bob.user_id, "c-2", "after").await;
    assert_eq!(c.expect("ack", T).await["seq"], 3);
}

/// The names of partition `p`'s sequencer consumers on the command stream.
async fn sequencer_consumers(
    stream: &async_nats::jetstream::stream::Stream,
    p: u32,
) -> Vec<String> {
    let mut names = stream.consumer_names();
    let mut out = Vec::new();
    while let Some(name) = futures_util::StreamExt::next(&mut names).await {
        let name = name.expect("name");
        if msgr_nats::stream::is_sequencer_consumer_of(&name, p) {
            out.push(name);
        }
    }
    out
}

/// Collects a socket's answers (`ack` or `error`) to `cmids`, first answer
/// each, within `within`.
async fn first_answers(
    ws: &mut WsClient,
    cmids: &[&str],
    within: Duration,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + within;
    let mut out = HashMap::new();
    while out.len() < cmids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next(left).await {
            Some(WsEvent::Json(v)) if v["type"] == "ack" || v["type"] == "error" => {
                let cmid = v["client_msg_id"].as_str().unwrap_or_default().to_owned();
                if cmids.contains(&cmid.as_str()) {
                    out.entry(cmid).or_insert(v);
                }
            }
            Some(WsEvent::Json(_)) => {}
            other => panic!("answers so far {out:?}; then {other:?}"),
        }
    }
    out
}

/// The bus takes a send (PubAck) and then drops it (no consumer wanted it),
/// and the sender's next send is stored first. The edge must not publish the
/// lost one again behind it (storing the sender's messages out of the order
/// they were sent, which the sender was never told): it answers
/// `unavailable`, and the resend goes after. Found by the chaos suite with a
/// NATS node paused while the partitions changed hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_bus_dropped_is_not_stored_behind_a_later_one() {
    let app =
        TestApp::spawn_with_worker_process_ttl(env!("CARGO_BIN_EXE_msgr-test-worker"), 2_000).await;
    let (edge, addr) = app
        .edge_process(
            env!("CARGO_BIN_EXE_msgr-test-edge"),
            &[("MSGR_ACK_CHECK_MS", "1500".to_owned())],
        )
        .await;
    let _edge = ChildGuard(edge);
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = WsClient::connect(addr, &format!("/messages/send?token={}", alice.token), None)
        .await
        .expect("ws");
    a.send_text_to(&bob.user_id, "d-0", "first").await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);

    // With the worker frozen (it cannot seat itself again), the partition's
    // consumers go: the stream keeps commands only for a consumer that wants
    // them, so the next send is taken and dropped at once.
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let conv = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    let p = msgr_core::id::partition_of(&conv, msgr_workers::config::DEFAULT_PARTITIONS);
    let stream = js
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("stream");
    let worker = app.worker_pid().expect("worker process");
    signal(worker, "STOP");
    let held = sequencer_consumers(&stream, p).await;
    assert!(!held.is_empty(), "partition {p} had no consumer");
    for name in &held {
        stream.delete_consumer(name).await.expect("delete consumer");
    }
    a.send_text_to(&bob.user_id, "d-1", "dropped by the bus")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(worker, "CONT");
    // The worker seats the partition again (a consumer of its own, from
    // what it stored), and the next send goes through.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sequencer_consumers(&stream, p).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never seated partition {p} again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.send_text_to(&bob.user_id, "d-2", "second").await;

    let answers = first_answers(&mut a, &["d-1", "d-2"], Duration::from_secs(15)).await;
    assert_eq!(answers["d-2"]["type"], "ack", "{answers:?}");
    assert_eq!(answers["d-2"]["seq"], 2, "{answers:?}");
    assert_eq!(
        answers["d-1"]["type"], "error",
        "the dropped send must not be stored behind the later one without the sender knowing: {answers:?}"
    );
    assert_eq!(answers["d-1"]["code"], "unavailable", "{answers:?}");
    // The resend takes its place after the one that went ahead.
    a.send_text_to(&bob.user_id, "d-1", "dropped by the bus")
        .await;
    let ack = a.expect("ack", ACK_BOUND).await;
    assert_eq!(
        (ack["client_msg_id"].as_str(), ack["seq"].as_u64()),
        (Some("d-1"), Some(3))
    );
    let order: Vec<String> = app
        .direct_history(&bob, &alice)
        .await
        .iter()
        .map(|m| m["client_msg_id"].as_str().expect("cmid").to_owned())
        .collect();
    assert_eq!(order, ["d-0", "d-2", "d-1"]);
}

/// GET a health endpoint: (status, body).
async fn health(addr: std::net::SocketAddr) -> (u16, Value) {
    msgr_tests::http(addr, "GET", "/healthz", None, None).await
}

/// Polls `/healthz` at `addr` until `ok(status, body)`, or panics after `within`.
async fn wait_health(
    addr: std::net::SocketAddr,
    within: Duration,
    what: &str,
    ok: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (s, body) = health(addr).await;
        if ok(s, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /healthz still {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything the workers created on the bus disappears while they run
/// (the lease bucket, a partition's consumer, the media stream): they put
/// it back without being restarted, and say so in `/healthz` while they
/// cannot make progress. Edges report a lost NATS link the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_streams_buckets_and_consumers_are_recreated_and_health_says_why() {
    let worker_metrics = msgr_tests::free_port();
    let mut app = TestApp::spawn_with_worker(|w| {
        w.metrics_listen = format!("127.0.0.1:{worker_metrics}");
    })
    .await;
    let worker_addr: std::net::SocketAddr =
        format!("127.0.0.1:{worker_metrics}").parse().expect("addr");
    wait_health(worker_addr, T, "worker at start", |s, _| s == 200).await;
    assert_eq!(health(app.addr).await.0, 200, "edge at start");

    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "x-1", "before").await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);

    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let conv = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    let p = msgr_core::id::partition_of(&conv, msgr_workers::config::DEFAULT_PARTITIONS);
    js.delete_key_value(msgr_nats::stream::LEASE_BUCKET)
        .await
        .expect("delete lease bucket");
    // Every consumer of the partition (the holder's, and any left over).
    let stream = js
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("stream");
    let held = sequencer_consumers(&stream, p).await;
    assert!(!held.is_empty(), "partition {p} had no consumer");
    for name in &held {
        stream.delete_consumer(name).await.expect("delete consumer");
    }
    js.delete_stream(msgr_nats::stream::MEDIA_STREAM)
        .await
        .expect("delete media stream");
    let gone = Instant::now();

    a.send_text_to(&bob.user_id, "x-2", "after").await;
    let ack = a.expect("ack", ACK_BOUND * 2).await;
    assert_eq!(ack["seq"], 2);
    println!(
        "lease bucket, consumer and media stream deleted: next message acked after {} ms",
        gone.elapsed().as_millis()
    );
    for name in [
        format!("KV_{}", msgr_nats::stream::LEASE_BUCKET),
        msgr_nats::stream::MEDIA_STREAM.to_owned(),
    ] {
        let deadline = Instant::now() + T;
        while js.get_stream(&name).await.is_err() {
            assert!(Instant::now() < deadline, "{name} was not re-created");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_health(worker_addr, T, "worker after re-creating", |s, _| s == 200).await;

    // The link itself: both processes say why they cannot work while the
    // server is down, and recover without help.
    blocking(|| app.nats.stop());
    let body = wait_health(worker_addr, T, "worker with NATS down", |s, b| {
        s == 503 && b["problems"].to_string().contains("nats: disconnected")
    })
    .await;
    println!("worker /healthz with NATS down: {body}");
    let body = wait_health(app.addr, T, "edge with NATS down", |s, b| {
        s == 503 && b["problems"].to_string().contains("nats: disconnected")
    })
    .await;
    assert_eq!(body["status"], "unhealthy");
    blocking(|| app.nats.start_again());
    wait_health(worker_addr, T, "worker after NATS is back", |s, _| s == 200).await;
    wait_health(app.addr, T, "edge after NATS is back", |s, _| s == 200).await;
    a.send_text_to(&bob.user_id, "x-3", "back").await;
    let ack = a.expect("ack", ACK_BOUND).await;
    assert_eq!(ack["client_msg_id"], "x-3");
    assert_eq!(ack["seq"], 3);
}

/// `just status` (infra/status.py) against a live stack: healthy with every
/// partition held; with nats-server down it says so and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn just_status_reads_the_live_system_and_says_when_it_is_not_healthy() {
    // The worker as a process: its /metrics are its own (in-process workers
    // of other tests share this process's recorder).
    let worker_metrics = msgr_tests::free_port();
    let mut app =
        TestApp::spawn_with_worker_process_and(env!("CARGO_BIN_EXE_msgr-test-worker"), |w| {
            w.metrics_listen = format!("127.0.0.1:{worker_metrics}");
        })
        .await;
    let worker_addr: std::net::SocketAddr =
        format!("127.0.0.1:{worker_metrics}").parse().expect("addr");
    wait_health(worker_addr, T, "worker", |s, _| s == 200).await;
    // Every partition held before asking.
    let deadline = Instant::now() + T;
    loop {
        let text = msgr_tests::http_get_raw(worker_addr, "/metrics", &[]).await;
        let body = String::from_utf8_lossy(&text.body).into_owned();
        if body.contains(&format!(
            "msgr_worker_partitions_owned {}",
            msgr_workers::config::DEFAULT_PARTITIONS
        )) {
            break;
        }
        assert!(Instant::now() < deadline, "partitions not all held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/status.py");
    let run = |nats: String| {
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(["--nats", &nats])
            .args(["--workers", &worker_addr.to_string()])
            .args(["--edges", &app.addr.to_string()])
            .output()
            .expect("python3 infra/status.py");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let nats = app.nats.monitor_addr().to_string();
    let (code, out) = blocking(|| run(nats.clone()));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("HEALTHY"), "{out}");
    assert!(
        out.contains(&format!(
            "holds {:>3} partitions",
            msgr_workers::config::DEFAULT_PARTITIONS
        )),
        "{out}"
    );
    assert!(out.contains("MSGR_IN"), "{out}");
    println!("{out}");

    blocking(|| app.nats.stop());
    wait_health(worker_addr, T, "worker with NATS down", |s, _| s == 503).await;
    let (code, out) = blocking(|| run(nats.clone()));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DEGRADED"), "{out}");
    assert!(
        out.contains(&format!("nats-server {nats} is down")),
        "{out}"
    );
    assert!(out.contains("disconnected from NATS"), "{out}");
    blocking(|| app.nats.start_again());
}

/// Whether process `pid` has exited (gone, or a zombie its parent has not
/// reaped yet).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Stopping a worker and an edge while nats-server is down does not hang:
/// each flushes what it can for a bounded time and exits (it waited for the
/// server forever, and only SIGKILL ended it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_edge_stop_promptly_while_nats_server_is_down() {
    let mut app = TestApp::spawn_with_worker_process(env!("CARGO_BIN_EXE_msgr-test-worker")).await;
    let (edge, _) = app
        .edge_process(env!("CARGO_BIN_EXE_msgr-test-edge"), &[])
        .await;
    let guard = ChildGuard(edge);
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "before", "hi").await;
    a.expect("ack", T).await;
    let worker = app.worker_pid().expect("worker process");
    let edge = guard.0.id();
    app.nats.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    signal(worker, "TERM");
    signal(edge, "TERM");
    while !(exited(worker) && exited(edge)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still running {:?} after SIGTERM with NATS down (worker exited: {}, edge exited: {})",
            start.elapsed(),
            exited(worker),
            exited(edge)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "both exited {} ms after SIGTERM with NATS down",
        start.elapsed().as_millis()
    );
}

/// The processes under `root` (itself included), from /proc.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid …: comm may hold spaces, so from its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// A store that hangs (PostgreSQL frozen with SIGSTOP: no error, no answer)
/// fails nothing the worker could report; its progress check still makes
/// `/healthz` unhealthy and says why, and everything resumes by itself when
/// the store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_makes_the_worker_unhealthy_and_messaging_resumes_by_itself() {
    let pg = blocking(msgr_postgres_test_server::TestPostgres::start);
    let worker_metrics = msgr_tests::free_port();
    let url = pg.url();
    let app = TestApp::spawn_with_worker(|w| {
        w.metrics_listen = format!("127.0.0.1:{worker_metrics}");
        w.store = msgr_workers::config::StoreConfig::Postgres { url, pool_size: 4 };
        w.stall_secs = 2;
    })
    .await;
    let worker_addr: std::net::SocketAddr =
        format!("127.0.0.1:{worker_metrics}").parse().expect("addr");
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "h-1", "before").await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);
    wait_health(worker_addr, T, "worker before", |s, _| s == 200).await;

    let frozen = process_tree(pg.postmaster_pid().expect("postmaster"));
    for pid in &frozen {
        signal(*pid, "STOP");
    }
    a.send_text_to(&bob.user_id, "h-2", "while the store hangs")
        .await;
    let body = wait_health(
        worker_addr,
        Duration::from_secs(20),
        "worker, store hung",
        |s, b| s == 503 && b["problems"].to_string().contains("none applied"),
    )
    .await;
    println!("worker /healthz with the store hung: {body}");
    for pid in &frozen {
        signal(*pid, "CONT");
    }
    let ack = a.expect("ack", Duration::from_secs(30)).await;
    assert_eq!(
        (ack["client_msg_id"].as_str(), &ack["seq"]),
        (Some("h-2"), &Value::from(2))
    );
    wait_health(worker_addr, T, "worker after the store answers", |s, _| {
        s == 200
    })
    .await;
    a.send_text_to(&bob.user_id, "h-3", "after").await;
    assert_eq!(a.expect("ack", T).await["seq"], 3);
}
