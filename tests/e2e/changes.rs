//! Replies, edits, deletes for everyone and reactions, over raw WebSockets:
//! every member sees them in order, a reload shows the current state, and a
//! member who was offline catches up to the same state.

use std::time::Duration;

use msgr_tests::{TestApp, TestUser, WsClient};
use serde_json::{json, Value};

use crate::T;

async fn group(app: &TestApp, admin: &TestUser, members: &[&TestUser]) -> String {
    let ids: Vec<_> = members.iter().map(|m| m.user_id.clone()).collect();
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "changes", "members": ids}),
            Some(&admin.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    g["group_id"].as_str().expect("group_id").to_owned()
}

/// The next `message_update` frame of `change` kind (skipping others).
async fn update(ws: &mut WsClient, change: &str) -> Value {
    loop {
        let u = ws.expect("message_update", T).await;
        if u["change"] == change {
            return u;
        }
    }
}

/// An `error` frame for `cmid`, or panics.
async fn refused(ws: &mut WsClient, cmid: &str) -> String {
    loop {
        let e = ws.expect("error", T).await;
        if e["client_msg_id"] == cmid {
            return e["code"].as_str().expect("code").to_owned();
        }
    }
}

async fn group_page(app: &TestApp, g: &str, who: &TestUser) -> Value {
    let (s, page) = app.get(&format!("/groups/{g}"), &who.token).await;
    assert_eq!(s, 200, "{page}");
    page
}

