use msgr_tests::TestApp;

use crate::T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_ascending_with_before_after_and_limit() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    for i in 1..=30 {
        a.send_text_to(&bob.user_id, &format!("h{i}"), &format!("t{i}"))
            .await;
    }
    for _ in 0..30 {
        a.expect("ack", T).await;
    }
    let base = format!("/messages/{}/{}", bob.user_id, alice.user_id);
    let seqs = |v: &serde_json::Value| -> Vec<u64> {
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect()
    };

    let (s, latest) = app.get(&format!("{base}?limit=10"), &bob.token).await;
    assert_eq!(s, 200);
    assert_eq!(seqs(&latest), (21..=30).collect::<Vec<_>>());
    assert_eq!(latest["has_more"], true);
    let (_, older) = app
        .get(&format!("{base}?limit=10&before=21"), &bob.token)
        .await;
    assert_eq!(seqs(&older), (11..=20).collect::<Vec<_>>());
    let (_, oldest) = app
        .get(&format!("{base}?limit=25&before=11"), &bob.token)
        .await;
    assert_eq!(seqs(&oldest), (1..=10).collect::<Vec<_>>());
    assert_eq!(oldest["has_more"], false);
    let (_, newer) = app.get(&format!("{base}?after=25"), &bob.token).await;
    assert_eq!(seqs(&newer), (26..=30).collect::<Vec<_>>());
    assert_eq!(newer["has_more"], false);
    let (_, all) = app.get(&base, &bob.token).await;
    assert_eq!(seqs(&all).len(), 30, "default limit 50");
    assert_eq!(all["conversation_id"], latest["conversation_id"]);
    assert_eq!(all["messages"][0]["text"], "t1");

    // The limit is capped at 200 and must be a positive number.
    let (s, body) = app.get(&format!("{base}?limit=abc"), &bob.token).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (s, _) = app.get(&format!("{base}?limit=0"), &bob.token).await;
    assert_eq!(s, 400);
    let (s, _) = app.get(&format!("{base}?before=-1"), &bob.token).await;
    assert_eq!(s, 400);
    let (s, _) = app.get(&format!("{base}?limit=100000"), &bob.token).await;
    assert_eq!(s, 200);
    let (s, body) = app
        .get(&format!("{base}?after=9223372036854775808"), &bob.token)
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "past i64::MAX"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_get_403_or_404_and_never_data() {
    let app = TestApp::spawn().await;
    let (alice, bob, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "s1", "secret").await;
    a.expect("ack", T).await;

    let (s, body) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &eve.token,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(!body.to_string().contains("secret"));
    let (s, _) = app
        .get(&format!("/chat/{}", alice.user_id), &eve.token)
        .await;
    assert_eq!(s, 403);
    // Eve's own view of a chat with alice is empty, not alice and bob's chat.
    let (s, body) = app
        .get(
            &format!("/messages/{}/{}", eve.user_id, alice.user_id),
            &eve.token,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(0));
    // Unknown and malformed peers.
    let ghost = format!("u{}", msgr_tests::uuid_like());
    let (s, body) = app
        .get(&format!("/messages/{}/{ghost}", eve.user_id), &eve.token)
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("user_not_found"))
    );
    let (s, _) = app
        .get(
            &format!("/messages/{}/..%2F..%2Fetc", eve.user_id),
            &eve.token,
        )
        .await;
    assert_eq!(s, 404);
    let (s, body) = app.get("/no/such/endpoint", &eve.token).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_show_in_chat_list_and_history() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    // Bob is offline throughout.
    let mut a = app.ws(&alice.token).await;
    for i in 1..=3 {
        a.send_text_to(&bob.user_id, &format!("o{i}"), &format!("while away {i}"))
            .await;
        a.expect("ack", T).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut c = app.ws(&carol.token).await;
    c.send_text_to(&bob.user_id, "c1", "later").await;
    c.expect("ack", T).await;

    let (s, chats) = app.get(&format!("/chat/{}", bob.user_id), &bob.token).await;
    assert_eq!(s, 200);
    let list = chats["chats"].as_array().expect("chats");
    assert_eq!(list.len(), 2);
    assert_eq!(
        list[0]["peer_id"],
        carol.user_id.as_str(),
        "latest activity first"
    );
    assert_eq!(list[0]["kind"], "direct");
    assert_eq!(list[0]["title"], carol.username.as_str());
    assert_eq!(list[1]["peer_id"], alice.user_id.as_str());
    assert_eq!(
        (
            list[1]["unread_count"].as_u64(),
            list[1]["last_seq"].as_u64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(list[1]["last_message"]["text"], "while away 3");
    assert!(list[1]["updated_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let (_, page1) = app
        .get(&format!("/chat/{}?limit=1", bob.user_id), &bob.token)
        .await;
    assert_eq!(page1["chats"].as_array().map(Vec::len), Some(1));
    let cursor = page1["next_cursor"].as_str().expect("next_cursor");
    let (_, page2) = app
        .get(
            &format!("/chat/{}?limit=1&cursor={cursor}", bob.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(page2["chats"][0]["peer_id"], alice.user_id.as_str());
    assert!(page2["next_cursor"].is_null());

    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(3));
}
