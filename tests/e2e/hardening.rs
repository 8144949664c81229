//! Faults found by probing a running stack from outside, each with the
//! client-visible answer the contract documents.

use std::collections::HashSet;
use std::time::Duration;

use msgr_tests::{TestApp, WsEvent};
use serde_json::{json, Value};

use crate::T;

/// A client that pipelines past the in-flight cap is told `rate_limited`
/// for the sends over it, and that is backpressure, not abuse: the socket
/// stays open and every send that was taken gets its ack on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelining_past_the_in_flight_cap_is_backpressure_not_abuse() {
    let app = TestApp::spawn_with_edge(|e| e.max_in_flight = 4).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    const SENDS: usize = 400;
    // Written back to back, no reads: far more than 4 are in flight.
    for i in 0..SENDS {
        a.send_text_to(&bob.user_id, &format!("p{i}"), "burst")
            .await;
    }
    let (mut acked, mut limited) = (HashSet::new(), HashSet::new());
    let mut closed = None;
    while acked.len() + limited.len() < SENDS {
        match a.next(T).await {
            Some(WsEvent::Json(v)) if v["type"] == "ack" => {
                acked.insert(v["client_msg_id"].as_str().unwrap_or_default().to_owned());
            }
            Some(WsEvent::Json(v)) if v["type"] == "error" => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                limited.insert(v["client_msg_id"].as_str().unwrap_or_default().to_owned());
            }
            Some(WsEvent::Json(_)) => {}
            Some(WsEvent::Closed(code)) => {
                closed = Some(code);
                break;
            }
            None => break,
        }
    }
    assert_eq!(closed, None, "the socket was closed under backpressure");
    // Otherwise the test proves nothing about the 32-bad-frames rule.
    assert!(
        limited.len() >= 64,
        "only {} sends were rate limited; the burst did not reach the cap",
        limited.len()
    );
    assert_eq!(
        acked.len() + limited.len(),
        SENDS,
        "{} acked + {} rate limited of {SENDS}",
        acked.len(),
        limited.len()
    );
    assert!(acked.is_disjoint(&limited));
    // What was taken is stored, once each, and nothing else.
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}?limit=500", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    let stored: HashSet<String> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stored, acked);
    // The connection still works after it.
    a.send_text_to(&bob.user_id, "after", "still here").await;
    let ack = a.expect("ack", T).await;
    assert_eq!(ack["client_msg_id"], "after");
}

