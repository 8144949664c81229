use std::time::Duration;

use fastwebsockets::OpCode;
use msgr_tests::{TestApp, WsEvent};
use serde_json::json;

use crate::T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_connection_keeps_working() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let huge = "x".repeat(65_537);
    let ghost = format!("u{}", msgr_tests::uuid_like());
    let cases: Vec<(String, &str)> = vec![
        ("{this is not json".to_owned(), "invalid_json"),
        (json!({"type":"dance"}).to_string(), "unknown_type"),
        (json!({"no_type": true}).to_string(), "invalid_frame"),
        (
            json!({"type":"send","client_msg_id":42,"to_user":bob.user_id,"text":"x"}).to_string(),
            "invalid_frame",
        ),
        (
            json!({"type":"send","client_msg_id":"b1","to_user":bob.user_id,"text":7}).to_string(),
            "invalid_frame",
        ),
        (
            json!({"type":"send","client_msg_id":"b2","text":"x"}).to_string(),
            "missing_recipient",
        ),
        (
            json!({"type":"send","client_msg_id":"b3","to_user":bob.user_id}).to_string(),
            "empty_message",
        ),
        (
            json!({"type":"send","client_msg_id":"b4","to_user":bob.user_id,"text":huge})
                .to_string(),
            "too_large",
        ),
        (
            json!({"type":"send","client_msg_id":"b5","to_user":"../../etc","text":"x"})
                .to_string(),
            "unknown_recipient",
        ),
        (
            json!({"type":"send","client_msg_id":"b6","to_user":alice.user_id,"text":"x"})
                .to_string(),
            "invalid_recipient",
        ),
        (
            json!({"type":"receipt","conversation_id":"nope","status":"read","up_to_seq":1})
                .to_string(),
            "unknown_conversation",
        ),
        (
            json!({"type":"receipt","conversation_id":"x","status":"read","up_to_seq":"one"})
                .to_string(),
            "invalid_frame",
        ),
    ];
    for (frame, code) in &cases {
        a.send_text(frame).await;
        let err = a.expect("error", T).await;
        assert_eq!(err["code"], *code, "for {}", &frame[..frame.len().min(80)]);
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    a.send_binary(b"\x00\x01binary").await;
    assert_eq!(a.expect("error", T).await["code"], "binary_not_supported");
    // Errors about a send name its client_msg_id.
    a.send_json(&json!({"type":"send","client_msg_id":"b4","to_user":bob.user_id,"text":"x".repeat(65_537)})).await;
    assert_eq!(a.expect("error", T).await["client_msg_id"], "b4");

    // A well-formed id of a user that does not exist: refused by the sequencer.
    a.send_text_to(&ghost, "to-ghost", "anyone there?").await;
    let err = a.expect("error", T).await;
    assert_eq!(
        (err["code"].as_str(), err["client_msg_id"].as_str()),
        (Some("unknown_recipient"), Some("to-ghost"))
    );

    // Exactly 65,536 bytes of text is allowed, and the socket still works.
    a.send_text_to(&bob.user_id, "ok", &"y".repeat(65_536))
        .await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);
    a.send_json(&json!({"type":"ping"})).await;
    a.expect("pong", T).await;

    // Nothing from the bad frames was stored.
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    let msgs = h["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["client_msg_id"], "ok");
    let (_, chats) = app
        .get(&format!("/chat/{}", alice.user_id), &alice.token)
        .await;
    assert_eq!(
        chats["chats"].as_array().map(Vec::len),
        Some(1),
        "no conversation with the ghost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_repeated_garbage_close_the_socket_but_not_the_server() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;

    // The close code reaches the client every time: the edge reads (and
    // drops) the rest of the frame instead of resetting the connection.
    for _ in 0..10 {
        let mut a = app.ws(&alice.token).await;
        a.send_text(&"z".repeat(300 * 1024)).await;
        let closed = loop {
            match a.next(T).await {
                Some(WsEvent::Closed(code)) => break code,
                Some(WsEvent::Json(_)) => {}
                None => panic!("no close after an oversized frame"),
            }
        };
        assert_eq!(closed, Some(1009), "close code");
    }

    // A fragmented message is reassembled, up to the same limit in all.
    let mut f = app.ws(&alice.token).await;
    f.send_frame(false, OpCode::Text, &vec![b' '; 200 * 1024])
        .await;
    f.send_frame(true, OpCode::Continuation, &vec![b' '; 100 * 1024])
        .await;
    let mut code = None;
    while let Some(ev) = f.next(T).await {
        if let WsEvent::Closed(c) = ev {
            code = c;
            break;
        }
    }
    assert_eq!(code, Some(1009), "close code");

    let mut b = app.ws(&alice.token).await;
    for _ in 0..40 {
        b.send_text("garbage").await;
    }
    let mut code = None;
    while let Some(ev) = b.next(T).await {
        if let WsEvent::Closed(c) = ev {
            code = c;
            break;
        }
    }
    assert_eq!(
        code,
        Some(1008),
        "a client that keeps misbehaving is closed with 1008"
    );

    // The edge still serves.
    let mut c = app.ws(&alice.token).await;
    c.send_json(&json!({"type":"ping"})).await;
    c.expect("pong", T).await;
    let (s, _) = app
        .get(&format!("/chat/{}", alice.user_id), &alice.token)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_keep_up_is_disconnected_and_others_are_unaffected() {
    let app = TestApp::spawn_with_edge(|c| {
        c.slow_client_timeout_ms = 300;
        c.max_in_flight = 10_000;
    })
    .await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let mut slow = app.ws(&bob.token).await; // never reads until the end
    let mut a = app.ws(&alice.token).await;
    let mut c = app.ws(&carol.token).await;
    let text = "s".repeat(60_000);
    // ~24 MB towards bob: more than loopback socket buffers hold.
    for i in 0..400 {
        a.send_text_to(&bob.user_id, &format!("flood-{i}"), &text)
            .await;
        if i % 50 == 49 {
            // Keep acks flowing so alice is not the slow one.
            for _ in 0..50 {
                a.expect("ack", T).await;
            }
        }
    }
    // Carol is served normally meanwhile.
    c.send_text_to(&alice.user_id, "hi", "still fast?").await;
    assert_eq!(c.expect("ack", T).await["seq"], 1);

    // Bob's socket was closed by the server: reading it ends, with 1013 if the
    // close frame got through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut end = None;
    while tokio::time::Instant::now() < deadline {
        match slow.next(Duration::from_secs(5)).await {
            Some(WsEvent::Closed(code)) => {
                end = Some(code);
                break;
            }
            Some(WsEvent::Json(_)) => {}
            None => break,
        }
    }
    let code = end.expect("the slow client's socket was closed by the server");
    assert!(code.is_none() || code == Some(1013), "close code {code:?}");
    // Everything is in history for bob to sync (pages of 60 KB messages are
    // bounded in bytes: page on from the last seq while has_more).
    let mut after = 390;
    let mut seqs: Vec<u64> = Vec::new();
    loop {
        let (_, h) = app
            .get(
                &format!("/messages/{}/{}?after={after}", bob.user_id, alice.user_id),
                &bob.token,
            )
            .await;
        let page: Vec<u64> = h["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["seq"].as_u64())
            .collect();
        assert!(!page.is_empty() || h["has_more"] != true, "{h}");
        seqs.extend(&page);
        if h["has_more"] != true {
            break;
        }
        after = *page.last().expect("a page");
    }
    assert_eq!(seqs, (391..=400).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ping_frames_is_answered_and_the_socket_stays_open() {
    // Arrange
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let mut ws = app.ws(&alice.token).await;

    // Act: far more pings than the edge queues control frames for, back to back.
    for i in 0..200u8 {
        ws.send_ping_frame(&[i]).await;
    }
    ws.send_json(&json!({"type":"ping"})).await;

    // Assert: still open and answering (pongs may be merged: only the latest
    // ping needs one).
    assert_eq!(ws.expect("pong", T).await["type"], "pong");
}
