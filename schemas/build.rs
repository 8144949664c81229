//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/msgr/v1/bus.proto", "proto/msgr/v1/rpc.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Shared, not copied: an edge hands each event to its connections
        // as a slice of the message it arrived in.
        .bytes([".msgr.v1.RoutedDelivery.delivery"])
        .compile_fds(fds)?;
    Ok(())
}