/// The messages of a page by seq, keeping what a client shows of each.
fn shown(messages: &Value) -> Vec<Value> {
    messages
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            json!({
                "seq": m["seq"], "text": m["text"], "deleted": m["deleted_at"].is_string(),
                "edited": m["edited_at"].is_string(), "reply_to": m["reply_to"],
                "reactions": m["reactions"], "media": m["media"],
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_edits_deletes_and_reactions_reach_every_member_and_an_offline_one_catches_up() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, dave) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
        app.user("dave").await,
    );
    let g = group(&app, &alice, &[&bob, &carol, &dave]).await;
    let (mut wa, mut wb, mut wc) = (
        app.ws(&alice.token).await,
        app.ws(&bob.token).await,
        app.ws(&carol.token).await,
    );
    wa.send_json(&json!({"type":"send","client_msg_id":"m1","to_group":g,"text":"lunch at noon?"}))
        .await;
    assert_eq!(wa.expect("ack", T).await["seq"], 1);
    wa.send_json(&json!({"type":"send","client_msg_id":"m2","to_group":g,"text":"or one?"}))
        .await;
    wa.expect("ack", T).await;
    // Dave saw both, then went offline: he knows the conversation's rev.
    let before = group_page(&app, &g, &dave).await;
    let dave_rev = before["rev"].as_u64().expect("rev");

    // A reply carries a quote of what it answers, in the push itself.
    wb.send_json(&json!({"type":"send","client_msg_id":"r1","to_group":g,"text":"noon works","reply_to_seq":1}))
        .await;
    wb.expect("ack", T).await;
    let pushed = loop {
        let m = wc.expect("message", T).await;
        if m["message"]["seq"] == 3 {
            break m;
        }
    };
    let quote = &pushed["message"]["reply_to"];
    assert_eq!(quote["seq"], 1);
    assert_eq!(quote["sender_id"], alice.user_id.as_str());
    assert_eq!(quote["text"], "lunch at noon?");
    // And in the chat list's preview of the last message.
    let (s, list) = app
        .get(&format!("/chat/{}", carol.user_id), &carol.token)
        .await;
    assert_eq!(s, 200, "{list}");
    let chat = list["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .find(|c| c["conversation_id"] == g.as_str())
        .expect("the group is listed");
    assert_eq!(
        chat["last_message"]["reply_to"]["text"], "lunch at noon?",
        "{chat}"
    );

    // Edit: every member's connections get the new text.
    wa.send_json(&json!({"type":"edit","client_msg_id":"e1","conversation_id":g,"seq":2,"text":"or half past?"}))
        .await;
    for ws in [&mut wa, &mut wb, &mut wc] {
        let u = update(ws, "edited").await;
        assert_eq!(u["client_msg_id"], "e1");
        assert_eq!(u["actor_id"], alice.user_id.as_str());
        assert_eq!(u["message"]["text"], "or half past?");
        assert!(u["message"]["edited_at"].is_string());
    }
    // Reactions: one per member, changeable, removable.
    wc.send_json(
        &json!({"type":"react","client_msg_id":"x1","conversation_id":g,"seq":1,"emoji":"👍"}),
    )
    .await;
    wb.send_json(
        &json!({"type":"react","client_msg_id":"x2","conversation_id":g,"seq":2,"emoji":"😂"}),
    )
    .await;
    wb.send_json(
        &json!({"type":"react","client_msg_id":"x3","conversation_id":g,"seq":2,"emoji":"❤️"}),
    )
    .await;
    let mut last = Value::Null;
    for _ in 0..3 {
        last = update(&mut wa, "reaction").await;
    }
    assert_eq!(
        last["message"]["reactions"],
        json!([{"emoji":"❤️","count":1,"user_ids":[bob.user_id]}]),
        "bob's reaction was changed, not added"
    );
    // Delete for everyone: text and quotes of it go.
    wa.send_json(&json!({"type":"delete","client_msg_id":"d1","conversation_id":g,"seq":1}))
        .await;
    for ws in [&mut wa, &mut wb, &mut wc] {
        let u = update(ws, "deleted").await;
        let m = &u["message"];
        assert!(m["deleted_at"].is_string(), "{m}");
        assert!(
            m.get("text").is_none() && m.get("reactions").is_none(),
            "{m}"
        );
    }

    // A reload shows the current state of every message.
    let page = group_page(&app, &g, &carol).await;
    let now = shown(&page["messages"]);
    assert_eq!(now[0]["deleted"], true);
    assert_eq!(now[0]["text"], Value::Null);
    assert_eq!(now[1]["text"], "or half past?");
    assert_eq!(now[1]["edited"], true);
    assert_eq!(now[2]["reply_to"]["deleted"], true);
    assert_eq!(
        now[2]["reply_to"]["text"],
        Value::Null,
        "the quote of a deleted message goes too"
    );

    // Dave comes back: the new message by seq, the changes since his rev.
    let (s, ch) = app
        .get(
            &format!("/conversations/{g}/changes?after={dave_rev}"),
            &dave.token,
        )
        .await;
    assert_eq!(s, 200, "{ch}");
    assert_eq!(ch["rev"], page["rev"]);
    let changed: Vec<u64> = ch["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        changed
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [1, 2, 3].into(),
        "every changed message, once: {changed:?}"
    );
    // Applying them to what he held gives what a live member sees.
    let mut his: Vec<Value> = before["messages"].as_array().expect("messages").clone();
    let (_, newer) = app.get(&format!("/groups/{g}?after=2"), &dave.token).await;
    his.extend(newer["messages"].as_array().expect("messages").clone());
    for m in ch["messages"].as_array().expect("messages") {
        let i = his.iter().position(|h| h["seq"] == m["seq"]).expect("held");
        his[i] = m.clone();
    }
    let (_, daves_reload) = app.get(&format!("/groups/{g}"), &dave.token).await;
    assert_eq!(shown(&Value::Array(his)), shown(&daves_reload["messages"]));
    assert_eq!(shown(&daves_reload["messages"]), now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_changes_get_a_clear_error_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (alice, bob, eve) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("eve").await,
    );
    let g = group(&app, &alice, &[&bob]).await;
    let (mut wa, mut wb, mut we) = (
        app.ws(&alice.token).await,
        app.ws(&bob.token).await,
        app.ws(&eve.token).await,
    );
    wa.send_text_to(&bob.user_id, "a1", "mine").await;
    wa.expect("ack", T).await;
    wa.send_json(&json!({"type":"send","client_msg_id":"g1","to_group":g,"text":"group text"}))
        .await;
    wa.expect("ack", T).await;
    let direct = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    let before_direct = app.direct_history(&alice, &bob).await;
    let before_group = group_page(&app, &g, &alice).await["messages"].clone();

    // Editing or deleting someone else's message.
    wb.send_json(&json!({"type":"edit","client_msg_id":"b1","conversation_id":direct,"seq":1,"text":"hijacked"}))
        .await;
    assert_eq!(refused(&mut wb, "b1").await, "not_sender");
    wb.send_json(&json!({"type":"delete","client_msg_id":"b2","conversation_id":g,"seq":1}))
        .await;
    assert_eq!(refused(&mut wb, "b2").await, "not_sender");
    // Reacting in a chat you are not in (a group; someone else's direct chat).
    we.send_json(
        &json!({"type":"react","client_msg_id":"e1","conversation_id":g,"seq":1,"emoji":"👍"}),
    )
    .await;
    assert_eq!(refused(&mut we, "e1").await, "not_member");
    we.send_json(
        &json!({"type":"react","client_msg_id":"e2","conversation_id":direct,"seq":1,"emoji":"👍"}),
    )
    .await;
    assert_eq!(refused(&mut we, "e2").await, "not_member");
    // A reply to a seq that does not exist; a change of one.
    wb.send_json(&json!({"type":"send","client_msg_id":"b3","to_user":alice.user_id,"text":"re","reply_to_seq":99}))
        .await;
    assert_eq!(refused(&mut wb, "b3").await, "unknown_message");
    wa.send_json(
        &json!({"type":"edit","client_msg_id":"a2","conversation_id":g,"seq":99,"text":"?"}),
    )
    .await;
    assert_eq!(refused(&mut wa, "a2").await, "unknown_message");
    // Not an emoji; wrong types; no text to edit with.
    wb.send_json(
        &json!({"type":"react","client_msg_id":"b4","conversation_id":g,"seq":1,"emoji":"lol"}),
    )
    .await;
    assert_eq!(refused(&mut wb, "b4").await, "invalid_reaction");
    wb.send_json(
        &json!({"type":"react","client_msg_id":"b5","conversation_id":g,"seq":"1","emoji":"👍"}),
    )
    .await;
    assert_eq!(refused(&mut wb, "b5").await, "invalid_frame");
    wa.send_json(&json!({"type":"edit","client_msg_id":"a3","conversation_id":g,"seq":1}))
        .await;
    assert_eq!(refused(&mut wa, "a3").await, "empty_message");
    // Deleting twice.
    wa.send_json(&json!({"type":"delete","client_msg_id":"a4","conversation_id":direct,"seq":1}))
        .await;
    update(&mut wa, "deleted").await;
    wa.send_json(&json!({"type":"delete","client_msg_id":"a5","conversation_id":direct,"seq":1}))
        .await;
    assert_eq!(refused(&mut wa, "a5").await, "message_deleted");

    // Nothing else changed, and the connections are still open.
    let after_group = group_page(&app, &g, &alice).await["messages"].clone();
    assert_eq!(after_group, before_group);
    let after_direct = app.direct_history(&alice, &bob).await;
    assert_eq!(
        after_direct.len(),
        before_direct.len(),
        "the bad reply was not stored"
    );
    for ws in [&mut wa, &mut wb, &mut we] {
        ws.send_json(&json!({"type":"ping"})).await;
        ws.expect("pong", T).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edit_window_closes_and_a_deleted_messages_media_is_removed() {
    let app = TestApp::spawn_with(|_| {}, |w| w.edit_window_secs = 1).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    // Media sent, then deleted for everyone: its bytes go from storage.
    let (s, up) = app
        .request(
            "POST",
            "/media",
            Some(&alice.token),
            Some(b"just some bytes of a file".to_vec()),
        )
        .await;
    assert_eq!(s, 201, "{up}");
    let media_id = up["media_id"].as_str().expect("media_id").to_owned();
    let file = app.data.path().join("media/media").join(&media_id);
    assert!(file.exists(), "the upload is at {}", file.display());
    let mut wa = app.ws(&alice.token).await;
    wa.send_json(&json!({"type":"send","client_msg_id":"f1","to_user":bob.user_id,"media_id":media_id,"text":"file"}))
        .await;
    wa.expect("ack", T).await;
    let url = format!("/media/{media_id}");
    assert_eq!(app.get(&url, &bob.token).await.0, 200);
    let conv = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    wa.send_json(&json!({"type":"delete","client_msg_id":"f2","conversation_id":conv,"seq":1}))
        .await;
    let u = update(&mut wa, "deleted").await;
    assert!(u["message"].get("media").is_none(), "{u}");
    for who in [&alice, &bob] {
        assert_eq!(app.get(&url, &who.token).await.0, 404);
    }
    let mut gone = false;
    for _ in 0..50 {
        if !file.exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the media bytes are removed once nothing references them"
    );

    wa.send_text_to(&bob.user_id, "t1", "typo").await;
    wa.expect("ack", T).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wa.send_json(
        &json!({"type":"edit","client_msg_id":"t2","conversation_id":conv,"seq":2,"text":"fixed"}),
    )
    .await;
    assert_eq!(refused(&mut wa, "t2").await, "window_closed");
    let h = app.direct_history(&bob, &alice).await;
    assert_eq!(h[1]["text"], "typo");
}