/// A receipt for a group from someone outside it is answered `not_member`,
/// as one for a direct chat is, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_receipt_from_a_stranger_is_refused_like_a_direct_one() {
    let app = TestApp::spawn().await;
    let (alice, bob, mallory) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("mallory").await,
    );
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "Closed", "members": [bob.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let group = g["group_id"].as_str().expect("group_id").to_owned();
    let mut a = app.ws(&alice.token).await;
    a.send_json(&json!({"type":"send","client_msg_id":"g1","to_group":group,"text":"hi"}))
        .await;
    let ack = a.expect("ack", T).await;
    let direct = {
        a.send_text_to(&bob.user_id, "d1", "hi bob").await;
        a.expect("ack", T).await["conversation_id"]
            .as_str()
            .expect("conversation_id")
            .to_owned()
    };

    let mut m = app.ws(&mallory.token).await;
    for conv in [&direct, &group] {
        m.send_json(
            &json!({"type":"receipt","conversation_id":conv,"status":"read","up_to_seq":1}),
        )
        .await;
        let e = m.expect("error", T).await;
        assert_eq!(e["code"], "not_member", "{conv}: {e}");
        if conv == &group {
            assert_eq!(e["conversation_id"], group.as_str(), "{e}");
        }
    }
    // Nothing was recorded for mallory, and her socket still works.
    let (s, r) = app
        .get(
            &format!("/groups/{group}/messages/{}/receipts", ack["seq"]),
            &alice.token,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(!r.to_string().contains(&mallory.user_id), "{r}");
    m.send_text_to(&alice.user_id, "m1", "hello").await;
    assert_eq!(m.expect("ack", T).await["client_msg_id"], "m1");
    // A member's receipt is not refused (and the refusal above was not
    // shown to the member's connections).
    let mut b = app.ws(&bob.token).await;
    b.send_json(&json!({"type":"receipt","conversation_id":group,"status":"read","up_to_seq":1}))
        .await;
    let seen = a.expect("receipt", T).await;
    assert_eq!(seen["user_id"], bob.user_id.as_str(), "{seen}");
    let stray: Vec<Value> = b
        .drain(Duration::from_millis(500))
        .await
        .into_iter()
        .filter(|v| v["type"] == "error")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// Path parameters that are not valid percent-encoded UTF-8 are refused
/// with the contract's JSON error body on every route that has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_path_parameters_get_the_json_error_body() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let me = &alice.user_id;
    let bad = "%FF%FE";
    let routes = [
        ("GET", format!("/users/{bad}")),
        ("GET", format!("/chat/{bad}")),
        ("GET", format!("/messages/{me}/{bad}")),
        ("GET", format!("/groups/{bad}")),
        ("POST", format!("/groups/{bad}/add")),
        ("DELETE", format!("/groups/{bad}/remove")),
        ("GET", format!("/groups/{bad}/messages/1/receipts")),
        ("GET", format!("/media/{bad}")),
        ("GET", format!("/media/{bad}/thumbnail")),
    ];
    for (method, path) in routes {
        let r = msgr_tests::http_stream(
            app.addr,
            method,
            &path,
            &[
                ("authorization", format!("Bearer {}", alice.token)),
                ("content-type", "application/json".to_owned()),
            ],
            futures_util::stream::once(async { bytes::Bytes::from_static(b"{}") }),
        )
        .await;
        assert_eq!(r.status, 400, "{method} {path}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let body: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"));
        assert_eq!(
            body["error"]["code"], "invalid_path",
            "{method} {path}: {body}"
        );
    }
    // And the server is fine.
    let (s, _) = app.get(&format!("/users/{me}"), &alice.token).await;
    assert_eq!(s, 200);
}

