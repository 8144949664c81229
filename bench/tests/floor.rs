//! `msgr-bus-floor` against a real nats-server with JetStream: every message
//! it publishes comes back through the stream, the consumers and the inboxes,
//! and the JSON it writes says so. (Its latency is for `just bench-floor`, not a test.)

use std::process::Command;

#[test]
fn the_floor_tool_gets_every_message_back_and_writes_its_report() {
    let nats = msgr_nats_test_server::TestNats::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("floor.json");
    let status = Command::new(env!("CARGO_BIN_EXE_msgr-bus-floor"))
        .args([
            "--nats",
            &nats.url(),
            "--rates",
            "500",
            "--secs",
            "2",
            "--partitions",
            "4",
        ])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("running msgr-bus-floor");
    assert!(status.success(), "msgr-bus-floor exited with {status}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("floor.json written")).expect("JSON");
    let step = &doc["steps"][0];
    assert_eq!(step["offered_per_s"], 500);
    assert_eq!(step["sent"], 1000, "{step}");
    assert_eq!(step["lost"], 0, "{step}");
    assert_eq!(step["e2e"]["count"], 1000, "{step}");
    assert_eq!(step["sender_copies"], 1000, "{step}");
    assert_eq!(doc["unacked_publishes"], 0);
    assert!(step["processes"]
        .as_array()
        .is_some_and(|p| p.iter().any(|u| u["name"] == "floor tool")));
}

#[test]
fn the_floor_tool_refuses_a_server_whose_command_stream_exists() {
    let nats = msgr_nats_test_server::TestNats::start();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_msgr-bus-floor"))
            .args(["--nats", &nats.url(), "--rates", "100", "--secs", "1"])
            .output()
            .expect("running msgr-bus-floor")
    };
    // The first run creates the stream, as a worker would have.
    assert!(run().status.success());
    let second = run();
    assert!(
        !second.status.success(),
        "a second run on the same server must refuse"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("needs a nats-server of its own"), "{err}");
}
