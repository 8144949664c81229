use std::collections::HashMap;

use msgr_tests::{TestApp, WsClient};
use serde_json::json;

use crate::T;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_message_is_acked_delivered_and_mirrored_to_the_senders_other_device() {
    // Arrange
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut alice_phone = app.ws(&alice.token).await;
    let mut alice_laptop = app.ws(&alice.token).await;
    let mut bob_ws = app.ws(&bob.token).await;

    // Act
    alice_phone
        .send_text_to(&bob.user_id, "c-1", "hello bob")
        .await;

    // Assert: the ack carries the stored identity and seq 1.
    let ack = alice_phone.expect("ack", T).await;
    assert_eq!(ack["client_msg_id"], "c-1");
    assert_eq!(ack["seq"], 1);
    let message_id = ack["message_id"].as_str().expect("message_id");
    let conversation_id = ack["conversation_id"].as_str().expect("conversation_id");
    assert!(ack["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let got = bob_ws.expect("message", T).await;
    let m = &got["message"];
    assert_eq!(
        (m["message_id"].as_str(), m["conversation_id"].as_str()),
        (Some(message_id), Some(conversation_id))
    );
    assert_eq!(
        (m["seq"].as_u64(), m["text"].as_str()),
        (Some(1), Some("hello bob"))
    );
    assert_eq!(
        (m["sender_id"].as_str(), m["to_user"].as_str()),
        (Some(alice.user_id.as_str()), Some(bob.user_id.as_str()))
    );

    let mirror = alice_laptop.expect("message", T).await;
    assert_eq!(mirror["message"]["message_id"], message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rapid_sends_are_sequenced_in_send_order_and_arrive_in_order() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;

    for i in 1..=100 {
        a.send_text_to(&bob.user_id, &format!("r-{i}"), &format!("msg {i}"))
            .await;
    }
    let mut acks = HashMap::new();
    while acks.len() < 100 {
        let ack = a.expect("ack", T).await;
        acks.insert(
            ack["client_msg_id"].as_str().expect("cmid").to_owned(),
            ack["seq"].as_u64().expect("seq"),
        );
    }
    for i in 1..=100u64 {
        assert_eq!(acks[&format!("r-{i}")], i, "seq follows send order");
    }
    let mut last = 0;
    for i in 1..=100u64 {
        let m = b.expect("message", T).await;
        let seq = m["message"]["seq"].as_u64().expect("seq");
        assert!(seq > last, "increasing seq order");
        assert_eq!(m["message"]["text"], format!("msg {i}"));
        last = seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_a_client_msg_id_returns_the_original_and_stores_one_copy() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "same-id", "once").await;
    let first = a.expect("ack", T).await;

    // Same socket, right away (inside JetStream's duplicate window).
    a.send_text_to(&bob.user_id, "same-id", "once").await;
    let again = a.expect("ack", T).await;
    // After a reconnect, as a client retrying an unacked send would.
    drop(a);
    let mut a2 = app.ws(&alice.token).await;
    a2.send_text_to(&bob.user_id, "same-id", "once").await;
    let third = a2.expect("ack", T).await;
    for ack in [&again, &third] {
        assert_eq!(
            (&ack["seq"], &ack["message_id"]),
            (&first["seq"], &first["message_id"])
        );
    }
    a2.send_text_to(&bob.user_id, "next-id", "twice").await;
    assert_eq!(
        a2.expect("ack", T).await["seq"],
        2,
        "no seq was spent on the duplicates"
    );

    let (s, h) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(s, 200);
    let texts: Vec<_> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("once"), json!("twice")]);
}

/// Subscriptions nats-server holds on `subject` (from its monitoring endpoint).
async fn subscriptions_on(app: &TestApp, subject: &str) -> usize {
    let r =
        msgr_tests::http_get_raw(app.nats.monitor_addr(), "/subsz?subs=1&limit=100000", &[]).await;
    assert_eq!(r.status, 200, "nats-server /subsz");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("subsz JSON");
    v["subscriptions_list"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|s| s["subject"] == subject).count())
}