/// A chat whose latest page is large (20 texts of 60 KB, more than the bus
/// carries in one reply) is read page by page: every answer fits, says
/// `has_more`, and paging back finds every message once. The group page and
/// the chat list likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_of_large_messages_is_read_page_by_page() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "Big", "members": [bob.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let group = g["group_id"].as_str().expect("group_id").to_owned();
    let mut a = app.ws(&alice.token).await;
    const N: u64 = 20;
    for i in 0..N {
        let text = format!("{i:02}{}", "x".repeat(60_000));
        a.send_text_to(&bob.user_id, &format!("d{i}"), &text).await;
        a.send_json(
            &json!({"type":"send","client_msg_id":format!("g{i}"),"to_group":group,"text":text}),
        )
        .await;
    }
    let mut acks = 0;
    while acks < 2 * N {
        a.expect("ack", T).await;
        acks += 1;
    }
    for (path, key) in [
        (format!("/messages/{}/{}", bob.user_id, alice.user_id), "d"),
        (format!("/groups/{group}"), "g"),
    ] {
        let mut seen = Vec::new();
        let mut before: Option<u64> = None;
        let mut pages = 0;
        loop {
            let q = before.map_or(String::new(), |b| format!("?before={b}"));
            let (s, page) = app.get(&format!("{path}{q}"), &bob.token).await;
            assert_eq!(s, 200, "{path}{q}: {page}");
            let msgs = page["messages"].as_array().expect("messages").clone();
            assert!(!msgs.is_empty(), "{path}{q}: an empty page");
            pages += 1;
            let mut seqs: Vec<u64> = msgs
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq"))
                .collect();
            for m in &msgs {
                assert_eq!(m["text"].as_str().map(str::len), Some(60_002));
            }
            seqs.extend(seen);
            seen = seqs;
            if page["has_more"] != true {
                break;
            }
            before = seen.first().copied();
            assert!(pages < 10, "{path}: paging does not end");
        }
        assert!(pages >= 2, "{path}: one page carried all {N} messages");
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(seen, want, "{path} ({key}): every message once, in order");
        // Forward from the start too.
        let (s, page) = app.get(&format!("{path}?after=0"), &bob.token).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["messages"][0]["seq"], 1);
        assert_eq!(page["has_more"], true);
    }
    // 20 chats whose last messages are 60 KB each: more than one reply
    // carries, unless the list holds previews.
    for i in 0..18 {
        let (s, g) = app
            .post(
                "/groups/create",
                &json!({"name": format!("Big {i}"), "members": [bob.user_id]}),
                Some(&alice.token),
            )
            .await;
        assert_eq!(s, 201, "{g}");
        let text = "y".repeat(60_000);
        a.send_json(&json!({"type":"send","client_msg_id":format!("c{i}"),"to_group":g["group_id"],"text":text}))
            .await;
        a.expect("ack", T).await;
    }
    let (s, chats) = app
        .get(&format!("/chat/{}?limit=50", bob.user_id), &bob.token)
        .await;
    assert_eq!(s, 200, "{chats}");
    let chats = chats["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 20);
    for c in chats {
        let text = c["last_message"]["text"].as_str().expect("a text preview");
        assert!(text.len() < 2_000 && text.len() > 100, "{}", text.len());
    }
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A burst of registrations (argon2id, 19 MiB of working memory per hash)
/// leaves the worker holding no more than its hashing threads' working
/// areas, not a 19 MiB block in every allocator arena a thread touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_burst_does_not_leave_the_worker_holding_memory() {
    let app = TestApp::spawn_with_worker_process(env!("CARGO_BIN_EXE_msgr-test-worker")).await;
    let pid = app.worker_pid().expect("the worker is a process");
    let before = rss_kib(pid);
    const N: usize = 400;
    const AT_ONCE: usize = 16;
    let addr = app.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..AT_ONCE {
        tasks.spawn(async move {
            for i in (t..N).step_by(AT_ONCE) {
                let name = format!("burst_{i}_{}", &msgr_tests::uuid_like()[..6]);
                let body = json!({"username": name, "password": "correct horse battery"});
                let (s, b) = msgr_tests::http(
                    addr,
                    "POST",
                    "/user/register",
                    None,
                    Some(body.to_string().into_bytes()),
                )
                .await;
                assert_eq!(s, 201, "{b}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("registrations");
    }
    let after = rss_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "worker RSS {} MiB before, {} MiB after {N} registrations",
        before / 1024,
        after / 1024
    );
    // Four hashing threads × 19 MiB, and room for the store's caches.
    assert!(
        grown_mib <= 110,
        "the worker grew by {grown_mib} MiB over {N} registrations ({} → {} MiB)",
        before / 1024,
        after / 1024
    );
}

/// A WebSocket opened by hand, for frames a well-behaved client library
/// never sends (unmasked ones).
struct RawWs(tokio::net::TcpStream);

impl RawWs {
    async fn open(app: &TestApp, token: &str) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        let req = format!(
            "GET /messages/send HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            app.addr
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1, "EOF in handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self(s)
    }

    /// Writes one frame; `mask: None` sends it unmasked.
    async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        use tokio::io::AsyncWriteExt as _;
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65_536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        self.0.write_all(&out).await.expect("write");
    }

    /// The next frame from the server: (opcode, payload), or `None` at EOF.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt as _;
        let read = async {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).await.ok()?;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.0.read_exact(&mut l).await.ok()?;
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.0.read_exact(&mut l).await.ok()?;
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut p = vec![0u8; usize::try_from(len).ok()?];
            self.0.read_exact(&mut p).await.ok()?;
            Some((h[0] & 0x0f, p))
        };
        tokio::time::timeout(T, read)
            .await
            .expect("no frame in time")
    }

    /// The next text frame as JSON, skipping others.
    async fn json(&mut self) -> Value {
        loop {
            match self.next().await {
                Some((1, p)) => return serde_json::from_slice(&p).expect("JSON"),
                Some((8, p)) => panic!("closed: {p:?}"),
                Some(_) => {}
                None => panic!("EOF"),
            }
        }
    }

    /// The close code the server sends, skipping frames before it.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Some((8, p)) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                Some((8, _)) | None => return None,
                Some(_) => {}
            }
        }
    }
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);
const TEXT: u8 = 1;
const CONTINUATION: u8 = 0;
const PING: u8 = 9;

