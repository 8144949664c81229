//! The real `msgr-worker` entry point, built as a binary of the test package
//! so tests can run it as a child process (and `kill -9` it).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msgr_workers::main_entry().await
}
