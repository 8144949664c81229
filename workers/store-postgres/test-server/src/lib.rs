//! Starts a throwaway PostgreSQL for one test: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port (trust authentication,
//! socket in the same directory), a database `msgr`; `Drop` stops it and
//! removes the directory.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every
//! server command runs as the `postgres` system user (`runuser`), and the
//! directory is handed to that user.
//!
//! The binaries are found in `MSGR_POSTGRES_BIN_DIR`, then in
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout, newest first), then
//! on `PATH`. Missing, starting fails loudly with the command that installs
//! them. Depends on nothing in the workspace.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct TestPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    running: bool,
}

/// The directory holding `pg_ctl`, or a panic saying how to install it.
#[must_use]
pub fn postgres_bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MSGR_POSTGRES_BIN_DIR") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return newest;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("pg_ctl").is_file() && dir.join("initdb").is_file() {
                return dir;
            }
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run `just postgres` (installs \
         Debian's postgresql-15 with apt), or `sudo apt-get install postgresql-15`, or set \
         MSGR_POSTGRES_BIN_DIR to the directory holding pg_ctl"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TestPostgres {
    /// Creates, starts and waits for a server with an empty database `msgr`.
    ///
    /// # Panics
    /// If the binaries are missing or the server does not start within 30 s.
    #[must_use]
    pub fn start() -> Self {
        let bin = postgres_bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("msgr-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            run_ok(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        let mut pg = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
            running: false,
        };
        let data = pg.data_dir();
        run_ok(pg.cmd("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            // The cluster is created, not crashed: skipping initdb's fsyncs
            // saves seconds. The server itself syncs as usual.
            "--no-sync",
        ]));
        pg.start_again();
        run_ok(
            pg.cmd("createdb")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .arg("msgr"),
        );
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.stdin(Stdio::null());
        c
    }

    /// `postgres://postgres@127.0.0.1:<port>/msgr`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/msgr", self.port)
    }

    /// The port it listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) on the same port and data, waiting until
    /// it accepts connections.
    ///
    /// # Panics
    /// If it does not start within 30 s.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run_ok(
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-w", "-t", "30", "-o", &opts, "start"]),
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A clean stop (`pg_ctl stop -m fast`: sessions are ended, a
    /// checkpoint is written).
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// A crash: every server process gets SIGKILL at once. The next start
    /// runs crash recovery from the WAL.
    pub fn crash(&mut self) {
        if !self.running {
            return;
        }
        if let Some(pid) = self.postmaster_pid() {
            // The backends first (children of the postmaster), then it.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &pid.to_string()])
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.running = false;
    }

    /// [`Self::crash`], then start again.
    pub fn crash_restart(&mut self) {
        self.crash();
        self.start_again();
    }

    /// The postmaster's pid, while it runs.
    #[must_use]
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pidfile = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        pidfile.lines().next()?.trim().parse().ok()
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let stopped = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "30", "-m", mode, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if stopped {
            self.running = false;
        }
    }

    /// The server's log so far (for a failing test's message).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        if self.running {
            self.crash();
        }
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