/// RFC 6455 as proxies and non-browser clients use it: fragmented messages
/// are reassembled (with control frames between the fragments), unmasked
/// client frames and continuations of nothing are protocol errors (1002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_fragments_are_reassembled_and_unmasked_frames_refused() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);

    let mut w = RawWs::open(&app, &alice.token).await;
    w.frame(false, TEXT, br#"{"type":"pi"#, KEY).await;
    w.frame(true, PING, b"in between", KEY).await;
    w.frame(true, CONTINUATION, br#"ng"}"#, KEY).await;
    // Both answered, in either order: the control pong and the JSON one.
    let mut got = vec![w.next().await, w.next().await];
    got.sort();
    assert_eq!(
        got,
        vec![
            Some((1, br#"{"type":"pong"}"#.to_vec())),
            Some((10, b"in between".to_vec())),
        ]
    );
    // A send in three fragments, split inside a multi-byte character.
    let send = json!({"type":"send","client_msg_id":"frag","to_user":bob.user_id,"text":"héllo"})
        .to_string()
        .into_bytes();
    let cut = send.iter().position(|&b| b == 0xc3).expect("é") + 1;
    w.frame(false, TEXT, &send[..10], KEY).await;
    w.frame(false, CONTINUATION, &send[10..cut], KEY).await;
    w.frame(true, CONTINUATION, &send[cut..], KEY).await;
    let ack = w.json().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["client_msg_id"], "frag");

    let mut u = RawWs::open(&app, &alice.token).await;
    u.frame(true, TEXT, br#"{"type":"ping"}"#, None).await;
    assert_eq!(u.close_code().await, Some(1002), "an unmasked frame");

    let mut c = RawWs::open(&app, &alice.token).await;
    c.frame(true, CONTINUATION, b"orphan", KEY).await;
    assert_eq!(
        c.close_code().await,
        Some(1002),
        "a continuation of nothing"
    );

    let mut n = RawWs::open(&app, &alice.token).await;
    n.frame(false, TEXT, b"{", KEY).await;
    n.frame(true, TEXT, br#"{"type":"ping"}"#, KEY).await;
    assert_eq!(n.close_code().await, Some(1002), "a new message inside one");

    // The edge is fine, and so is the message sent in fragments.
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["messages"][0]["text"], "héllo");
}

/// A REST call from `from` (an address the edge trusts from
/// `X-Forwarded-For` in this test): status, `Retry-After`, body.
async fn call_from(
    app: &TestApp,
    from: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Option<u64>, Value) {
    let mut headers = vec![
        ("x-forwarded-for", from.to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}")));
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let r = msgr_tests::http_stream(
        app.addr,
        method,
        path,
        &headers,
        futures_util::stream::once(async move { bytes::Bytes::from(bytes) }),
    )
    .await;
    let retry = r.header("retry-after").and_then(|v| v.parse().ok());
    (
        r.status,
        retry,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// Every door a stranger can knock on has a limit, answered 429 with
/// `Retry-After` (REST) or `rate_limited` (WebSocket); repeated wrong
/// passwords lock that account at that address only, for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_login_locks_answer_with_when_to_retry() {
    let app = TestApp::spawn_with_edge(|e| {
        e.limits.enabled = true;
        e.limits.trust_forwarded_for = true;
        e.limits.registrations_per_hour = 3;
        e.limits.reads_per_minute = 20;
        e.limits.lookups_per_minute = 10;
        e.limits.sends_per_second = 5;
        e.limits.typing_per_second = 2;
    })
    .await;
    let creds = |name: &str| json!({"username": name, "password": "correct horse battery"});
    let tag = &msgr_tests::uuid_like()[..6];

    // Registrations per address.
    for i in 0..3 {
        let (s, _, b) = call_from(
            &app,
            "10.0.0.1",
            "POST",
            "/user/register",
            None,
            Some(&creds(&format!("r{i}_{tag}"))),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, retry, b) = call_from(
        &app,
        "10.0.0.1",
        "POST",
        "/user/register",
        None,
        Some(&creds(&format!("r3_{tag}"))),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{b}"
    );
    assert!(
        retry.is_some_and(|r| (1..=1200).contains(&r)),
        "Retry-After {retry:?}"
    );
    let (s, _, b) = call_from(
        &app,
        "10.0.0.2",
        "POST",
        "/user/register",
        None,
        Some(&creds(&format!("owner_{tag}"))),
    )
    .await;
    assert_eq!(s, 201, "another address registers: {b}");

    // Wrong passwords: 401 five times, then the pair is locked, even for
    // the right password; the owner's own address is not.
    let owner = format!("owner_{tag}");
    let wrong = json!({"username": owner, "password": "wrong wrong wrong"});
    for _ in 0..5 {
        let (s, _, b) =
            call_from(&app, "10.0.0.66", "POST", "/user/login", None, Some(&wrong)).await;
        assert_eq!(s, 401, "{b}");
    }
    let (s, retry, _) = call_from(
        &app,
        "10.0.0.66",
        "POST",
        "/user/login",
        None,
        Some(&creds(&owner)),
    )
    .await;
    assert_eq!(s, 429);
    assert!(
        retry.is_some_and(|r| (20..=30).contains(&r)),
        "Retry-After {retry:?}"
    );
    let (s, _, login) = call_from(
        &app,
        "10.0.0.2",
        "POST",
        "/user/login",
        None,
        Some(&creds(&owner)),
    )
    .await;
    assert_eq!(s, 200, "the owner logs in from home: {login}");
    let token = login["token"].as_str().expect("token").to_owned();
    let user_id = login["user_id"].as_str().expect("user_id").to_owned();

    // Reads and lookups per user.
    let mut limited = 0;
    for _ in 0..30 {
        let (s, retry, _) = call_from(
            &app,
            "10.0.0.2",
            "GET",
            &format!("/chat/{user_id}"),
            Some(&token),
            None,
        )
        .await;
        match s {
            200 => {}
            429 => {
                assert!(retry.is_some());
                limited += 1;
            }
            other => panic!("chat list: {other}"),
        }
    }
    assert!(
        (7..=10).contains(&limited),
        "{limited} of 30 chat-list reads limited at 20 a minute"
    );
    let mut limited = 0;
    for _ in 0..15 {
        let (s, _, _) = call_from(
            &app,
            "10.0.0.2",
            "GET",
            &format!("/users/{user_id}"),
            Some(&token),
            None,
        )
        .await;
        limited += usize::from(s == 429);
    }
    assert!(
        (3..=5).contains(&limited),
        "{limited} of 15 lookups limited at 10 a minute"
    );

    // Sends per user and typing per connection: rate_limited frames, the
    // socket stays open, and a resend later is taken.
    let peer = app.user("peer").await;
    let mut ws = app.ws(&token).await;
    for i in 0..12 {
        ws.send_text_to(&peer.user_id, &format!("s{i}"), "hi").await;
    }
    for _ in 0..6 {
        ws.send_json(&json!({"type":"typing","conversation_id": format!("d_{}", "x")}))
            .await;
    }
    let frames = ws.drain(Duration::from_millis(700)).await;
    let codes: Vec<(&str, Option<&str>)> = frames
        .iter()
        .filter(|f| f["type"] == "error")
        .map(|f| {
            (
                f["code"].as_str().unwrap_or(""),
                f["client_msg_id"].as_str(),
            )
        })
        .collect();
    let sends_limited: Vec<_> = codes
        .iter()
        .filter(|(c, id)| *c == "rate_limited" && id.is_some())
        .collect();
    let typing_limited = codes
        .iter()
        .filter(|(c, id)| *c == "rate_limited" && id.is_none())
        .count();
    assert!(codes.iter().all(|(c, _)| *c == "rate_limited"), "{codes:?}");
    assert!((4..=7).contains(&sends_limited.len()), "{codes:?}");
    assert!((2..=4).contains(&typing_limited), "{codes:?}");
    let acked = frames.iter().filter(|f| f["type"] == "ack").count();
    assert_eq!(acked + sends_limited.len(), 12, "{frames:?}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let again = sends_limited[0].1.expect("cmid").to_owned();
    ws.send_text_to(&peer.user_id, &again, "hi").await;
    assert_eq!(ws.expect("ack", T).await["client_msg_id"], again.as_str());
}

/// Every full `msgr.v1.rpc.…` subject named in `text` (patterns like
/// `msgr.v1.rpc.*` left out).
fn rpc_subjects(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("msgr.v1.rpc.") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(tail.len());
        let s = tail[..end].trim_end_matches('.');
        let next = tail[end..].chars().next();
        if !matches!(next, Some('*' | '{' | '<')) && s.len() > "msgr.v1.rpc.".len() {
            out.insert(s.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// The integrators' documents and the workers agree on the request/reply
/// services: the README's table, `asyncapi.yaml` and the subjects a live
/// worker answers are the same set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_services_are_the_ones_the_workers_answer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let known: std::collections::BTreeSet<String> = msgr_nats::subject::rpc::ALL
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let table: String = readme
        .lines()
        .filter(|l| l.starts_with("| `msgr.v1.rpc."))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        rpc_subjects(&table),
        known,
        "the README's table of services"
    );
    let stray: Vec<_> = rpc_subjects(&readme).difference(&known).cloned().collect();
    assert!(
        stray.is_empty(),
        "the README names services that do not exist: {stray:?}"
    );
    let asyncapi =
        std::fs::read_to_string(root.join("schemas/asyncapi.yaml")).expect("asyncapi.yaml");
    let channels: String = asyncapi
        .lines()
        .filter(|l| l.trim_start().starts_with("address: msgr.v1.rpc."))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(rpc_subjects(&channels), known, "asyncapi.yaml's channels");
    let stray: Vec<_> = rpc_subjects(&asyncapi)
        .difference(&known)
        .cloned()
        .collect();
    assert!(
        stray.is_empty(),
        "asyncapi.yaml names services that do not exist: {stray:?}"
    );

    // Each is answered (an empty request is refused, but answered).
    let app = TestApp::spawn().await;
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    for s in &known {
        let r = tokio::time::timeout(T, nats.request(s.clone(), bytes::Bytes::new())).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{s}: no worker answers ({e})"),
            Err(_) => panic!("{s}: no answer in time"),
        }
    }
}

/// A tiny deterministic generator for the bounded fuzz runs below.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `seed` with a few bytes flipped, inserted or cut, or random bytes.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(5) {
                0 if !b.is_empty() => {
                    let j = self.below(b.len());
                    b[j] = self.next() as u8;
                }
                1 => {
                    let j = self.below(b.len() + 1);
                    b.insert(j, self.next() as u8);
                }
                2 => b.truncate(self.below(b.len() + 1)),
                3 => b = (0..self.below(96)).map(|_| self.next() as u8).collect(),
                _ => {}
            }
        }
        b
    }
}

/// Hostile and malformed input from both sides neither crashes nor blocks
/// anything: commands of random and mutated bytes published straight onto a
/// live conversation's partition (as an integrator could), random history
/// cursors and page bounds, and random multipart bodies. The partition goes
/// on sequencing, history stays dense, every REST answer is a 2xx or a
/// documented 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_bus_and_in_requests_neither_crash_nor_block() {
    use prost::Message as _;
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "before", "before the storm")
        .await;
    a.expect("ack", T).await;
    let conv = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    let p = msgr_core::id::partition_of(&conv, 16);
    let send = msgr_schemas::pb::v1::SendCommand {
        sender_id: alice.user_id.clone(),
        client_msg_id: "hostile".to_owned(),
        conversation_id: conv.clone(),
        target: Some(msgr_schemas::pb::v1::send_command::Target::ToUser(
            bob.user_id.clone(),
        )),
        text: Some("x".to_owned()),
        media_id: None,
        received_at_ms: 1,
    }
    .encode_to_vec();
    let receipt = msgr_schemas::pb::v1::ReceiptCommand {
        conversation_id: conv.clone(),
        user_id: bob.user_id.clone(),
        status: 2,
        up_to_seq: 1,
        at_ms: 1,
    }
    .encode_to_vec();
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
    let subjects = [
        msgr_nats::subject::in_send(p, &conv),
        msgr_nats::subject::in_receipt(p, &conv),
        format!("msgr.v1.in.{p}.send.not-a-conversation"),
        format!("msgr.v1.in.{p}.bogus.{conv}"),
    ];
    let mut rng = Xorshift(0x2545_F491_4F6C_DD1D);
    // `just fuzz` publishes many more.
    let commands: usize = std::env::var("MSGR_FUZZ_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    for i in 0..commands {
        let seed = if i % 2 == 0 { &send } else { &receipt };
        let payload = rng.mutate(seed);
        let subject = subjects[rng.below(subjects.len())].clone();
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored in the stream");
    }
    // The partition still sequences: a real send right after is acked.
    a.send_text_to(&bob.user_id, "after", "after the storm")
        .await;
    let ack = a.expect("ack", Duration::from_secs(20)).await;
    assert_eq!(ack["client_msg_id"], "after");
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}?limit=200", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    let msgs = h["messages"].as_array().expect("messages");
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1, "dense history");
    }
    let texts: Vec<&str> = msgs.iter().filter_map(|m| m["text"].as_str()).collect();
    assert!(texts.contains(&"before the storm") && texts.contains(&"after the storm"));

    // Random cursors and page bounds.
    for _ in 0..150 {
        let junk: String = (0..rng.below(40))
            .map(|_| char::from(b"aZ09-_.~%:/+=!&?#"[rng.below(17)]))
            .collect();
        let enc: String = junk.bytes().map(|b| format!("%{b:02X}")).collect();
        for path in [
            format!("/chat/{}?cursor={enc}", bob.user_id),
            format!("/messages/{}/{}?before={enc}", bob.user_id, alice.user_id),
            format!(
                "/messages/{}/{}?after={}&limit={}",
                bob.user_id,
                alice.user_id,
                rng.next(),
                rng.next() % 1000
            ),
        ] {
            let (s, body) = app.get(&path, &bob.token).await;
            assert!(s == 200 || s == 400, "{path}: {s} {body}");
            if s == 400 {
                assert_eq!(body["error"]["code"], "invalid_query", "{path}");
            }
        }
    }

    // Random multipart bodies.
    let good = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";
    for _ in 0..100 {
        let body = rng.mutate(good);
        let r = msgr_tests::http_stream(
            app.addr,
            "POST",
            "/media",
            &[
                ("authorization", format!("Bearer {}", bob.token)),
                ("content-type", "multipart/form-data; boundary=b".to_owned()),
            ],
            futures_util::stream::once(async move { bytes::Bytes::from(body) }),
        )
        .await;
        assert!(
            r.status == 201 || (400..500).contains(&r.status),
            "multipart: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // And the edge and worker are still there.
    let (s, _) = app
        .get(&format!("/users/{}", bob.user_id), &bob.token)
        .await;
    assert_eq!(s, 200);
}

/// With a certificate and key the edge serves HTTPS and WSS (rustls), with
/// `Strict-Transport-Security`; plain HTTP on that port gets nowhere. The
/// certificate is made at run time (self-signed, for 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_wss_with_hsts() {
    use http_body_util::BodyExt as _;
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    let (addr, _edge) = app
        .extra_edge(|e| {
            e.tls = Some(msgr_edge::tls::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                hsts_max_age_secs: 31_536_000,
            });
        })
        .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        connector
            .connect(server_name.clone(), tcp)
            .await
            .expect("TLS handshake")
    };

    // HTTPS, with HSTS.
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls().await))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("/users/{}", bob.user_id))
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", alice.token))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let user: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(user["user_id"], bob.user_id.as_str());

    // WSS: a send is acked.
    struct Spawn;
    impl<F> hyper::rt::Executor<F> for Spawn
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        fn execute(&self, f: F) {
            tokio::spawn(f);
        }
    }
    let req = hyper::Request::builder()
        .uri("/messages/send")
        .header("host", "127.0.0.1")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header("authorization", format!("Bearer {}", alice.token))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let (ws, _) = fastwebsockets::handshake::client(&Spawn, req, tls().await)
        .await
        .expect("WebSocket over TLS");
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    let send =
        json!({"type":"send","client_msg_id":"tls-1","to_user":bob.user_id,"text":"over TLS"})
            .to_string();
    ws.write_frame(fastwebsockets::Frame::text(
        fastwebsockets::Payload::Borrowed(send.as_bytes()),
    ))
    .await
    .expect("write");
    let ack = loop {
        let f = tokio::time::timeout(T, ws.read_frame())
            .await
            .expect("a frame in time")
            .expect("read");
        let v: Value = serde_json::from_slice(&f.payload).expect("JSON");
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["client_msg_id"], "tls-1");

    // Plain HTTP to the TLS port is not served.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was answered on the TLS port"
    );
}