async fn wait_for_subscriptions(app: &TestApp, subject: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let n = subscriptions_on(app, subject).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{subject}: {n} subscriptions, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_devices_on_one_edge_share_one_inbox_subscription_until_the_last_leaves() {
    // Arrange: bob has two devices on the same `per_user` edge.
    let app = TestApp::spawn_with_edge(|c| c.inbox = msgr_edge::ws::InboxMode::PerUser).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let inbox = format!("msgr.v1.deliver.user.{}", bob.user_id);
    let mut a = app.ws(&alice.token).await;
    let mut phone = app.ws(&bob.token).await;
    let mut laptop = app.ws(&bob.token).await;
    wait_for_subscriptions(&app, &inbox, 1).await;

    // Act + Assert: both devices get the message through the one subscription.
    a.send_text_to(&bob.user_id, "s-1", "to both").await;
    a.expect("ack", T).await;
    assert_eq!(
        phone.expect("message", T).await["message"]["text"],
        "to both"
    );
    assert_eq!(
        laptop.expect("message", T).await["message"]["text"],
        "to both"
    );

    // One device leaves: the other is still served, by the same subscription.
    drop(phone);
    a.send_text_to(&bob.user_id, "s-2", "laptop only").await;
    a.expect("ack", T).await;
    assert_eq!(
        laptop.expect("message", T).await["message"]["text"],
        "laptop only"
    );
    assert_eq!(subscriptions_on(&app, &inbox).await, 1);

    // The last device leaves: the edge drops its interest.
    drop(laptop);
    wait_for_subscriptions(&app, &inbox, 0).await;

    // Coming back subscribes again, and nothing sent meanwhile is lost to history.
    a.send_text_to(&bob.user_id, "s-3", "while away").await;
    a.expect("ack", T).await;
    let mut back = app.ws(&bob.token).await;
    wait_for_subscriptions(&app, &inbox, 1).await;
    a.send_text_to(&bob.user_id, "s-4", "welcome back").await;
    a.expect("ack", T).await;
    let got = back.expect("message", T).await;
    assert_eq!(got["message"]["text"], "welcome back");
    assert_eq!(got["message"]["seq"], 4, "seq 3 waits in history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_edge_routes_every_inbox_with_one_subscription() {
    // Arrange: an edge in `wildcard` mode; bob has two devices, carol one.
    let app = TestApp::spawn_with_edge(|c| c.inbox = msgr_edge::ws::InboxMode::Wildcard).await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let mut a = app.ws(&alice.token).await;
    let mut phone = app.ws(&bob.token).await;
    let mut laptop = app.ws(&bob.token).await;
    let mut c = app.ws(&carol.token).await;
    assert_eq!(subscriptions_on(&app, "msgr.v1.deliver.user.*").await, 1);
    let per_user = format!("msgr.v1.deliver.user.{}", bob.user_id);
    assert_eq!(subscriptions_on(&app, &per_user).await, 0);

    // Act
    a.send_text_to(&bob.user_id, "w-1", "for bob").await;

    // Assert: acked to the sender, pushed to both of bob's devices, not to carol.
    assert_eq!(a.expect("ack", T).await["seq"], 1);
    assert_eq!(
        phone.expect("message", T).await["message"]["text"],
        "for bob"
    );
    assert_eq!(
        laptop.expect("message", T).await["message"]["text"],
        "for bob"
    );
    let stray = c.drain(std::time::Duration::from_millis(300)).await;
    assert!(stray.is_empty(), "carol got others' events: {stray:?}");

    // A device that left gets nothing; one that comes back is routed again.
    drop(phone);
    drop(laptop);
    a.send_text_to(&bob.user_id, "w-3", "while away").await;
    a.expect("ack", T).await;
    let mut back = app.ws(&bob.token).await;
    a.send_text_to(&bob.user_id, "w-4", "welcome back").await;
    a.expect("ack", T).await;
    assert_eq!(back.expect("message", T).await["message"]["seq"], 3);
}

/// Every `msgr.v2.deliver.edge.*` message seen, as (edge id, users named).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<String>)>>>;

async fn watch_edge_deliveries(app: &TestApp) -> Seen {
    use futures_util::StreamExt as _;
    use prost::Message as _;
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let mut sub = nats
        .subscribe("msgr.v2.deliver.edge.*")
        .await
        .expect("subscribe");
    nats.flush().await.expect("flush");
    let seen: Seen = Seen::default();
    let out = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        let _keep = nats;
        while let Some(m) = sub.next().await {
            let edge = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
            let d = msgr_schemas::pb::v1::EdgeDelivery::decode(m.payload).expect("EdgeDelivery");
            let users = d.items.into_iter().flat_map(|i| i.users).collect();
            out.lock().expect("lock").push((edge, users));
        }
    });
    seen
}

