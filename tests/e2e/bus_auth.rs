//! The bus as a trust boundary: each role connects as its own NATS user
//! (`infra/nats_auth.py`, as `just up` and `just cluster` use it) and is
//! refused what it must not do. Above all, nothing but an edge can put a
//! command on the bus: a process that could published a `SendCommand` in
//! user A's name and had it stored and pushed as A's message.

use std::path::Path;
use std::time::Duration;

use msgr_nats_test_server::TestNats;
use msgr_tests::{test_edge_base, TestApp};
use prost::Message as _;
use serde_json::json;

use crate::T;

fn role(dir: &Path, name: &str) -> msgr_core::config::NatsConfig {
    msgr_core::config::NatsConfig {
        user: name.to_owned(),
        password_file: Some(dir.join(format!("{name}.pass"))),
        ..Default::default()
    }
}

async fn connect_as(nats: &TestNats, dir: &Path, name: &str) -> async_nats::Client {
    let pw = std::fs::read_to_string(dir.join(format!("{name}.pass"))).expect("password");
    async_nats::ConnectOptions::with_user_and_password(name.to_owned(), pw.trim().to_owned())
        .connect(nats.url())
        .await
        .expect("connect")
}

/// Whether the server refuses `client` a JetStream publish on `subject`
/// (one a stream takes: an allowed publish gets its PubAck, a refused one
/// is dropped and gets none).
async fn publish_refused(client: &async_nats::Client, subject: &str) -> bool {
    let js = async_nats::jetstream::new(client.clone());
    match tokio::time::timeout(Duration::from_secs(2), async {
        js.publish(subject.to_owned(), "x".into()).await?.await
    })
    .await
    {
        Ok(Ok(_)) => false,
        Ok(Err(_)) | Err(_) => true,
    }
}

