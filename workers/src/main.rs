//! `msgr-worker`: run with `msgr-worker --help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msgr_workers::main_entry().await
}
