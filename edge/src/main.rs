//! `msgr-edge`: run with `msgr-edge --help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    msgr_edge::main_entry().await
}
