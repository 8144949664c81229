use msgr_tests::TestApp;
use serde_json::json;

use crate::T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_and_read_watermarks_reach_the_sender_and_never_move_back() {
    // Arrange: alice sends three messages to bob.
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    for i in 1..=3 {
        a.send_text_to(&bob.user_id, &format!("m{i}"), "hi").await;
        a.expect("ack", T).await;
    }
    let conv = b.expect("message", T).await["message"]["conversation_id"]
        .as_str()
        .expect("conv")
        .to_owned();

    // Act: bob's device says delivered up to 3, then read up to 2.
    b.send_json(
        &json!({"type":"receipt","conversation_id":conv,"status":"delivered","up_to_seq":3}),
    )
    .await;
    let r = a.expect("receipt", T).await;
    assert_eq!(
        (r["status"].as_str(), r["up_to_seq"].as_u64()),
        (Some("delivered"), Some(3))
    );
    assert_eq!(r["user_id"], bob.user_id.as_str());
    assert_eq!(r["conversation_id"], conv.as_str());
    b.send_json(&json!({"type":"receipt","conversation_id":conv,"status":"read","up_to_seq":2}))
        .await;
    let r = a.expect("receipt", T).await;
    assert_eq!(
        (r["status"].as_str(), r["up_to_seq"].as_u64()),
        (Some("read"), Some(2))
    );

    // A lower watermark changes nothing and announces nothing.
    b.send_json(&json!({"type":"receipt","conversation_id":conv,"status":"read","up_to_seq":1}))
        .await;
    b.send_json(
        &json!({"type":"receipt","conversation_id":conv,"status":"delivered","up_to_seq":2}),
    )
    .await;
    let quiet = a.drain(std::time::Duration::from_millis(500)).await;
    assert!(
        quiet.iter().all(|f| f["type"] != "receipt"),
        "no receipt for lower watermarks: {quiet:?}"
    );

    // Assert: history shows the statuses to the sender only.
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    let statuses: Vec<_> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("read"), json!("read"), json!("delivered")]
    );
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert!(h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .all(|m| m.get("status").is_none()));

    // Bob's unread count follows his read watermark; replying reads everything.
    let (_, chats) = app.get(&format!("/chat/{}", bob.user_id), &bob.token).await;
    assert_eq!(chats["chats"][0]["unread_count"], 1);
    b.send_text_to(&alice.user_id, "reply", "got them").await;
    b.expect("ack", T).await;
    let (_, chats) = app.get(&format!("/chat/{}", bob.user_id), &bob.token).await;
    assert_eq!(chats["chats"][0]["unread_count"], 0);
    assert_eq!(chats["chats"][0]["last_seq"], 4);
    // And alice sees bob's reply as unread.
    let (_, chats) = app
        .get(&format!("/chat/{}", alice.user_id), &alice.token)
        .await;
    assert_eq!(chats["chats"][0]["unread_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_post_receipts_into_other_peoples_chats() {
    let app = TestApp::spawn().await;
    let (alice, bob, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "m1", "private").await;
    let conv = a.expect("ack", T).await["conversation_id"]
        .as_str()
        .expect("conv")
        .to_owned();
    let mut e = app.ws(&eve.token).await;
    e.send_json(&json!({"type":"receipt","conversation_id":conv,"status":"read","up_to_seq":1}))
        .await;
    let err = e.expect("error", T).await;
    assert_eq!(err["code"], "not_member");
    let (_, h) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(
        h["messages"][0]["status"], "sent",
        "eve's receipt moved nothing"
    );
}
