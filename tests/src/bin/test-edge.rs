//! The real `msgr-edge` entry point, built as a binary of the test package so
//! tests can run it as a child process (and read its memory use).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msgr_edge::main_entry().await
}
