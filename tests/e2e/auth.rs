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