/// Whether `watcher`, subscribed to `subject`, sees nothing of what
/// `publisher` publishes there (the server drops a publish it does not
/// allow; one it allows would arrive).
async fn publish_dropped(
    publisher: &async_nats::Client,
    watcher: &async_nats::Client,
    subject: &str,
) -> bool {
    let mut sub = watcher
        .subscribe(subject.to_owned())
        .await
        .expect("the watcher may subscribe");
    watcher.flush().await.expect("flush");
    let _ = publisher.publish(subject.to_owned(), "x".into()).await;
    let _ = publisher.flush().await;
    tokio::time::timeout(
        Duration::from_millis(500),
        futures_util::StreamExt::next(&mut sub),
    )
    .await
    .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_connects_as_itself_and_is_refused_what_it_must_not_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("server.conf");
    std::fs::write(&conf, "max_payload: 1MB\n").expect("conf");
    let secrets = dir.path().join("secrets");
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/nats_auth.py"
        ))
        .arg(&secrets)
        .arg(&conf)
        .output()
        .expect("python3 runs infra/nats_auth.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["edge.pass", "worker.pass", "integrator.pass"] {
        let mode = std::fs::metadata(secrets.join(f))
            .expect("pass")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others");
    }
    let nats = TestNats::start_with_config(&conf);

    // Without credentials: nothing.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), async_nats::connect(nats.url()))
            .await
            .map_or(true, |r| r.is_err()),
        "an anonymous client was let in"
    );

    // The whole system works as edge and worker users.
    let mut edge = test_edge_base();
    edge.nats = role(&secrets, "edge");
    let worker = msgr_workers::config::WorkerConfig {
        nats: role(&secrets, "worker"),
        metrics_listen: String::new(),
        ..Default::default()
    };
    let app = TestApp::spawn_on(nats, edge, worker).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "ok-1", "through the bus, with identities")
        .await;
    let ack = a.expect("ack", T).await;
    assert_eq!(ack["client_msg_id"], "ok-1");
    // Receipts, typing and a group's events cross the bus as well.
    let mut b = app.ws(&bob.token).await;
    b.send_json(&json!({"type":"receipt","conversation_id":ack["conversation_id"],"status":"read","up_to_seq":1}))
        .await;
    assert_eq!(
        a.expect("receipt", T).await["user_id"],
        bob.user_id.as_str()
    );
    b.send_json(&json!({"type":"typing","conversation_id":ack["conversation_id"]}))
        .await;
    assert_eq!(a.expect("typing", T).await["user_id"], bob.user_id.as_str());
    let (s, g) = app
        .post(
            "/groups/create",
            &json!({"name": "Guarded", "members": [bob.user_id]}),
            Some(&alice.token),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    assert_eq!(b.expect("group", T).await["event"], "created");
    // Group typing (edge → worker → inbox), a change command, presence (KV
    // and its events) work with the roles' permissions too.
    let gid = g["group_id"].as_str().expect("group_id");
    a.send_json(&json!({"type":"typing","conversation_id":gid}))
        .await;
    assert_eq!(b.expect("typing", T).await["conversation_id"], gid);
    let conv = ack["conversation_id"].as_str().expect("conversation");
    a.send_json(&json!({"type":"edit","client_msg_id":"e-1","conversation_id":conv,"seq":1,"text":"edited"}))
        .await;
    assert_eq!(
        b.expect("message_update", T).await["message"]["text"],
        "edited"
    );
    b.send_json(&json!({"type":"presence","user_ids":[alice.user_id]}))
        .await;
    let p = b.expect("presence", T).await;
    assert_eq!(p["online"], true, "alice's connection was counted: {p}");
    drop(a);
    loop {
        let p = b.expect("presence", T).await;
        if p["online"] == false {
            assert!(p["last_seen"].is_string(), "{p}");
            break;
        }
    }
    let mut a = app.ws(&alice.token).await;

    // An integrator reads events and may own a consumer on MSGR_IN…
    let integrator = connect_as(&app.nats, &secrets, "integrator").await;
    let mut events = integrator
        .subscribe("msgr.v2.evt.messages.>")
        .await
        .expect("subscribe to events");
    let ijs = async_nats::jetstream::new(integrator.clone());
    let stream = ijs
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("the integrator sees MSGR_IN");
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("AUDIT".to_owned()),
            ..Default::default()
        })
        .await
        .expect("the integrator makes its own consumer");
    // …under the names it was given, and none of the sequencers': pulling
    // from or acking on a SEQ_* consumer would take commands from a partition.
    for name in ["SEQ_0_99", "OTHER"] {
        assert!(
            tokio::time::timeout(
                Duration::from_secs(2),
                stream.create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(name.to_owned()),
                    ..Default::default()
                })
            )
            .await
            .map_or(true, |r| r.is_err()),
            "the integrator made a consumer named {name}"
        );
    }
    let wjs = async_nats::jetstream::new(connect_as(&app.nats, &secrets, "worker").await);
    let mut names = wjs
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("MSGR_IN")
        .consumer_names();
    let mut sequencers = Vec::new();
    while let Some(name) = futures_util::StreamExt::next(&mut names).await {
        let name = name.expect("a consumer name");
        if name.starts_with("SEQ_") {
            sequencers.push(name);
        }
    }
    assert!(
        !sequencers.is_empty(),
        "the sequencers' consumers are listed"
    );
    for name in &sequencers {
        let pull = integrator.request(
            format!("$JS.API.CONSUMER.MSG.NEXT.MSGR_IN.{name}"),
            r#"{"batch":1,"no_wait":true}"#.into(),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(2), pull)
                .await
                .map_or(true, |r| r.is_err()),
            "the integrator pulled from the sequencer's consumer {name}"
        );
    }
    a.send_text_to(&bob.user_id, "ok-2", "seen by the integrator")
        .await;
    a.expect("ack", T).await;
    let ev = tokio::time::timeout(T, futures_util::StreamExt::next(&mut events))
        .await
        .expect("an event in time")
        .expect("event");
    let stored = msgr_schemas::pb::v1::StoredMessages::decode(ev.payload).expect("StoredMessages");
    assert_eq!(stored.messages[0].client_msg_id, "ok-2");

    // …but cannot forge a command in someone's name, ask the services, or
    // push to a user's inbox.
    let (forged, conv, p) =
        msgr_tests::direct_send_command(&alice, &bob, "forged", "I am alice, honest");
    let subject = msgr_nats::subject::in_send(p, &conv);
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        ijs.publish(subject.clone(), forged.clone().into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "an integrator put a command on the bus"
    );
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            integrator.request("msgr.v1.rpc.account.login", "x".into())
        )
        .await
        .map_or(true, |r| r.is_err()),
        "an integrator made a request"
    );
    let worker = connect_as(&app.nats, &secrets, "worker").await;
    let edge = connect_as(&app.nats, &secrets, "edge").await;
    let inbox = format!("msgr.v1.deliver.user.{}", bob.user_id);
    assert!(
        publish_dropped(&integrator, &edge, &inbox).await,
        "an integrator pushed to a user's inbox"
    );
    assert!(
        publish_dropped(&integrator, &worker, "msgr.v1.rpc.account.login").await,
        "an integrator published on a service subject"
    );
    // Nor push to an edge, nor tell the workers where users are.
    assert!(
        publish_dropped(&integrator, &edge, "msgr.v2.deliver.edge.edge-x").await,
        "an integrator pushed to an edge"
    );
    assert!(
        publish_dropped(&integrator, &worker, "msgr.v2.route.edge-x").await,
        "an integrator announced a route"
    );
    // Nor put a batch of commands on the bus (v2); nor may a worker.
    let batch = msgr_schemas::pb::v1::CommandBatch {
        commands: vec![msgr_schemas::pb::v1::Command {
            command: Some(msgr_schemas::pb::v1::command::Command::Send(
                msgr_schemas::pb::v1::SendCommand::decode(forged.as_slice()).expect("send"),
            )),
        }],
    };
    let batch_subject = msgr_nats::subject::v2::in_batch(p);
    let refused = tokio::time::timeout(Duration::from_secs(2), async {
        ijs.publish(batch_subject.clone(), batch.encode_to_vec().into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "an integrator put a command batch on the bus"
    );
    assert!(
        publish_refused(&worker, &batch_subject).await,
        "worker: {batch_subject}"
    );
    // A worker may not put commands on the bus either; an edge may not
    // answer the services (it cannot subscribe to them).
    assert!(
        publish_refused(&worker, &subject).await,
        "worker: {subject}"
    );
    let mut sub = edge
        .subscribe("msgr.v1.rpc.account.login")
        .await
        .expect("a subscribe call returns");
    let _ = edge.flush().await;
    let got = tokio::time::timeout(
        Duration::from_millis(500),
        futures_util::StreamExt::next(&mut sub),
    )
    .await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "an edge received a service request"
    );

    // Nothing forged was stored: bob's history has the two real messages.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, h) = app
        .get(
            &format!("/messages/{}/{}", bob.user_id, alice.user_id),
            &bob.token,
        )
        .await;
    assert_eq!(s, 200, "{h}");
    let ids: Vec<_> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["client_msg_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["ok-1", "ok-2"]);
}
