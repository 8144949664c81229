//! Blocking, presence across edges, and typing in groups.

use std::time::Duration;

use msgr_tests::{TestApp, TestUser, WsClient};
use serde_json::{json, Value};

use crate::T;

/// The next `presence` frame about `user`.
async fn presence_of(ws: &mut WsClient, user: &TestUser) -> Value {
    loop {
        let p = ws.expect("presence", T).await;
        if p["user_id"] == user.user_id.as_str() {
            return p;
        }
    }
}

/// Presence frames about `user` until one says `online`.
async fn until_online(ws: &mut WsClient, user: &TestUser, online: bool) -> Value {
    loop {
        let p = presence_of(ws, user).await;
        if p["online"] == online {
            return p;
        }
    }
}

/// Whether no `kind` frame arrives before `quiet_ms` pass with nothing new.
async fn none_of(ws: &mut WsClient, kind: &str, quiet_ms: u64) -> bool {
    ws.drain(Duration::from_millis(quiet_ms))
        .await
        .iter()
        .all(|f| f["type"] != kind)
}

async fn refused(ws: &mut WsClient, cmid: &str) -> String {
    loop {
        let e = ws.expect("error", T).await;
        if e["client_msg_id"] == cmid {
            return e["code"].as_str().expect("code").to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_send_or_start_a_chat_until_unblocked_and_groups_are_unaffected() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let (mut wa, mut wb) = (app.ws(&alice.token).await, app.ws(&bob.token).await);
    wb.send_text_to(&alice.user_id, "b1", "hi alice").await;
    wb.expect("ack", T).await;

    let (s, r) = app
        .post(
            "/user/blocks",
            &json!({"user_id": bob.user_id}),
            Some(&alice.token),
        )
        .await;
    assert_eq!((s, &r["user_ids"]), (200, &json!([bob.user_id])));
    // Bob's sends are refused without saying more than "cannot receive".
    wb.send_text_to(&alice.user_id, "b2", "are you there?")
        .await;
    assert_eq!(refused(&mut wb, "b2").await, "recipient_unavailable");
    // Alice cannot send to whom she blocked either (she must unblock).
    wa.send_text_to(&bob.user_id, "a1", "psst").await;
    assert_eq!(refused(&mut wa, "a1").await, "blocked");
    // Nor does Bob reach her by reacting to or editing his earlier message,
    // or by typing; deleting his own message stays possible.
    let dm = format!(
        "d_{}",
        if alice.user_id < bob.user_id {
            format!("{}_{}", alice.user_id, bob.user_id)
        } else {
            format!("{}_{}", bob.user_id, alice.user_id)
        }
    );
    wb.send_json(
        &json!({"type":"react","client_msg_id":"r1","conversation_id":dm,"seq":1,"emoji":"👍"}),
    )
    .await;
    assert_eq!(refused(&mut wb, "r1").await, "recipient_unavailable");
    wb.send_json(&json!({"type":"edit","client_msg_id":"e1","conversation_id":dm,"seq":1,"text":"hi alice!!"}))
        .await;
    assert_eq!(refused(&mut wb, "e1").await, "recipient_unavailable");
    for _ in 0..2 {
        wb.send_json(&json!({"type":"typing","conversation_id":dm}))
            .await;
    }
    let seen = wa.drain(Duration::from_millis(800)).await;
    assert!(
        seen.iter()
            .all(|f| f["type"] != "typing" && f["type"] != "message_update"),
        "alice saw bob: {seen:?}"
    );
    // Blocking a stranger stops a first chat too.
    app.post(
        "/user/blocks",
        &json!({"user_id": carol.user_id}),
        Some(&alice.token),
    )
    .await;
    let mut wc = app.ws(&carol.token).await;
    wc.send_text_to(&alice.user_id, "c1", "hello?").await;
    assert_eq!(refused(&mut wc, "c1").await, "recipient_unavailable");
    let (s, chats) = app
        .get(&format!("/chat/{}", alice.user_id), &alice.token)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        chats["chats"].as_array().expect("chats").len(),
        1,
        "{chats}"
    );
    // Bad input: unknown user, yourself.
    let (s, e) = app
        .post(
            "/user/blocks",
            &json!({"user_id": "u0000000000000000000000000000000"}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("user_not_found"))
    );
    let (s, _) = app
        .post(
            "/user/blocks",
            &json!({"user_id": alice.user_id}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 400);
    // Groups are unaffected.
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "both", "members": [bob.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201);
    let g = g["group_id"].as_str().expect("group_id").to_owned();
    wb.send_json(&json!({"type":"send","client_msg_id":"b3","to_group":g,"text":"in the group"}))
        .await;
    wb.expect("ack", T).await;
    // Nothing from the blocked sends was stored.
    assert_eq!(app.direct_history(&alice, &bob).await.len(), 1);
    // Unblocked, they talk again.
    let (s, r) = app
        .request(
            "DELETE",
            &format!("/user/blocks/{}", bob.user_id),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!((s, &r["user_ids"]), (200, &json!([carol.user_id])));
    wb.send_text_to(&alice.user_id, "b2", "are you there?")
        .await;
    assert_eq!(wb.expect("ack", T).await["seq"], 2);
    let (_, list) = app.get("/user/blocks", &alice.token).await;
    assert_eq!(list["user_ids"], json!([carol.user_id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_connections_across_two_edges_and_respects_privacy_and_blocks() {
    let app = TestApp::spawn().await;
    let (second_edge, _guard) = app.extra_edge(|_| {}).await;
    let (alice, bob, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    // Bob and alice have a chat; eve is a stranger.
    let mut wb = app.ws(&bob.token).await;
    wb.send_text_to(&alice.user_id, "hi", "hi").await;
    wb.expect("ack", T).await;
    wb.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    let p = presence_of(&mut wb, &alice).await;
    assert_eq!(p["online"], false);
    let mut we = app.ws(&eve.token).await;
    we.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;

    // Alice on two devices, on two edges.
    let mut phone = app.ws(&alice.token).await;
    until_online(&mut wb, &alice, true).await;
    let mut laptop = WsClient::connect(
        second_edge,
        &format!("/messages/send?token={}", alice.token),
        None,
    )
    .await
    .expect("second edge");
    phone.send_json(&json!({"type":"ping"})).await;
    phone.expect("pong", T).await;
    laptop.send_json(&json!({"type":"ping"})).await;
    laptop.expect("pong", T).await;
    // Each edge records its connections in the bucket in the background:
    // wait until both have (a device that leaves before the other's edge
    // wrote its record can make the user look offline for that moment).
    both_edges_recorded(&app, &alice).await;
    drop(phone);
    // Still online through the laptop: no offline event comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for f in wb.drain(Duration::from_millis(200)).await {
        if f["type"] == "presence" {
            assert_eq!(f["online"], true, "online while either device is: {f}");
        }
    }
    drop(laptop);
    let off = until_online(&mut wb, &alice, false).await;
    assert!(off["last_seen"].is_string(), "{off}");
    // The stranger was told nothing at any point.
    assert!(
        none_of(&mut we, "presence", 300).await,
        "a stranger sees no presence"
    );

    // Alice hides her presence: bob's view goes blank, and asking again
    // gets nothing.
    let (s, r) = app
        .request(
            "PUT",
            "/user/privacy",
            Some(&alice.token),
            Some(br#"{"presence":"nobody"}"#.to_vec()),
        )
        .await;
    assert_eq!((s, &r["presence"]), (200, &json!("nobody")));
    let hidden = presence_of(&mut wb, &alice).await;
    assert_eq!(
        (hidden["online"].clone(), hidden.get("last_seen")),
        (json!(false), None)
    );
    let _back = app.ws(&alice.token).await;
    wb.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    assert!(
        none_of(&mut wb, "presence", 800).await,
        "hidden presence is not shown"
    );
    let (s, _) = app
        .request(
            "PUT",
            "/user/privacy",
            Some(&alice.token),
            Some(br#"{"presence":"maybe"}"#.to_vec()),
        )
        .await;
    assert_eq!(s, 400);
    // Visible again, but alice blocks bob: he sees nothing either.
    app.request(
        "PUT",
        "/user/privacy",
        Some(&alice.token),
        Some(br#"{"presence":"everyone"}"#.to_vec()),
    )
    .await;
    wb.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    assert_eq!(presence_of(&mut wb, &alice).await["online"], true);
    app.post(
        "/user/blocks",
        &json!({"user_id": bob.user_id}),
        Some(&alice.token),
    )
    .await;
    let blank = presence_of(&mut wb, &alice).await;
    assert_eq!(blank["online"], false);
    wb.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    assert!(
        none_of(&mut wb, "presence", 800).await,
        "a blocked user sees no presence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_group_reaches_the_other_members_only() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
        app.user("eve").await,
    );
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "typing", "members": [bob.user_id, carol.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201);
    let g = g["group_id"].as_str().expect("group_id").to_owned();
    let (mut wa, mut wb, mut wc, mut we) = (
        app.ws(&alice.token).await,
        app.ws(&bob.token).await,
        app.ws(&carol.token).await,
        app.ws(&eve.token).await,
    );
    wa.send_json(&json!({"type":"typing","conversation_id":g}))
        .await;
    for ws in [&mut wb, &mut wc] {
        let t = ws.expect("typing", T).await;
        assert_eq!(
            (t["conversation_id"].as_str(), t["user_id"].as_str()),
            (Some(g.as_str()), Some(alice.user_id.as_str()))
        );
    }
    // A stranger's typing in the group reaches nobody.
    we.send_json(&json!({"type":"typing","conversation_id":g}))
        .await;
    assert!(
        none_of(&mut wb, "typing", 700).await,
        "only members' typing is relayed"
    );
    assert!(none_of(&mut wa, "typing", 100).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_presence_turned_off_tells_nothing_and_counts_nobody() {
    let app = TestApp::spawn_with_edge(|e| e.presence = false).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut wa = app.ws(&alice.token).await;
    wa.send_text_to(&bob.user_id, "hi", "hi").await;
    wa.expect("ack", T).await;
    let mut wb = app.ws(&bob.token).await;
    wb.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    wb.send_json(&json!({"type":"ping"})).await;
    let frames = wb.drain(Duration::from_millis(800)).await;
    assert!(frames.iter().any(|f| f["type"] == "pong"), "{frames:?}");
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "presence" && f["type"] != "error"),
        "no presence, and no error either: {frames:?}"
    );
    // Nobody connected here was written to the presence bucket.
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let kv = js
        .get_key_value(msgr_nats::stream::PRESENCE_BUCKET)
        .await
        .expect("the workers made the bucket");
    assert_eq!(
        kv.get(format!("u.{}", alice.user_id)).await.expect("get"),
        None
    );
}

/// Waits until `user`'s presence record names two edges with connections.
async fn both_edges_recorded(app: &TestApp, user: &TestUser) {
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
    let kv = js
        .get_key_value(msgr_nats::stream::PRESENCE_BUCKET)
        .await
        .expect("presence bucket");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(Some(v)) = kv.get(format!("u.{}", user.user_id)).await {
            let r: Value = serde_json::from_slice(&v).expect("a presence record");
            let live = r["edges"]
                .as_object()
                .map_or(0, |e| e.values().filter(|n| n.as_u64() > Some(0)).count());
            if live == 2 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two edges never both recorded {}",
            user.user_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
