//! Minimal, efficient clients of the public API: HTTP/1.1 over hyper and
//! WebSocket over fastwebsockets (the same stack as the server).

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Payload, WebSocketWrite};
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

pub type Io = TokioIo<Upgraded>;

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// One HTTP request on a fresh connection; returns status and body.
async fn send(addr: SocketAddr, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    let stream = TcpStream::connect(addr).await.context("connect")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// One HTTP request on a fresh connection; returns status and JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let (status, body) = send(addr, req.body(Full::new(bytes))?).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// One request with a raw body of `content_type`; returns status and JSON body.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", content_type);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (status, body) = send(addr, req.body(Full::new(Bytes::from(body)))?).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// GETs `url` (`http://IP:PORT/path`) and returns the body as text, e.g. a
/// server's Prometheus `/metrics`.
pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = host
        .parse()
        .with_context(|| format!("{url}: host must be IP:PORT"))?;
    let req = hyper::Request::builder()
        .uri(format!("/{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))?;
    let (status, body) = send(addr, req).await?;
    anyhow::ensure!((200..300).contains(&status), "{url}: HTTP {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Registers and logs in `username` through the public API.
pub async fn register(addr: SocketAddr, username: &str) -> anyhow::Result<User> {
    let creds = json!({"username": username, "password": "bench-password-1"});
    let (s, b) = http(addr, "POST", "/user/register", None, Some(creds.clone())).await?;
    anyhow::ensure!(s == 201 || s == 409, "register {username}: {s} {b}");
    let (s, b) = http(addr, "POST", "/user/login", None, Some(creds)).await?;
    anyhow::ensure!(s == 200, "login {username}: {s} {b}");
    Ok(User {
        user_id: b["user_id"].as_str().context("user_id")?.to_owned(),
        token: b["token"].as_str().context("token")?.to_owned(),
    })
}

/// Registers `n` users named `<prefix>-<i>`, `parallel` at a time.
pub async fn register_many(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Vec<User>> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while out.len() < n {
        while set.len() < parallel && next < n {
            let name = format!("{prefix}-{next}");
            set.spawn(async move { (next, register(addr, &name).await) });
            next += 1;
        }
        if let Some(r) = set.join_next().await {
            let (i, u) = r?;
            out.push((i, u?));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, u)| u).collect())
}

struct Exec;
impl<Fut> hyper::rt::Executor<Fut> for Exec
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// The write half of a WebSocket.
pub type Writer = WebSocketWrite<WriteHalf<Io>>;

/// The two halves of an authenticated WebSocket.
pub struct Ws {
    pub rx: FragmentCollectorRead<ReadHalf<Io>>,
    pub tx: WebSocketWrite<WriteHalf<Io>>,
}

/// Opens `WS /messages/send`, optionally from a chosen local address.
pub async fn connect_ws(
    addr: SocketAddr,
    token: &str,
    from: Option<std::net::IpAddr>,
) -> anyhow::Result<Ws> {
    let stream = match from {
        Some(ip) => {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(ip, 0))?;
            s.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let req = hyper::Request::builder()
        .method("GET")
        .uri(format!("/messages/send?token={token}"))
        .header("host", addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())?;
    let (ws, _) = fastwebsockets::handshake::client(&Exec, req, stream).await?;
    let (r, w) = ws.split(tokio::io::split);
    Ok(Ws {
        rx: FragmentCollectorRead::new(r),
        tx: w,
    })
}

/// Reads the next text frame as JSON (`None` when the socket closed).
pub async fn next_json(rx: &mut FragmentCollectorRead<ReadHalf<Io>>) -> Option<Value> {
    loop {
        let f = rx
            .read_frame(&mut |_| async { Ok::<_, std::convert::Infallible>(()) })
            .await
            .ok()?;
        match f.opcode {
            OpCode::Text => return serde_json::from_slice(&f.payload).ok(),
            OpCode::Close => return None,
            _ => {}
        }
    }
}

/// Sends one text frame.
pub async fn send_text(tx: &mut WebSocketWrite<WriteHalf<Io>>, text: &str) -> anyhow::Result<()> {
    tx.write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
        .await?;
    Ok(())
}

/// A JSON `ping` answered by a `pong` within 5 s: the connection is alive.
pub async fn ping(ws: &mut Ws) -> anyhow::Result<()> {
    send_text(&mut ws.tx, r#"{"type":"ping"}"#).await?;
    let deadline = std::time::Duration::from_secs(5);
    tokio::time::timeout(deadline, async {
        while let Some(v) = next_json(&mut ws.rx).await {
            if v["type"] == "pong" {
                return Ok(());
            }
        }
        anyhow::bail!("closed")
    })
    .await
    .context("no pong")?
}
