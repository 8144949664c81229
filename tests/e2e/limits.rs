//! Rate limits and login locks, seen from outside: raw HTTP with the
//! client address in `X-Forwarded-For` (trusted in these tests) and a
//! WebSocket.

use std::time::Duration;

use msgr_tests::TestApp;
use serde_json::{json, Value};

use crate::T;

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

/// The doors the first test does not knock on: logins per address, uploads
/// per user, sockets per user, and the password check of an account
/// deletion (locked like a login, or a stolen token is a password oracle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_uploads_sockets_and_account_deletion_are_limited_too() {
    let app = TestApp::spawn_with_edge(|e| {
        e.limits.enabled = true;
        e.limits.trust_forwarded_for = true;
        e.limits.logins_per_minute = 4;
        e.limits.uploads_per_minute = 2;
        e.limits.connections_per_user = 3;
    })
    .await;
    let alice = app.user("alice").await;
    let login = json!({"username": alice.username, "password": "correct horse battery"});

    // Logins per address: 4 a minute, then 429 for any account; another
    // address is not affected.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, _, _) =
            call_from(&app, "10.0.1.1", "POST", "/user/login", None, Some(&login)).await;
        statuses.push(s);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429],
        "logins from one address"
    );
    let (s, _, b) = call_from(&app, "10.0.1.2", "POST", "/user/login", None, Some(&login)).await;
    assert_eq!(s, 200, "another address logs in: {b}");

    // Uploads per user: 2 a minute.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = msgr_tests::http_stream(
            app.addr,
            "POST",
            "/media",
            &[
                ("authorization", format!("Bearer {}", alice.token)),
                ("content-type", "text/plain".to_owned()),
                ("content-length", "5".to_owned()),
            ],
            futures_util::stream::once(async { bytes::Bytes::from_static(b"hello") }),
        )
        .await;
        statuses.push((r.status, r.header("retry-after").is_some()));
    }
    assert_eq!(
        statuses,
        [(201, false), (201, false), (429, true)],
        "uploads: status, Retry-After"
    );

    // Sockets per user: 3 here; a 4th is refused 429 until one closes.
    let path = format!("/messages/send?token={}", alice.token);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(app.ws(&alice.token).await);
    }
    assert_eq!(
        msgr_tests::WsClient::connect(app.addr, &path, None)
            .await
            .err(),
        Some(429),
        "a 4th socket of one user"
    );
    let bob = app.user("bob").await;
    let mut b = app.ws(&bob.token).await;
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = msgr_tests::WsClient::connect(app.addr, &path, None).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("a closed socket frees its place");
    again.send_text_to(&bob.user_id, "c1", "still here").await;
    assert_eq!(again.expect("ack", T).await["client_msg_id"], "c1");
    assert_eq!(
        b.expect("message", T).await["message"]["text"],
        "still here"
    );

    // Deleting the account checks the password as a login does, under the
    // login's limits: 4 tries a minute from one address (then 429 even with
    // the right password there), and the account is still there.
    let wrong = json!({"password": "not my password"});
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (s, _, _) = call_from(
            &app,
            "10.0.1.9",
            "DELETE",
            "/user",
            Some(&alice.token),
            Some(&wrong),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429], "wrong passwords");
    let right = json!({"password": "correct horse battery"});
    let (s, retry, _) = call_from(
        &app,
        "10.0.1.9",
        "DELETE",
        "/user",
        Some(&alice.token),
        Some(&right),
    )
    .await;
    assert_eq!(
        (s, retry.is_some()),
        (429, true),
        "then refused at that address"
    );
    let (s, me) = app
        .get(&format!("/users/{}", alice.user_id), &bob.token)
        .await;
    assert_eq!(
        (s, me["username"].as_str()),
        (200, Some(alice.username.as_str())),
        "the account is still there: {me}"
    );
}
