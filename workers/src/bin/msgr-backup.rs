//! `msgr-backup`: back up and restore the one-machine store (`--help`).

fn main() -> anyhow::Result<()> {
    msgr_workers::backup::main_entry()
}