/// An integrator's durable consumer on `MSGR_IN` that stops pulling and
/// acking does not keep the commands forever: JetStream deletes it once it
/// has been idle for `consumer_idle_secs` (2 s here, a day by default) and
/// the commands it held go; every command also leaves after
/// `command_max_age_secs`. The worker reports the backlog per integrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrator_that_stops_acking_cannot_fill_the_disk() {
    let app = TestApp::spawn_with_worker(|w| {
        w.consumer_idle_secs = 2;
        w.command_max_age_secs = 3_600;
    })
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
    let mut stream = js
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("stream");
    let info = stream.info().await.expect("info").clone();
    assert_eq!(info.config.max_age, Duration::from_secs(3_600));
    // An integrator's durable consumer, which then never pulls.
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("ANALYTICS".to_owned()),
            ..Default::default()
        })
        .await
        .expect("an integrator's consumer");
    let mut consumer = consumer;
    let cfg = consumer.info().await.expect("info").config.clone();
    assert_eq!(
        cfg.inactive_threshold,
        Duration::from_secs(2),
        "the stream's limit is the consumer's default"
    );
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    for i in 0..50 {
        a.send_text_to(&bob.user_id, &format!("i{i}"), "hello")
            .await;
    }
    for _ in 0..50 {
        a.expect("ack", T).await;
    }
    let held = stream.info().await.expect("info").state.messages;
    assert!(
        held >= 50,
        "the integrator holds the commands it has not acked ({held})"
    );
    // Idle past the threshold: the consumer goes, and what it held with it.
    let start = std::time::Instant::now();
    loop {
        let messages = stream.info().await.expect("info").state.messages;
        let gone = stream.consumer_info("ANALYTICS").await.is_err();
        if gone && messages == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still {messages} commands held (consumer gone: {gone})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "an idle integrator's consumer and its 50 commands were gone {} ms after the last ack",
        start.elapsed().as_millis()
    );
    // Sequencers pull all the time: they are never idle, and messaging goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.send_text_to(&bob.user_id, "after", "still here").await;
    assert_eq!(a.expect("ack", T).await["client_msg_id"], "after");
}
