use std::time::{Duration, Instant};

use msgr_tests::{TestApp, TestUser, WsClient};
use serde_json::{json, Value};

use crate::T;

async fn create_group(
    app: &TestApp,
    admin: &TestUser,
    name: &str,
    members: &[&TestUser],
) -> String {
    let ids: Vec<_> = members.iter().map(|m| m.user_id.clone()).collect();
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": name, "members": ids}),
            Some(&admin.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    g["group_id"].as_str().expect("group_id").to_owned()
}

/// The next `group` frame for `event`, skipping other group events.
async fn expect_event(ws: &mut WsClient, event: &str) -> Value {
    loop {
        let ev = ws.expect("group", T).await;
        if ev["event"] == event {
            return ev;
        }
    }
}

fn send_group(group: &str, cmid: &str, text: &str) -> Value {
    json!({"type":"send","client_msg_id":cmid,"to_group":group,"text":text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lifecycle_with_admin_rules_and_removed_member_isolation() {
    let app = TestApp::spawn().await;
    let (a, b, c, d) = (
        app.user("ann").await,
        app.user("ben").await,
        app.user("cat").await,
        app.user("dan").await,
    );
    let mut wa = app.ws(&a.token).await;
    let mut wb = app.ws(&b.token).await;
    let mut wc = app.ws(&c.token).await;
    let mut wd = app.ws(&d.token).await;

    // Create: the creator is admin, everyone hears about it.
    let ids = vec![b.user_id.clone(), c.user_id.clone()];
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "Trip", "members": ids}),
            Some(&a.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["group_id"].as_str().expect("group_id").to_owned();
    assert_eq!(g["conversation_id"], gid.as_str());
    assert_eq!(g["name"], "Trip");
    let role = |g: &Value, u: &TestUser| {
        g["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user_id"] == u.user_id.as_str())
            .map(|m| m["role"].clone())
    };
    assert_eq!(role(&g, &a), Some(json!("admin")));
    assert_eq!(role(&g, &b), Some(json!("member")));
    for w in [&mut wa, &mut wb, &mut wc] {
        let ev = w.expect("group", T).await;
        assert_eq!(
            (ev["event"].as_str(), ev["group_id"].as_str()),
            (Some("created"), Some(gid.as_str()))
        );
    }

    // Messages: dense seqs, everyone receives them in order.
    for i in 1..=3 {
        wa.send_json(&send_group(&gid, &format!("g{i}"), &format!("hello {i}")))
            .await;
    }
    for i in 1..=3u64 {
        assert_eq!(wa.expect("ack", T).await["seq"], i);
    }
    for w in [&mut wb, &mut wc] {
        for i in 1..=3u64 {
            let m = w.expect("message", T).await;
            assert_eq!(
                (
                    m["message"]["seq"].as_u64(),
                    m["message"]["to_group"].as_str()
                ),
                (Some(i), Some(gid.as_str()))
            );
        }
    }

    // A non-member can neither send nor read nor add.
    wd.send_json(&send_group(&gid, "intruder", "let me in"))
        .await;
    assert_eq!(wd.expect("error", T).await["code"], "not_member");
    let (s, body) = app.get(&format!("/groups/{gid}"), &d.token).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert!(!body.to_string().contains("hello"));
    let (s, _) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user_id": d.user_id}),
            Some(&d.token),
        )
        .await;
    assert_eq!(s, 403);
    // A member who is not admin cannot add or remove others.
    let (s, body) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user_id": d.user_id}),
            Some(&b.token),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );
    let (s, body) = app
        .request(
            "DELETE",
            &format!("/groups/{gid}/remove?user_id={}", c.user_id),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (403, Some("not_admin"))
    );

    // The admin adds d, who sees only what comes after.
    let (s, g) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user_id": d.user_id}),
            Some(&a.token),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(role(&g, &d), Some(json!("member")));
    let ev = wd.expect("group", T).await;
    assert_eq!(
        (ev["event"].as_str(), ev["user_id"].as_str()),
        (Some("added"), Some(d.user_id.as_str()))
    );

    // The admin removes c: c hears it, then gets nothing more.
    let (s, _) = app
        .request(
            "DELETE",
            &format!("/groups/{gid}/remove"),
            Some(&a.token),
            Some(json!({"user_id": c.user_id}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(s, 200);
    let ev = expect_event(&mut wc, "removed").await;
    assert_eq!(ev["user_id"], c.user_id.as_str());
    wa.send_json(&send_group(&gid, "g4", "after removal")).await;
    assert_eq!(wa.expect("ack", T).await["seq"], 4);
    assert_eq!(wd.expect("message", T).await["message"]["seq"], 4);
    assert_eq!(wb.expect("message", T).await["message"]["seq"], 4);
    let leaked = wc.drain(Duration::from_millis(500)).await;
    assert!(
        leaked.iter().all(|f| f["type"] != "message"),
        "removed member got {leaked:?}"
    );
    wc.send_json(&send_group(&gid, "c-after", "still here?"))
        .await;
    assert_eq!(wc.expect("error", T).await["code"], "not_member");
    // c keeps the past (seq 1-3), d sees only seq 4.
    let seqs = |v: &Value| {
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect::<Vec<_>>()
    };
    let (s, cg) = app.get(&format!("/groups/{gid}"), &c.token).await;
    assert_eq!(s, 200);
    assert_eq!(seqs(&cg), vec![1, 2, 3]);
    assert_eq!(
        cg["group"]["members"].as_array().map(Vec::len),
        Some(0),
        "no roster for former members"
    );
    let (s, _) = app
        .get(&format!("/groups/{gid}/messages/1/receipts"), &c.token)
        .await;
    assert_eq!(s, 403, "nor others' read progress");
    let (_, dg) = app.get(&format!("/groups/{gid}"), &d.token).await;
    assert_eq!(seqs(&dg), vec![4]);
    assert_eq!(dg["group"]["name"], "Trip");

    // Anyone may leave; the last admin leaving promotes the oldest member (b).
    let (s, _) = app
        .request(
            "DELETE",
            &format!("/groups/{gid}/remove?user_id={}", a.user_id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let ev = expect_event(&mut wb, "left").await;
    assert_eq!(ev["promoted_user_id"], b.user_id.as_str());
    let (_, bg) = app.get(&format!("/groups/{gid}"), &b.token).await;
    assert_eq!(role(&bg["group"], &b), Some(json!("admin")));
    let (s, body) = app
        .request(
            "DELETE",
            &format!("/groups/{gid}/remove?user_id={}", c.user_id),
            Some(&b.token),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_member"))
    );

    // The chat list shows the group by name.
    let (_, chats) = app.get(&format!("/chat/{}", b.user_id), &b.token).await;
    let entry = chats["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .find(|e| e["conversation_id"] == gid.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(
        (
            entry["kind"].as_str(),
            entry["group_id"].as_str(),
            entry["title"].as_str()
        ),
        (Some("group"), Some(gid.as_str()), Some("Trip"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_documented_errors() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.user("ann").await, app.user("ben").await);
    let ghost = format!("u{}", msgr_tests::uuid_like());
    let cases = [
        (json!({"name": "", "members": []}), 400, "invalid_name"),
        (
            json!({"name": "x".repeat(101), "members": []}),
            400,
            "invalid_name",
        ),
        (
            json!({"name": "ok", "members": [ghost]}),
            400,
            "user_not_found",
        ),
        (
            json!({"name": "ok", "members": ["../etc/passwd"]}),
            400,
            "user_not_found",
        ),
        (
            json!({"name": "ok", "members": "not a list"}),
            400,
            "invalid_request",
        ),
        (json!({"members": []}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, r) = app.post("/groups/create", &body, Some(&a.token)).await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    // More members than the maximum (1,024 by default).
    let many: Vec<String> = (0..1024)
        .map(|_| format!("u{}", msgr_tests::uuid_like()))
        .chain([b.user_id.clone()])
        .collect();
    let (s, r) = app
        .post(
            "/groups/create",
            &json!({"name": "big", "members": many}),
            Some(&a.token),
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (400, Some("too_many_members"))
    );
    let (s, _) = app
        .request(
            "POST",
            "/groups/create",
            Some(&a.token),
            Some(b"{oops".to_vec()),
        )
        .await;
    assert_eq!(s, 400);

    let gid = create_group(&app, &a, "ok", &[&b]).await;
    let unknown = format!("g{}", msgr_tests::uuid_like());
    let (s, r) = app.get(&format!("/groups/{unknown}"), &a.token).await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = app.get("/groups/..%2F..", &a.token).await;
    assert_eq!(s, 404);
    let (s, r) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user_id": ghost}),
            Some(&a.token),
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (404, Some("user_not_found"))
    );
    let (s, _) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user": 1}),
            Some(&a.token),
        )
        .await;
    assert_eq!(s, 400);
    let (s, r) = app
        .post(
            &format!("/groups/{unknown}/add"),
            &json!({"user_id": b.user_id}),
            Some(&a.token),
        )
        .await;
    assert_eq!((s, r["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = app
        .get(&format!("/groups/{gid}/messages/abc/receipts"), &a.token)
        .await;
    assert_eq!(s, 400);
    let (s, _) = app
        .get(&format!("/groups/{gid}/messages/99/receipts"), &a.token)
        .await;
    assert_eq!(s, 404);
    let mut ws = app.ws(&a.token).await;
    ws.send_json(&send_group(&unknown, "x", "hi")).await;
    assert_eq!(ws.expect("error", T).await["code"], "not_member");
    // Nothing was corrupted: the group still works.
    ws.send_json(&send_group(&gid, "y", "hi")).await;
    assert_eq!(ws.expect("ack", T).await["seq"], 1);
    let (_, g) = app.get(&format!("/groups/{gid}"), &b.token).await;
    assert_eq!(g["group"]["members"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_receipts_are_per_member_and_status_needs_everyone() {
    let app = TestApp::spawn().await;
    let (a, b, c) = (
        app.user("ann").await,
        app.user("ben").await,
        app.user("cat").await,
    );
    let gid = create_group(&app, &a, "Receipts", &[&b, &c]).await;
    let mut wa = app.ws(&a.token).await;
    let mut wb = app.ws(&b.token).await;
    let mut wc = app.ws(&c.token).await;
    wa.send_json(&send_group(&gid, "r1", "did you read this?"))
        .await;
    wa.expect("ack", T).await;
    wb.expect("message", T).await;
    wc.expect("message", T).await;

    async fn status(app: &TestApp, gid: &str, token: &str) -> Value {
        app.get(&format!("/groups/{gid}"), token).await.1["messages"][0]["status"].clone()
    }
    wb.send_json(&json!({"type":"receipt","conversation_id":gid,"status":"read","up_to_seq":1}))
        .await;
    let r = wa.expect("receipt", T).await;
    assert_eq!(
        (r["user_id"].as_str(), r["status"].as_str()),
        (Some(b.user_id.as_str()), Some("read"))
    );
    assert_eq!(
        status(&app, &gid, &a.token).await,
        "sent",
        "c has not even received it"
    );
    wc.send_json(
        &json!({"type":"receipt","conversation_id":gid,"status":"delivered","up_to_seq":1}),
    )
    .await;
    wa.expect("receipt", T).await;
    assert_eq!(status(&app, &gid, &a.token).await, "delivered");

    let (s, info) = app
        .get(&format!("/groups/{gid}/messages/1/receipts"), &a.token)
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["sender_id"], a.user_id.as_str());
    let of = |u: &TestUser| {
        info["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user_id"] == u.user_id.as_str())
            .cloned()
    };
    assert_eq!(
        of(&b),
        Some(json!({"user_id": b.user_id, "delivered": true, "read": true}))
    );
    assert_eq!(
        of(&c),
        Some(json!({"user_id": c.user_id, "delivered": true, "read": false}))
    );
    assert_eq!(of(&a), None, "the sender is not listed");

    wc.send_json(&json!({"type":"receipt","conversation_id":gid,"status":"read","up_to_seq":1}))
        .await;
    wa.expect("receipt", T).await;
    assert_eq!(status(&app, &gid, &a.token).await, "read");
}

/// One message reaches all 500 connected members of a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_500_member_group_reaches_every_connected_member() {
    // Cheaper (still argon2id) password hashing: this test is about fan-out,
    // not about registering 500 accounts.
    let app = std::sync::Arc::new(
        TestApp::spawn_with_worker(|w| {
            w.password_memory_kib = 1024;
            w.password_iterations = 1;
        })
        .await,
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // Registration hashes passwords (argon2id): a few at a time, as clients would.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for i in 0..500 {
        let (app, gate) = (std::sync::Arc::clone(&app), std::sync::Arc::clone(&gate));
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            app.user(&format!("m{i}")).await
        });
    }
    let mut users = Vec::new();
    while let Some(u) = tasks.join_next().await {
        users.push(u.expect("register"));
    }
    eprintln!("registered 500 users in {:?}", started.elapsed());
    let admin = users.pop().expect("admin");
    let mut clients: Vec<WsClient> = Vec::with_capacity(users.len());
    for u in &users {
        clients.push(app.ws(&u.token).await);
    }
    let refs: Vec<&TestUser> = users.iter().collect();
    let gid = create_group(&app, &admin, "Big", &refs).await;
    for c in &mut clients {
        c.expect("group", T).await; // everyone heard of the group: sockets are live
    }
    let mut wa = app.ws(&admin.token).await;
    let sent = Instant::now();
    wa.send_json(&send_group(&gid, "big-1", "hello everyone"))
        .await;
    wa.expect("ack", T).await;
    let mut set = tokio::task::JoinSet::new();
    for mut c in clients {
        set.spawn(async move {
            let m = c.expect("message", T).await;
            (m["message"]["seq"].as_u64(), Instant::now())
        });
    }
    let mut last = sent;
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        let (seq, at) = r.expect("member task");
        assert_eq!(seq, Some(1));
        last = last.max(at);
        n += 1;
    }
    assert_eq!(n, 499);
    eprintln!(
        "fan-out to 499 members (+ sender ack): last delivery {:?} after send",
        last - sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_and_added_back_keeps_the_history_of_both_windows() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.user("a").await, app.user("b").await);
    let gid = create_group(&app, &a, "windows", &[&b]).await;
    let mut wa = app.ws(&a.token).await;
    let say = |cmid: &str| send_group(&gid, cmid, &format!("text {cmid}"));
    for cmid in ["w1", "w2"] {
        wa.send_json(&say(cmid)).await;
        wa.expect("ack", T).await;
    }
    let remove = app
        .request(
            "DELETE",
            &format!("/groups/{gid}/remove?user_id={}", b.user_id),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(remove.0, 200, "{}", remove.1);
    wa.send_json(&say("gap")).await;
    wa.expect("ack", T).await;
    let (s, g) = app
        .post(
            &format!("/groups/{gid}/add"),
            &json!({"user_id": b.user_id}),
            Some(&a.token),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    wa.send_json(&say("w3")).await;
    wa.expect("ack", T).await;

    let (s, page) = app.get(&format!("/groups/{gid}"), &b.token).await;
    assert_eq!(s, 200, "{page}");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        texts,
        ["text w1", "text w2", "text w3"],
        "not what was sent while away"
    );
    // Paging forward from the first window skips the gap.
    let (_, fwd) = app.get(&format!("/groups/{gid}?after=2"), &b.token).await;
    let seqs: Vec<u64> = fwd["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [4]);
    // A reaction to a message of the earlier window is allowed; to the gap, not.
    let mut wb = app.ws(&b.token).await;
    wb.send_json(
        &json!({"type":"react","client_msg_id":"r1","conversation_id":gid,"seq":1,"emoji":"👍"}),
    )
    .await;
    assert_eq!(wb.expect("message_update", T).await["message"]["seq"], 1);
    wb.send_json(
        &json!({"type":"react","client_msg_id":"r2","conversation_id":gid,"seq":3,"emoji":"👍"}),
    )
    .await;
    let e = wb.expect("error", T).await;
    assert_eq!(e["code"], "unknown_message");
}
