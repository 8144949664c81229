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
