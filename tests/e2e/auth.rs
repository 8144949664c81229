use msgr_tests::{TestApp, WsClient};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_follows_the_username_and_password_rules() {
    // Arrange
    let app = TestApp::spawn().await;
    let name = format!("Alice_{}", &msgr_tests::uuid_like()[..8]);

    // Act / Assert: a valid registration.
    let (s, body) = app
        .post(
            "/user/register",
            &json!({"username": name, "password": "12345678", "display_name": "Alice A."}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert!(body["user_id"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(body["username"], name.to_lowercase());
    assert_eq!(body["display_name"], "Alice A.");

    // Usernames are unique ignoring case.
    let (s, body) = app
        .post(
            "/user/register",
            &json!({"username": name.to_uppercase(), "password": "12345678"}),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (409, Some("username_taken")),
        "{body}"
    );

    for (username, password, code) in [
        ("ab", "12345678", "invalid_username"),
        (&"a".repeat(33) as &str, "12345678", "invalid_username"),
        ("has space", "12345678", "invalid_username"),
        ("ok_name_1", "1234567", "invalid_password"),
        ("ok_name_2", &"p".repeat(1025), "invalid_password"),
    ] {
        let (s, body) = app
            .post(
                "/user/register",
                &json!({"username": username, "password": password}),
                None,
            )
            .await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{username}: {body}"
        );
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Bad bodies.
    let (s, body) = app
        .request("POST", "/user/register", None, Some(b"{not json".to_vec()))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (s, body) = app
        .post(
            "/user/register",
            &json!({"username": 5, "password": "12345678"}),
            None,
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (s, body) = app
        .post("/user/register", &json!({"password": "12345678"}), None)
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // 1025 bytes is the longest allowed password plus one; 1024 works.
    let (s, _) = app
        .post(
            "/user/register",
            &json!({"username": "long_pw_ok", "password": "p".repeat(1024)}),
            None,
        )
        .await;
    assert_eq!(s, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gives_a_token_and_hides_whether_a_user_exists() {
    let app = TestApp::spawn().await;
    let user = app.user("bob").await;

    // Username lookup is case-insensitive; the token lasts about 24 h.
    let (s, body) = app
        .post(
            "/user/login",
            &json!({"username": user.username.to_uppercase(), "password": "correct horse battery"}),
            None,
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["user_id"], user.user_id.as_str());
    assert!(body["token"]
        .as_str()
        .is_some_and(|t| t.starts_with("v4.public.")));
    let expires = body["expires_at"].as_str().expect("expires_at");
    assert!(
        expires.ends_with('Z') && expires.len() == 24,
        "RFC 3339 with ms: {expires}"
    );

    let (s1, wrong_pw) = app
        .post(
            "/user/login",
            &json!({"username": user.username, "password": "wrong password"}),
            None,
        )
        .await;
    let (s2, unknown) = app
        .post(
            "/user/login",
            &json!({"username": "nobody_here", "password": "wrong password"}),
            None,
        )
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        wrong_pw, unknown,
        "same body whether or not the user exists"
    );
    assert_eq!(wrong_pw["error"]["code"], "invalid_credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_a_valid_unexpired_token() {
    let app = TestApp::spawn().await;
    let user = app.user("carol").await;
    let chat = format!("/chat/{}", user.user_id);

    let (s, body) = app.request("GET", &chat, None, None).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, body) = app.get(&chat, "v4.public.garbage").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let expired = app
        .signer()
        .sign_expired(&user.user_id, "2020-01-01T00:00:00+00:00")
        .expect("sign");
    let (s, body) = app.get(&chat, &expired).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    let (s, _) = app
        .get(
            &format!("/messages/{}/{}", user.user_id, user.user_id),
            "nope",
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = app.get(&chat, &user.token).await;
    assert_eq!(s, 200);

    // The WebSocket upgrade is refused with 401 before any frame.
    assert_eq!(
        WsClient::connect(app.addr, "/messages/send", None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        WsClient::connect(app.addr, "/messages/send?token=garbage", None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        WsClient::connect(app.addr, &format!("/messages/send?token={expired}"), None)
            .await
            .err(),
        Some(401)
    );
    // Header auth works as well as ?token=.
    assert!(
        WsClient::connect(app.addr, "/messages/send", Some(&user.token))
            .await
            .is_ok()
    );
    assert!(WsClient::connect(
        app.addr,
        &format!("/messages/send?token={}", user.token),
        None
    )
    .await
    .is_ok());
    // Anywhere else a token in the URL is not a credential: it would end up
    // in logs, histories and Referer headers.
    for path in [
        format!("/chat/{}", user.user_id),
        format!("/users/{}", user.user_id),
        format!("/messages/{}/{}", user.user_id, user.user_id),
        "/media/md00000000000000000000000000000000".to_owned(),
    ] {
        let (s, body) = msgr_tests::http(
            app.addr,
            "GET",
            &format!("{path}?token={}", user.token),
            None,
            None,
        )
        .await;
        assert_eq!(s, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
}

/// A status and JSON body, for a request with a bearer token and a User-Agent.
async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let r = msgr_tests::http_stream(
        addr,
        method,
        path,
        &[("authorization", format!("Bearer {token}"))],
        futures_util::stream::empty(),
    )
    .await;
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

async fn login_as(app: &TestApp, username: &str, agent: &str) -> serde_json::Value {
    let body = bytes::Bytes::from(
        json!({"username": username, "password": "correct horse battery"}).to_string(),
    );
    let r = msgr_tests::http_stream(
        app.addr,
        "POST",
        "/user/login",
        &[
            ("content-type", "application/json".to_owned()),
            ("user-agent", agent.to_owned()),
        ],
        futures_util::stream::once(async move { body }),
    )
    .await;
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("JSON")
}

/// Until `f` holds (polled every 50 ms), at most `within`; how long it took.
async fn within<F, Fut>(within: std::time::Duration, mut f: F) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Sessions a user can see and end: two devices are listed (the current one
/// marked), revoking the other one makes its token fail on every edge within
/// moments and closes its WebSocket with 4001; a refresh gives a new token
/// for a live session only; logout ends the current one; "revoke all" ends
/// every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_revoked_everywhere_within_moments() {
    let app = TestApp::spawn().await;
    let user = app.user("dana").await;
    let (other_edge, _guard) = app.extra_edge(|_| {}).await;
    let phone = login_as(&app, &user.username, "Phone/1.0").await;
    let laptop = login_as(&app, &user.username, "Laptop/2.0").await;
    let (phone_token, laptop_token) = (
        phone["token"].as_str().expect("token").to_owned(),
        laptop["token"].as_str().expect("token").to_owned(),
    );
    let phone_sid = phone["session_id"].as_str().expect("session_id").to_owned();

    let (s, list) = call(app.addr, "GET", "/user/sessions", &laptop_token).await;
    assert_eq!(s, 200, "{list}");
    let sessions = list["sessions"].as_array().expect("sessions");
    let agents: Vec<_> = sessions
        .iter()
        .filter_map(|s| s["user_agent"].as_str())
        .collect();
    assert!(
        agents.contains(&"Phone/1.0") && agents.contains(&"Laptop/2.0"),
        "{list}"
    );
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{list}");
    assert_eq!(current[0]["user_agent"], "Laptop/2.0");

    // The phone's WebSocket, on the other edge.
    let mut ws = WsClient::connect(other_edge, "/messages/send", Some(&phone_token))
        .await
        .expect("phone connects");
    let (s, _) = call(
        app.addr,
        "DELETE",
        &format!("/user/sessions/{phone_sid}"),
        &laptop_token,
    )
    .await;
    assert_eq!(s, 204);
    let took = within(std::time::Duration::from_secs(5), || async {
        call(
            other_edge,
            "GET",
            &format!("/users/{}", user.user_id),
            &phone_token,
        )
        .await
        .0 == 401
    })
    .await;
    println!(
        "a revoked token refused on the other edge after {} ms",
        took.as_millis()
    );
    let (s, body) = call(
        app.addr,
        "GET",
        &format!("/users/{}", user.user_id),
        &phone_token,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("session_revoked"))
    );
    let closed = loop {
        match ws.next(crate::T).await {
            Some(msgr_tests::WsEvent::Closed(code)) => break code,
            Some(_) => {}
            None => panic!("the revoked session's WebSocket stayed open"),
        }
    };
    assert_eq!(closed, Some(4001));
    assert!(
        WsClient::connect(app.addr, "/messages/send", Some(&phone_token))
            .await
            .is_err(),
        "a revoked token opens no WebSocket"
    );
    // The laptop is untouched, and can refresh its token.
    let (s, fresh) = call(app.addr, "POST", "/user/token", &laptop_token).await;
    assert_eq!(s, 200, "{fresh}");
    let fresh_token = fresh["token"].as_str().expect("token").to_owned();
    assert_eq!(fresh["session_id"], laptop["session_id"]);
    assert_eq!(
        call(
            app.addr,
            "GET",
            &format!("/users/{}", user.user_id),
            &fresh_token
        )
        .await
        .0,
        200
    );
    // Left: the laptop and the login `app.user` made.
    let (s, list) = call(app.addr, "GET", "/user/sessions", &fresh_token).await;
    assert_eq!(
        list["sessions"].as_array().map(Vec::len),
        Some(2),
        "{s} {list}"
    );
    assert!(!list.to_string().contains(&phone_sid));
    // A revoked session cannot be refreshed, nor revoked twice.
    assert_eq!(
        call(app.addr, "POST", "/user/token", &phone_token).await.0,
        401
    );
    assert_eq!(
        call(
            app.addr,
            "DELETE",
            &format!("/user/sessions/{phone_sid}"),
            &fresh_token
        )
        .await
        .0,
        404
    );
    // Someone else's session is not found for me.
    let stranger = app.user("erin").await;
    let (_, theirs) = call(app.addr, "GET", "/user/sessions", &stranger.token).await;
    let theirs = theirs["sessions"][0]["session_id"]
        .as_str()
        .expect("sid")
        .to_owned();
    assert_eq!(
        call(
            app.addr,
            "DELETE",
            &format!("/user/sessions/{theirs}"),
            &fresh_token
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            app.addr,
            "GET",
            &format!("/users/{}", user.user_id),
            &stranger.token
        )
        .await
        .0,
        200
    );

    // Logout ends this session (both its tokens); revoke-all ends the rest.
    let tablet = login_as(&app, &user.username, "Tablet/3.0").await;
    let tablet_token = tablet["token"].as_str().expect("token").to_owned();
    let (s, _) = call(app.addr, "POST", "/user/logout", &fresh_token).await;
    assert_eq!(s, 204);
    for t in [&fresh_token, &laptop_token] {
        within(std::time::Duration::from_secs(5), || async {
            call(app.addr, "GET", "/user/sessions", t).await.0 == 401
        })
        .await;
    }
    assert_eq!(
        call(app.addr, "GET", "/user/sessions", &tablet_token)
            .await
            .0,
        200
    );
    let (s, r) = call(app.addr, "DELETE", "/user/sessions", &tablet_token).await;
    assert_eq!(
        (s, r["revoked"].as_u64()),
        (200, Some(2)),
        "the tablet and the first login: {r}"
    );
    for t in [&tablet_token, &user.token] {
        within(std::time::Duration::from_secs(5), || async {
            call(app.addr, "GET", "/user/sessions", t).await.0 == 401
        })
        .await;
    }
    // Logging in again works.
    let again = login_as(&app, &user.username, "Phone/1.1").await;
    let t = again["token"].as_str().expect("token");
    assert_eq!(
        call(app.addr, "GET", &format!("/users/{}", user.user_id), t)
            .await
            .0,
        200
    );
}

/// Export my data, then delete my account (as on WhatsApp: the profile
/// goes, what others received stays): the export holds every chat with
/// every message; deletion needs the password, leaves the groups, ends
/// every session and socket, frees the username, and the other person keeps
/// the chat but can send nothing more to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_exported_then_deleted_and_others_keep_their_chats() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "Trio", "members": [bob.user_id, carol.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let group = g["group_id"].as_str().expect("group_id").to_owned();
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    a.send_text_to(&bob.user_id, "a1", "hi bob").await;
    a.expect("ack", crate::T).await;
    b.send_text_to(&alice.user_id, "b1", "hi alice").await;
    b.expect("ack", crate::T).await;
    b.send_json(&json!({"type":"send","client_msg_id":"b2","to_group":group,"text":"hi all"}))
        .await;
    b.expect("ack", crate::T).await;

    // The export.
    let r = msgr_tests::http_get_raw(
        app.addr,
        "/user/export",
        &[("authorization", format!("Bearer {}", bob.token))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-disposition")
        .is_some_and(|d| d.starts_with("attachment")));
    let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("the export is JSON");
    assert_eq!(doc["user"]["user_id"], bob.user_id.as_str());
    assert_eq!(doc["sessions"].as_array().map(Vec::len), Some(1));
    let chats = doc["chats"].as_array().expect("chats");
    assert_eq!(chats.len(), 2, "{doc}");
    let texts: Vec<&str> = chats
        .iter()
        .flat_map(|c| c["messages"].as_array().into_iter().flatten())
        .filter_map(|m| m["text"].as_str())
        .collect();
    for t in ["hi bob", "hi alice", "hi all"] {
        assert!(texts.contains(&t), "{t} missing from {texts:?}");
    }

    // A wrong password changes nothing.
    let (s, body) = msgr_tests::http(
        app.addr,
        "DELETE",
        "/user",
        Some(&bob.token),
        Some(
            json!({"password": "not it at all"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    assert_eq!(
        app.get(&format!("/users/{}", bob.user_id), &alice.token)
            .await
            .0,
        200
    );

    let (s, body) = msgr_tests::http(
        app.addr,
        "DELETE",
        "/user",
        Some(&bob.token),
        Some(
            json!({"password": "correct horse battery"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(s, 204, "{body}");
    // His socket closes, his token and password stop working.
    let closed = loop {
        match b.next(crate::T).await {
            Some(msgr_tests::WsEvent::Closed(code)) => break code,
            Some(_) => {}
            None => panic!("the deleted account's socket stayed open"),
        }
    };
    assert_eq!(closed, Some(4001));
    assert_eq!(
        app.get(&format!("/users/{}", alice.user_id), &bob.token)
            .await
            .0,
        401
    );
    let (s, _) = app
        .post(
            "/user/login",
            &json!({"username": bob.username, "password": "correct horse battery"}),
            None,
        )
        .await;
    assert_eq!(s, 401);
    // The others: his profile is gone, the chat stays, nothing more reaches him.
    assert_eq!(
        app.get(&format!("/users/{}", bob.user_id), &alice.token)
            .await
            .0,
        404
    );
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}", alice.user_id, bob.user_id),
            &alice.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(2), "{h}");
    a.send_text_to(&bob.user_id, "a2", "are you there?").await;
    let e = a.expect("error", crate::T).await;
    assert_eq!(e["code"], "unknown_recipient", "{e}");
    let (s, page) = app.get(&format!("/groups/{group}"), &carol.token).await;
    assert_eq!(s, 200, "{page}");
    let members: Vec<&str> = page["group"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    assert!(!members.contains(&bob.user_id.as_str()), "{members:?}");
    assert!(
        page.to_string().contains("hi all"),
        "his group message stays"
    );
    // His username is free.
    let (s, body) = app
        .post(
            "/user/register",
            &json!({"username": bob.username, "password": "another good one"}),
            None,
        )
        .await;
    assert_eq!(s, 201, "{body}");
}

/// A user has at most `max_sessions_per_user` live sessions: a login past it
/// ends the oldest (refused from then on, like any revoked one), so the
/// session list and the export stay bounded however often someone logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_past_the_session_limit_ends_the_oldest_session() {
    let app = TestApp::spawn_with_worker(|w| w.max_sessions_per_user = 3).await;
    let user = app.user("erin").await;
    let mut tokens = Vec::new();
    for i in 0..4 {
        let s = login_as(&app, &user.username, &format!("Device/{i}")).await;
        tokens.push(s["token"].as_str().expect("token").to_owned());
    }
    let (s, list) = call(app.addr, "GET", "/user/sessions", &tokens[3]).await;
    assert_eq!(s, 200, "{list}");
    let agents: Vec<_> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["user_agent"].as_str())
        .collect();
    assert_eq!(
        agents,
        ["Device/3", "Device/2", "Device/1"],
        "newest three: {list}"
    );
    // The registration's login and Device/0 are over the limit: refused.
    let path = format!("/users/{}", user.user_id);
    for old in [&user.token, &tokens[0]] {
        within(std::time::Duration::from_secs(5), || async {
            call(app.addr, "GET", &path, old).await.0 == 401
        })
        .await;
    }
    for live in &tokens[1..] {
        assert_eq!(call(app.addr, "GET", &path, live).await.0, 200);
    }
}