/// Which edges were sent something for `user` (and forgets what was seen).
fn edges_for(seen: &Seen, user: &str) -> Vec<String> {
    let mut all = seen.lock().expect("lock");
    let mut edges: Vec<String> = all
        .iter()
        .filter(|(_, users)| users.iter().any(|u| u == user))
        .map(|(e, _)| e.clone())
        .collect();
    all.clear();
    edges.sort();
    edges.dedup();
    edges
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_edges_get_only_their_users_events_with_one_subscription_each() {
    // Arrange: two `routed` edges (the default); bob has a device on each,
    // carol is on edge B only.
    let mut app = TestApp::spawn_with_edge(|c| c.edge_id = Some("edge-a".to_owned())).await;
    let (b_addr, _b) = app
        .extra_edge(|c| c.edge_id = Some("edge-b".to_owned()))
        .await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let seen = watch_edge_deliveries(&app).await;
    let mut a = app.ws(&alice.token).await;
    let mut phone = app.ws(&bob.token).await;
    let ws_b = |token: String| async move {
        WsClient::connect(b_addr, &format!("/messages/send?token={token}"), None)
            .await
            .expect("edge B")
    };
    let mut laptop = ws_b(bob.token.clone()).await;
    let mut c = ws_b(carol.token.clone()).await;
    assert_eq!(
        subscriptions_on(&app, "msgr.v2.deliver.edge.edge-a").await,
        1
    );
    assert_eq!(
        subscriptions_on(&app, "msgr.v2.deliver.edge.edge-b").await,
        1
    );
    let per_user = format!("msgr.v1.deliver.user.{}", bob.user_id);
    assert_eq!(
        subscriptions_on(&app, &per_user).await,
        0,
        "no per-user interest"
    );
    // Watch bob's v1 inbox from outside: routed users get nothing there.
    let raw = async_nats::connect(app.nats.url()).await.expect("nats");
    let mut v1_inbox = raw
        .subscribe(format!("msgr.v1.deliver.user.{}", bob.user_id))
        .await
        .expect("sub");
    raw.flush().await.expect("flush");

    // Act + Assert: a message for bob goes to both edges, and to his devices.
    a.send_text_to(&bob.user_id, "r-1", "to both edges").await;
    assert_eq!(a.expect("ack", T).await["seq"], 1);
    for d in [&mut phone, &mut laptop] {
        assert_eq!(
            d.expect("message", T).await["message"]["text"],
            "to both edges"
        );
    }
    assert_eq!(edges_for(&seen, &bob.user_id), ["edge-a", "edge-b"]);
    assert!(
        c.drain(std::time::Duration::from_millis(200))
            .await
            .is_empty(),
        "carol gets nothing"
    );
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(200),
            futures_util::StreamExt::next(&mut v1_inbox)
        )
        .await
        .is_err(),
        "nothing on the v1 inbox of a user routed edges hold"
    );

    // A message for carol goes to edge B only (edge A holds nobody of hers).
    a.send_text_to(&carol.user_id, "r-2", "for carol").await;
    a.expect("ack", T).await;
    assert_eq!(c.expect("message", T).await["message"]["text"], "for carol");
    assert_eq!(edges_for(&seen, &carol.user_id), ["edge-b"]);

    // Bob's laptop leaves edge B: his events stop going there.
    drop(laptop);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    a.send_text_to(&bob.user_id, "r-3", "phone only").await;
    a.expect("ack", T).await;
    assert_eq!(
        phone.expect("message", T).await["message"]["text"],
        "phone only"
    );
    assert_eq!(edges_for(&seen, &bob.user_id), ["edge-a"]);

    // Back on edge B: the very next message reaches it (a connection counts
    // as reachable once a worker has its route).
    let mut laptop = ws_b(bob.token.clone()).await;
    a.send_text_to(&bob.user_id, "r-4", "laptop again").await;
    a.expect("ack", T).await;
    assert_eq!(
        laptop.expect("message", T).await["message"]["text"],
        "laptop again"
    );

    // A restarted worker learns every route from the edges before it sequences.
    app.abort_worker().await;
    app.start_worker().await;
    a.send_text_to(&bob.user_id, "r-5", "after the restart")
        .await;
    assert_eq!(a.expect("ack", T).await["seq"], 4);
    for d in [&mut phone, &mut laptop] {
        // The aborted worker may not have recorded how far it announced:
        // the new one announces its last batch again (at least once; a
        // client keeps one copy per seq).
        loop {
            let m = d.expect("message", T).await;
            if m["message"]["text"] == "after the restart" {
                break;
            }
            assert!(m["message"]["seq"].as_u64() < Some(4), "{m}");
        }
    }
    assert_eq!(edges_for(&seen, &bob.user_id), ["edge-a", "edge-b"]);
}
