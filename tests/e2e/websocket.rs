//! RFC 6455 as clients that are not browsers use it, with a hand-written
//! client for the frames libraries never send.

use serde_json::{json, Value};

use msgr_tests::TestApp;

use crate::T;

/// A WebSocket opened by hand, for frames a well-behaved client library
/// never sends (unmasked ones).
struct RawWs(tokio::net::TcpStream);

impl RawWs {
    async fn open(app: &TestApp, token: &str) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        let req = format!(
            "GET /messages/send HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n",
            app.addr
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1, "EOF in handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self(s)
    }

    /// Writes one frame; `mask: None` sends it unmasked.
    async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        use tokio::io::AsyncWriteExt as _;
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65_536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        self.0.write_all(&out).await.expect("write");
    }

    /// The next frame from the server: (opcode, payload), or `None` at EOF.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt as _;
        let read = async {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).await.ok()?;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.0.read_exact(&mut l).await.ok()?;
                    u64::from(u16::from_be_bytes(l))
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.0.read_exact(&mut l).await.ok()?;
                    u64::from_be_bytes(l)
                }
                n => u64::from(n),
            };
            let mut p = vec![0u8; usize::try_from(len).ok()?];
            self.0.read_exact(&mut p).await.ok()?;
            Some((h[0] & 0x0f, p))
        };
        tokio::time::timeout(T, read)
            .await
            .expect("no frame in time")
    }

    /// The next text frame as JSON, skipping others.
    async fn json(&mut self) -> Value {
        loop {
            match self.next().await {
                Some((1, p)) => return serde_json::from_slice(&p).expect("JSON"),
                Some((8, p)) => panic!("closed: {p:?}"),
                Some(_) => {}
                None => panic!("EOF"),
            }
        }
    }

    /// The close code the server sends, skipping frames before it.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                Some((8, p)) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                Some((8, _)) | None => return None,
                Some(_) => {}
            }
        }
    }
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);
const TEXT: u8 = 1;
const CONTINUATION: u8 = 0;
const PING: u8 = 9;

/// RFC 6455 as proxies and non-browser clients use it: fragmented messages
/// are reassembled (with control frames between the fragments), unmasked
/// client frames and continuations of nothing are protocol errors (1002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_fragments_are_reassembled_and_unmasked_frames_refused() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);

    let mut w = RawWs::open(&app, &alice.token).await;
    w.frame(false, TEXT, br#"{"type":"pi"#, KEY).await;
    w.frame(true, PING, b"in between", KEY).await;
    w.frame(true, CONTINUATION, br#"ng"}"#, KEY).await;
    // Both answered, in either order: the control pong and the JSON one.
    let mut got = vec![w.next().await, w.next().await];
    got.sort();
    assert_eq!(
        got,
        vec![
            Some((1, br#"{"type":"pong"}"#.to_vec())),
            Some((10, b"in between".to_vec())),
        ]
    );
    // A send in three fragments, split inside a multi-byte character.
    let send = json!({"type":"send","client_msg_id":"frag","to_user":bob.user_id,"text":"héllo"})
        .to_string()
        .into_bytes();
    let cut = send.iter().position(|&b| b == 0xc3).expect("é") + 1;
    w.frame(false, TEXT, &send[..10], KEY).await;
    w.frame(false, CONTINUATION, &send[10..cut], KEY).await;
    w.frame(true, CONTINUATION, &send[cut..], KEY).await;
    let ack = w.json().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["client_msg_id"], "frag");

    let mut u = RawWs::open(&app, &alice.token).await;
    u.frame(true, TEXT, br#"{"type":"ping"}"#, None).await;
    assert_eq!(u.close_code().await, Some(1002), "an unmasked frame");

    let mut c = RawWs::open(&app, &alice.token).await;
    c.frame(true, CONTINUATION, b"orphan", KEY).await;
    assert_eq!(
        c.close_code().await,
        Some(1002),
        "a continuation of nothing"
    );

    let mut n = RawWs::open(&app, &alice.token).await;
    n.frame(false, TEXT, b"{", KEY).await;
    n.frame(true, TEXT, br#"{"type":"ping"}"#, KEY).await;
    assert_eq!(n.close_code().await, Some(1002), "a new message inside one");

    // The edge is fine, and so is the message sent in fragments.
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["messages"][0]["text"], "héllo");
}
