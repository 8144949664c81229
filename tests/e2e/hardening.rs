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

/// A burst of registrations (argon2id, 19 MiB of working memory per hash)
/// leaves the worker holding no more than its hashing threads' working
/// areas, not a 19 MiB block in every allocator arena a thread touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_burst_does_not_leave_the_worker_holding_memory() {
    let app = TestApp::spawn_with_worker_process(env!("CARGO_BIN_EXE_msgr-test-worker")).await;
    let pid = app.worker_pid().expect("the worker is a process");
    let before = msgr_tests::rss_kib(pid);
    assert!(before > 0, "no resident memory for the worker (pid {pid})");
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
    let after = msgr_tests::rss_kib(pid);
    assert!(after > 0, "the worker (pid {pid}) is gone");
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
