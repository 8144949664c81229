//! TLS at the edge: HTTPS and WSS with a certificate made at run time.

use std::time::Duration;

use msgr_tests::TestApp;
use serde_json::{json, Value};

use crate::T;

/// With a certificate and key the edge serves HTTPS and WSS (rustls), with
/// `Strict-Transport-Security`; plain HTTP on that port gets nowhere. The
/// certificate is made at run time (self-signed, for 127.0.0.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_wss_with_hsts() {
    use http_body_util::BodyExt as _;
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    let (addr, _edge) = app
        .extra_edge(|e| {
            e.tls = Some(msgr_edge::tls::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                hsts_max_age_secs: 31_536_000,
            });
        })
        .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        connector
            .connect(server_name.clone(), tcp)
            .await
            .expect("TLS handshake")
    };

    // HTTPS, with HSTS.
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls().await))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("/users/{}", bob.user_id))
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {}", alice.token))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000")
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let user: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(user["user_id"], bob.user_id.as_str());

    // WSS: a send is acked.
    struct Spawn;
    impl<F> hyper::rt::Executor<F> for Spawn
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        fn execute(&self, f: F) {
            tokio::spawn(f);
        }
    }
    let req = hyper::Request::builder()
        .uri("/messages/send")
        .header("host", "127.0.0.1")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header("authorization", format!("Bearer {}", alice.token))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let (ws, _) = fastwebsockets::handshake::client(&Spawn, req, tls().await)
        .await
        .expect("WebSocket over TLS");
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    let send =
        json!({"type":"send","client_msg_id":"tls-1","to_user":bob.user_id,"text":"over TLS"})
            .to_string();
    ws.write_frame(fastwebsockets::Frame::text(
        fastwebsockets::Payload::Borrowed(send.as_bytes()),
    ))
    .await
    .expect("write");
    let ack = loop {
        let f = tokio::time::timeout(T, ws.read_frame())
            .await
            .expect("a frame in time")
            .expect("read");
        let v: Value = serde_json::from_slice(&f.payload).expect("JSON");
        if v["type"] == "ack" {
            break v;
        }
    };
    assert_eq!(ack["client_msg_id"], "tls-1");

    // Plain HTTP to the TLS port is not served.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "plain HTTP was answered on the TLS port"
    );
}
