use msgr_tests::{http_get_raw, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_found_by_username_prefix_and_by_id_with_public_fields_only() {
    // Arrange
    let app = TestApp::spawn().await;
    let alice = app.user("finder").await;
    let bob = app.user("findme").await;
    let carol = app.user("findme").await;

    // Act: a case-insensitive prefix search.
    let (s, body) = app.get("/users?query=FINDME_&limit=10", &alice.token).await;

    // Assert
    assert_eq!(s, 200, "{body}");
    let users = body["users"].as_array().expect("users");
    let names: Vec<&str> = users
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    let mut want = vec![bob.username.as_str(), carol.username.as_str()];
    want.sort_unstable();
    assert_eq!(names, want, "username order, prefix only");
    for u in users {
        let mut keys: Vec<&str> = u
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["display_name", "user_id", "username"],
            "public fields only"
        );
    }
    let (_, one) = app.get("/users?query=findme_&limit=1", &alice.token).await;
    assert_eq!(one["users"].as_array().map(Vec::len), Some(1));

    // By ids (unknown ids left out) and one by one.
    let ids = format!(
        "/users?ids={},{},u00000000000000000000000000000000",
        bob.user_id, alice.user_id
    );
    let (s, body) = app.get(&ids, &alice.token).await;
    assert_eq!(s, 200, "{body}");
    let got: Vec<&str> = body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user_id"].as_str())
        .collect();
    assert_eq!(got, [bob.user_id.as_str(), alice.user_id.as_str()]);
    let (s, body) = app
        .get(&format!("/users/{}", bob.user_id), &alice.token)
        .await;
    assert_eq!(
        (s, body["username"].as_str()),
        (200, Some(bob.username.as_str()))
    );

    // Errors.
    for path in [
        "/users",
        "/users?query=",
        "/users?query=has%20space",
        "/users?query=a&ids=b",
        "/users?query=ab&limit=x",
    ] {
        let (s, body) = app.get(path, &alice.token).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{path}: {body}"
        );
    }
    let many = vec![bob.user_id.as_str(); 201].join(",");
    let (s, _) = app.get(&format!("/users?ids={many}"), &alice.token).await;
    assert_eq!(s, 400);
    let (s, body) = app
        .get("/users/u00000000000000000000000000000000", &alice.token)
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, _) = app.get("/users/not-an-id", &alice.token).await;
    assert_eq!(s, 404);
    let r = http_get_raw(app.addr, "/users?query=findme", &[]).await;
    assert_eq!(r.status, 401, "lookup needs a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_is_served_at_the_root_with_a_content_security_policy() {
    let app = TestApp::spawn().await;
    let page = http_get_raw(app.addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'self'")));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("/app.js"), "the page loads the client module");
    for (path, ty) in [
        ("/app.js", "text/javascript"),
        ("/api.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let r = http_get_raw(app.addr, path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").is_some_and(|c| c.starts_with(ty)),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path}");
    }
    assert_eq!(http_get_raw(app.addr, "/nope.js", &[]).await.status, 404);
}

/// Client authors can point their tools at a running edge: it serves the
/// REST reference it was built with, and the document lists every route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_its_openapi_document() {
    let app = TestApp::spawn().await;
    let r = http_get_raw(app.addr, "/openapi.yaml", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    let doc = String::from_utf8_lossy(&r.body);
    assert!(
        doc.starts_with("openapi: 3."),
        "{}",
        &doc[..40.min(doc.len())]
    );
    for path in [
        "/user/register:",
        "/user/login:",
        "/messages/{user_id}/{receiver_id}:",
        "/chat/{user_id}:",
        "/groups/create:",
        "/media:",
        "/healthz:",
        "/openapi.yaml:",
    ] {
        assert!(doc.contains(&format!("\n  {path}")), "{path} is documented");
    }
}
