//! System test harness: a real `nats-server`, a real worker (in-process, or
//! the real binary as a child process when a test must `kill -9` it), a real
//! edge on an ephemeral port, and real HTTP and WebSocket clients.
//!
//! Everything a `TestApp` starts stops when it is dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use msgr_edge::{EdgeApp, EdgeConfig};
use msgr_nats_test_server::TestNats;
use msgr_workers::{Role, WorkerApp, WorkerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub use msgr_nats_test_server::free_port;

pub mod s3;

/// Lease TTL used in tests: short, so takeovers are quick.
pub const TEST_LEASE_TTL_MS: u64 = 1_000;

/// How the worker runs.
enum WorkerRun {
    InProcess {
        token: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
    Process(Child),
    Stopped,
}

/// A running stack.
pub struct TestApp {
    pub nats: TestNats,
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    signer: Option<Arc<msgr_core_reexport::TokenSigner>>,
    worker: WorkerRun,
    worker_bin: Option<PathBuf>,
    /// Settings every in-process worker of this app starts from.
    worker_base: WorkerConfig,
    edge_token: CancellationToken,
    edge_task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Re-exports the tests need without depending on msgr-core directly.
pub mod msgr_core_reexport {
    pub use msgr_core::auth::token::TokenSigner;
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub user_id: String,
    pub username: String,
    pub token: String,
}

fn worker_config(base: &WorkerConfig, nats_url: &str, data: &Path) -> WorkerConfig {
    WorkerConfig {
        nats: msgr_core::config::NatsConfig {
            url: nats_url.to_owned(),
            ..base.nats.clone()
        },
        data_dir: data.to_path_buf(),
        ..base.clone()
    }
}

/// The edge settings tests start from: rate limits off (tests register and
/// send from one address far faster than people do); the tests of the
/// limits turn them on.
pub fn test_edge_base() -> EdgeConfig {
    let mut e = EdgeConfig::default();
    e.limits.enabled = false;
    e
}

fn test_worker_base() -> WorkerConfig {
    WorkerConfig {
        lease_ttl_ms: TEST_LEASE_TTL_MS,
        // Off unless a test asks for it: tests run in parallel.
        metrics_listen: String::new(),
        ..WorkerConfig::default()
    }
}

/// A child process that is woken (SIGCONT) and killed when dropped, so a
/// failing test leaves no frozen process behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Resident memory of process `pid` in KiB (from /proc); 0 if it is gone.
#[must_use]
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The `SendCommand` an edge would publish for a direct message from
/// `from` to `to`, as raw bytes, and its conversation id and partition (of
/// the default count): what a test puts on the bus by hand.
pub fn direct_send_command(
    from: &TestUser,
    to: &TestUser,
    cmid: &str,
    text: &str,
) -> (Vec<u8>, String, u32) {
    use prost::Message as _;
    let conv = msgr_core::id::direct_conversation_id(&from.user_id, &to.user_id);
    let cmd = msgr_schemas::pb::v1::SendCommand {
        sender_id: from.user_id.clone(),
        client_msg_id: cmid.to_owned(),
        conversation_id: conv.clone(),
        target: Some(msgr_schemas::pb::v1::send_command::Target::ToUser(
            to.user_id.clone(),
        )),
        text: Some(text.to_owned()),
        media_id: None,
        received_at_ms: 1,
        reply_to_seq: None,
    };
    let p = msgr_core::id::partition_of(&conv, msgr_workers::config::DEFAULT_PARTITIONS);
    (cmd.encode_to_vec(), conv, p)
}

impl TestApp {
    /// NATS + in-process worker (all roles) + in-process edge.
    pub async fn spawn() -> Self {
        Self::spawn_inner(None, test_edge_base(), test_worker_base()).await
    }

    /// Like [`Self::spawn`] with edge settings changed by `f`.
    pub async fn spawn_with_edge(f: impl FnOnce(&mut EdgeConfig)) -> Self {
        let mut c = test_edge_base();
        f(&mut c);
        Self::spawn_inner(None, c, test_worker_base()).await
    }

    /// Like [`Self::spawn`] with both edge and worker settings changed.
    pub async fn spawn_with(
        e: impl FnOnce(&mut EdgeConfig),
        w: impl FnOnce(&mut WorkerConfig),
    ) -> Self {
        let (mut edge, mut worker) = (test_edge_base(), test_worker_base());
        e(&mut edge);
        w(&mut worker);
        Self::spawn_inner(None, edge, worker).await
    }

    /// Another in-process edge on the same NATS, with settings changed by `f`;
    /// it stops when the returned guard drops.
    pub async fn extra_edge(
        &self,
        f: impl FnOnce(&mut EdgeConfig),
    ) -> (SocketAddr, tokio_util::sync::DropGuard) {
        let mut edge = EdgeConfig {
            listen: "127.0.0.1:0".to_owned(),
            nats: msgr_core::config::NatsConfig {
                url: self.nats.url(),
                ..Default::default()
            },
            data_dir: self.data.path().to_path_buf(),
            ..test_edge_base()
        };
        f(&mut edge);
        let token = CancellationToken::new();
        let app = EdgeApp::build(edge, token.clone())
            .await
            .expect("extra edge builds");
        let addr = app.local_addr().expect("addr");
        tokio::spawn(app.run_until_stopped());
        (addr, token.drop_guard())
    }

    /// The real edge binary as a child process on the same NATS; returns it
    /// with its address once it answers `/healthz`.
    pub async fn edge_process(&self, bin: &str, env: &[(&str, String)]) -> (Child, SocketAddr) {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env("MSGR_LISTEN", format!("127.0.0.1:{port}"))
            .env("MSGR_NATS__URL", self.nats.url())
            .env("MSGR_DATA_DIR", self.data.path())
            .env("RUST_LOG", "error")
            .stdout(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn edge binary");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        for _ in 0..500 {
            if TcpStream::connect(addr).await.is_ok() {
                return (child, addr);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("edge process did not start");
    }

    /// Like [`Self::spawn`] with worker settings changed by `f`.
    pub async fn spawn_with_worker(f: impl FnOnce(&mut WorkerConfig)) -> Self {
        let mut w = test_worker_base();
        f(&mut w);
        Self::spawn_inner(None, test_edge_base(), w).await
    }

    /// NATS + the worker *binary* as a child process + in-process edge.
    pub async fn spawn_with_worker_process(worker_bin: &str) -> Self {
        Self::spawn_inner(
            Some(PathBuf::from(worker_bin)),
            test_edge_base(),
            test_worker_base(),
        )
        .await
    }

    /// Like [`Self::spawn_with_worker_process`] with the worker's lease TTL
    /// (the one setting passed to the process) changed.
    pub async fn spawn_with_worker_process_ttl(worker_bin: &str, lease_ttl_ms: u64) -> Self {
        Self::spawn_with_worker_process_and(worker_bin, |w| w.lease_ttl_ms = lease_ttl_ms).await
    }

    /// Like [`Self::spawn_with_worker_process`] with settings changed; the
    /// process gets `lease_ttl_ms` and `metrics_listen` (its own /metrics,
    /// unlike in-process workers, which share the test process's recorder).
    pub async fn spawn_with_worker_process_and(
        worker_bin: &str,
        f: impl FnOnce(&mut WorkerConfig),
    ) -> Self {
        let mut w = test_worker_base();
        f(&mut w);
        Self::spawn_inner(Some(PathBuf::from(worker_bin)), test_edge_base(), w).await
    }

    /// Like [`Self::spawn`] on an existing data directory (a restored
    /// backup, say), with a fresh NATS.
    pub async fn spawn_on_data(data: tempfile::TempDir) -> Self {
        Self::spawn_inner_on(None, test_edge_base(), test_worker_base(), data).await
    }

    /// The settings of this app's worker (data directory included), as a
    /// tool run beside it would read them.
    pub fn worker_config(&self) -> WorkerConfig {
        worker_config(&self.worker_base, &self.nats.url(), self.data.path())
    }

    async fn spawn_inner(
        worker_bin: Option<PathBuf>,
        edge: EdgeConfig,
        worker_base: WorkerConfig,
    ) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        Self::spawn_inner_on(worker_bin, edge, worker_base, data).await
    }

    async fn spawn_inner_on(
        worker_bin: Option<PathBuf>,
        edge: EdgeConfig,
        worker_base: WorkerConfig,
        data: tempfile::TempDir,
    ) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            msgr_core::telemetry::init_tracing("info,async_nats=warn");
        }
        Self::spawn_on_nats(TestNats::start(), worker_bin, edge, worker_base, data).await
    }

    /// NATS already started (with authorization, say) + the worker + the
    /// edge; their `nats` settings (user, password) are kept, the URL set.
    pub async fn spawn_on(nats: TestNats, edge: EdgeConfig, worker: WorkerConfig) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        Self::spawn_on_nats(nats, None, edge, worker, data).await
    }

    async fn spawn_on_nats(
        nats: TestNats,
        worker_bin: Option<PathBuf>,
        mut edge: EdgeConfig,
        worker_base: WorkerConfig,
        data: tempfile::TempDir,
    ) -> Self {
        let mut app = Self {
            nats,
            addr: "127.0.0.1:0".parse().expect("addr"),
            data,
            signer: None,
            worker: WorkerRun::Stopped,
            worker_bin,
            worker_base,
            edge_token: CancellationToken::new(),
            edge_task: None,
        };
        app.start_worker().await;
        edge.listen = "127.0.0.1:0".to_owned();
        edge.nats.url = app.nats.url();
        edge.data_dir = app.data.path().to_path_buf();
        edge.bootstrap_timeout_secs = 30;
        let edge_app = EdgeApp::build(edge, app.edge_token.clone())
            .await
            .expect("edge builds");
        app.addr = edge_app.local_addr().expect("edge addr");
        app.edge_task = Some(tokio::spawn(edge_app.run_until_stopped()));
        app
    }

    /// Starts (or restarts) the worker.
    pub async fn start_worker(&mut self) {
        let config = worker_config(&self.worker_base, &self.nats.url(), self.data.path());
        if let Some(bin) = &self.worker_bin {
            let child = Command::new(bin)
                .arg("all")
                .env("MSGR_NATS__URL", &config.nats.url)
                .env("MSGR_DATA_DIR", self.data.path())
                .env("MSGR_METRICS_LISTEN", &self.worker_base.metrics_listen)
                .env(
                    "MSGR_LEASE_TTL_MS",
                    self.worker_base.lease_ttl_ms.to_string(),
                )
                .env(
                    "RUST_LOG",
                    // TEST_LOG=1 logs at info; any other value is the filter itself.
                    std::env::var("TEST_LOG").map_or("error".to_owned(), |v| {
                        if v == "1" {
                            "info".to_owned()
                        } else {
                            v
                        }
                    }),
                )
                .stdout(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .stderr(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .expect("spawn worker binary");
            self.worker = WorkerRun::Process(child);
            // The signer's key file appears once the worker has started.
            let key = self.data.path().join("paseto-v4.secret");
            for _ in 0..500 {
                if let Ok(b) = std::fs::read(&key) {
                    if let Ok(s) = msgr_core::auth::token::TokenSigner::from_secret_bytes(&b) {
                        self.signer = Some(Arc::new(s));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            let app = WorkerApp::build(config, vec![Role::All])
                .await
                .expect("worker builds");
            self.signer = Some(app.signer());
            let token = CancellationToken::new();
            let task = tokio::spawn(app.run_until_stopped(token.clone()));
            self.worker = WorkerRun::InProcess { token, task };
        }
    }

    /// Starts another in-process worker (all roles) against the same NATS and
    /// data directory; it stops when the returned guard drops.
    pub async fn start_extra_worker(&self) -> tokio_util::sync::DropGuard {
        let config = worker_config(&self.worker_base, &self.nats.url(), self.data.path());
        let app = WorkerApp::build(config, vec![Role::All])
            .await
            .expect("extra worker builds");
        let token = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(token.clone()));
        token.drop_guard()
    }

    /// Aborts an in-process worker mid-flight: no lease release, no acks,
    /// as close to a crash as one process can get (SIGKILL for a child).
    pub async fn abort_worker(&mut self) {
        match std::mem::replace(&mut self.worker, WorkerRun::Stopped) {
            WorkerRun::InProcess { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            other => {
                self.worker = other;
                self.kill_worker().await;
            }
        }
    }

    /// Stops the worker: SIGKILL for a process, a graceful stop in-process.
    pub async fn kill_worker(&mut self) {
        match std::mem::replace(&mut self.worker, WorkerRun::Stopped) {
            WorkerRun::Process(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            WorkerRun::InProcess { token, task } => {
                token.cancel();
                let _ = task.await;
            }
            WorkerRun::Stopped => {}
        }
    }

    /// The worker process's pid (only when it runs as a child process).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.worker {
            WorkerRun::Process(c) => Some(c.id()),
            _ => None,
        }
    }

    /// The worker's token signer (to forge expired tokens).
    pub fn signer(&self) -> Arc<msgr_core::auth::token::TokenSigner> {
        Arc::clone(self.signer.as_ref().expect("worker started"))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends an HTTP request; returns status and parsed JSON body (Null if empty/not JSON).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        http(self.addr, method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        self.request(
            "POST",
            path,
            token,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    /// Registers and logs in a fresh user whose name starts with `prefix`.
    pub async fn user(&self, prefix: &str) -> TestUser {
        let username = format!("{prefix}_{}", &uuid_like()[..10]);
        let (s, body) = self
            .post(
                "/user/register",
                &json!({"username": username, "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(s, 201, "register: {body}");
        let (s, login) = self
            .post(
                "/user/login",
                &json!({"username": username, "password": "correct horse battery"}),
                None,
            )
            .await;
        assert_eq!(s, 200, "login: {login}");
        TestUser {
            user_id: login["user_id"].as_str().expect("user_id").to_owned(),
            username,
            token: login["token"].as_str().expect("token").to_owned(),
        }
    }

    /// Every message of the direct chat between `user` and `peer`, oldest
    /// first, as `user` reads it (paging forward through history).
    pub async fn direct_history(&self, user: &TestUser, peer: &TestUser) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (s, page) = self
                .get(
                    &format!(
                        "/messages/{}/{}?after={after}&limit=200",
                        user.user_id, peer.user_id
                    ),
                    &user.token,
                )
                .await;
            assert_eq!(s, 200, "{page}");
            let msgs = page["messages"].as_array().expect("messages").clone();
            let Some(last) = msgs.last() else {
                return out;
            };
            after = last["seq"].as_u64().expect("seq");
            out.extend(msgs);
        }
    }

    /// A WebSocket to `/messages/send` authenticated by `token`.
    pub async fn ws(&self, token: &str) -> WsClient {
        WsClient::connect(self.addr, &format!("/messages/send?token={token}"), None)
            .await
            .expect("websocket connects")
    }

    /// Stops the edge (graceful: sessions get 1001) and starts a new one on
    /// the same port.
    pub async fn restart_edge(&mut self) {
        self.edge_token.cancel();
        if let Some(t) = self.edge_task.take() {
            let _ = t.await;
        }
        self.edge_token = CancellationToken::new();
        let edge = EdgeConfig {
            listen: self.addr.to_string(),
            data_dir: self.data.path().to_path_buf(),
            nats: msgr_core::config::NatsConfig {
                url: self.nats.url(),
                ..Default::default()
            },
            ..test_edge_base()
        };
        let edge_app = EdgeApp::build(edge, self.edge_token.clone())
            .await
            .expect("edge rebuilds");
        self.edge_task = Some(tokio::spawn(edge_app.run_until_stopped()));
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.edge_token.cancel();
        match std::mem::replace(&mut self.worker, WorkerRun::Stopped) {
            WorkerRun::Process(mut c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            WorkerRun::InProcess { token, .. } => token.cancel(),
            WorkerRun::Stopped => {}
        }
    }
}

/// 32 random hex characters.
pub fn uuid_like() -> String {
    msgr_core::id::new_user_id()[1..].to_owned()
}

/// A minimal HTTP/1.1 client over a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An HTTP response with its raw body and headers.
pub struct RawResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request with a body streamed from `chunks` (chunked encoding unless
/// `content_length` is given) and returns the raw response.
pub async fn http_stream<S>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    chunks: S,
) -> RawResponse
where
    S: futures_util::Stream<Item = Bytes> + Send + Sync + 'static,
{
    use futures_util::StreamExt as _;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let body = http_body_util::StreamBody::new(
        chunks.map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b))),
    );
    let req = req.body(body).expect("request");
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        // The server may answer early (413) and close while the body is still
        // being written; the client then sees a write error, not the answer.
        // Status 0 says "closed before accepting the body".
        Err(_) => {
            return RawResponse {
                status: 0,
                headers: hyper::HeaderMap::new(),
                body: Bytes::new(),
            }
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A GET returning the raw response.
pub async fn http_get_raw(addr: SocketAddr, path: &str, headers: &[(&str, String)]) -> RawResponse {
    http_stream(addr, "GET", path, headers, futures_util::stream::empty()).await
}

/// What a WebSocket read produced.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Json(Value),
    Closed(Option<u16>),
}

/// A real WebSocket client.
pub struct WsClient {
    ws: FragmentCollector<TokioIo<Upgraded>>,
}

struct SpawnExecutor;
impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

impl WsClient {
    /// Connects to `path`; `Err(status)` if the server refused the upgrade.
    pub async fn connect(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Result<Self, u16> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", addr.to_string())
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header(
                "sec-websocket-key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("sec-websocket-version", "13");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new()).expect("request");
        match fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await {
            Ok((ws, _)) => Ok(Self {
                ws: FragmentCollector::new(ws),
            }),
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(code)) => Err(code),
            Err(e) => panic!("websocket handshake failed: {e}"),
        }
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .write_frame(Frame::text(Payload::Borrowed(s.as_bytes())))
            .await
            .expect("ws write");
    }

    /// Any one frame (masked, as a client's must be).
    pub async fn send_frame(&mut self, fin: bool, opcode: OpCode, b: &[u8]) {
        let frame = Frame::new(fin, opcode, None, Payload::Borrowed(b));
        self.ws.write_frame(frame).await.expect("ws write");
    }

    /// A WebSocket ping control frame (not the JSON `ping`).
    pub async fn send_ping_frame(&mut self, payload: &[u8]) {
        let frame = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(payload));
        self.ws.write_frame(frame).await.expect("ws write");
    }

    pub async fn send_binary(&mut self, b: &[u8]) {
        self.ws
            .write_frame(Frame::binary(Payload::Borrowed(b)))
            .await
            .expect("ws write");
    }

    /// Sends a text message to `to_user` with `client_msg_id`.
    pub async fn send_text_to(&mut self, to_user: &str, cmid: &str, text: &str) {
        self.send_json(&json!({"type":"send","client_msg_id":cmid,"to_user":to_user,"text":text}))
            .await;
    }

    /// The next frame, or `None` after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<WsEvent> {
        let f = tokio::time::timeout(within, self.ws.read_frame())
            .await
            .ok()?;
        match f {
            Ok(frame) => match frame.opcode {
                OpCode::Text => Some(WsEvent::Json(
                    serde_json::from_slice(&frame.payload).expect("server sends JSON"),
                )),
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    Some(WsEvent::Closed(code))
                }
                _ => Some(WsEvent::Json(Value::Null)),
            },
            Err(_) => Some(WsEvent::Closed(None)),
        }
    }

    /// The next JSON frame whose `type` is `kind`, skipping others; panics after `within`.
    pub async fn expect(&mut self, kind: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(WsEvent::Json(v)) if v["type"] == kind => return v,
                Some(WsEvent::Json(_)) => {}
                Some(WsEvent::Closed(c)) => {
                    panic!("socket closed ({c:?}) while waiting for {kind}")
                }
                None => panic!("no {kind} frame within {within:?}"),
            }
        }
    }

    /// Collects JSON frames until `within` passes with nothing new.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(WsEvent::Json(v)) = self.next(quiet).await {
            out.push(v);
        }
        out
    }
}
