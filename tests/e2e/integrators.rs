//! What an integrator's consumer on the command stream may hold.

use std::time::Duration;

use msgr_tests::TestApp;

use crate::T;

/// An integrator's durable consumer on `MSGR_IN` that stops pulling and
/// acking does not keep the commands forever: JetStream deletes it once it
/// has been idle for `consumer_idle_secs` (2 s here, a day by default) and
/// the commands it held go; every command also leaves after
/// `command_max_age_secs`. The worker reports the backlog per integrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrator_that_stops_acking_cannot_fill_the_disk() {
    let app = TestApp::spawn_with_worker(|w| {
        w.consumer_idle_secs = 2;
        w.command_max_age_secs = 3_600;
    })
    .await;
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
    let mut stream = js
        .get_stream(msgr_nats::stream::IN_STREAM)
        .await
        .expect("stream");
    let info = stream.info().await.expect("info").clone();
    assert_eq!(info.config.max_age, Duration::from_secs(3_600));
    // An integrator's durable consumer, which then never pulls.
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("ANALYTICS".to_owned()),
            ..Default::default()
        })
        .await
        .expect("an integrator's consumer");
    let mut consumer = consumer;
    let cfg = consumer.info().await.expect("info").config.clone();
    assert_eq!(
        cfg.inactive_threshold,
        Duration::from_secs(2),
        "the stream's limit is the consumer's default"
    );
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    for i in 0..50 {
        a.send_text_to(&bob.user_id, &format!("i{i}"), "hello")
            .await;
    }
    for _ in 0..50 {
        a.expect("ack", T).await;
    }
    // The edge batches commands (`msgr.v2.in.<p>.batch`): count the
    // commands the held messages carry.
    let held = stream.info().await.expect("info").state.clone();
    let mut commands = 0;
    for seq in held.first_sequence..=held.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            use prost::Message as _;
            commands += msgr_schemas::pb::v1::CommandBatch::decode(m.payload)
                .expect("a command batch")
                .commands
                .len();
        }
    }
    assert!(
        commands >= 50,
        "the integrator holds the commands it has not acked ({commands} in {} messages)",
        held.messages
    );
    // Idle past the threshold: the consumer goes, and what it held with it.
    let start = std::time::Instant::now();
    loop {
        let messages = stream.info().await.expect("info").state.messages;
        let gone = stream.consumer_info("ANALYTICS").await.is_err();
        if gone && messages == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still {messages} commands held (consumer gone: {gone})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "an idle integrator's consumer and its 50 commands were gone {} ms after the last ack",
        start.elapsed().as_millis()
    );
    // Sequencers pull all the time: they are never idle, and messaging goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.send_text_to(&bob.user_id, "after", "still here").await;
    assert_eq!(a.expect("ack", T).await["client_msg_id"], "after");
}

/// The v1 subjects stay available by setting: `integrator_events = "both"`
/// publishes every stored message on `msgr.v1.evt.message.<conv>` beside the
/// batch on `msgr.v2.evt.messages.<p>`, and `deliver_v1 = "always"` pushes to
/// `msgr.v1.deliver.user.<user>` even for a user a routed edge holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_subjects_are_kept_when_asked_for() {
    use prost::Message as _;
    let app = TestApp::spawn_with_worker(|w| {
        w.integrator_events = msgr_workers::sequencer::IntegratorEvents::Both;
        w.deliver_v1 = msgr_workers::deliver::DeliverV1::Always;
    })
    .await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    let mut b = app.ws(&bob.token).await;
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let mut v1_events = nats.subscribe("msgr.v1.evt.message.>").await.expect("sub");
    let mut v2_events = nats.subscribe("msgr.v2.evt.messages.>").await.expect("sub");
    let mut inbox = nats
        .subscribe(format!("msgr.v1.deliver.user.{}", bob.user_id))
        .await
        .expect("sub");
    nats.flush().await.expect("flush");

    a.send_text_to(&bob.user_id, "v1-1", "both ways").await;
    a.expect("ack", T).await;
    assert_eq!(b.expect("message", T).await["message"]["text"], "both ways");

    let one = msgr_schemas::pb::v1::StoredMessage::decode(next_of(&mut v1_events).await.payload)
        .expect("StoredMessage");
    assert_eq!(one.client_msg_id, "v1-1");
    let batch = msgr_schemas::pb::v1::StoredMessages::decode(next_of(&mut v2_events).await.payload)
        .expect("StoredMessages");
    assert_eq!(batch.messages, vec![one]);
    let d = msgr_schemas::pb::v1::Delivery::decode(next_of(&mut inbox).await.payload)
        .expect("Delivery");
    assert!(
        matches!(d.event, Some(msgr_schemas::pb::v1::delivery::Event::Message(m)) if m.client_msg_id == "v1-1"),
        "bob's v1 inbox has the message although a routed edge holds him"
    );
}

async fn next_of(s: &mut async_nats::Subscriber) -> async_nats::Message {
    use futures_util::StreamExt as _;
    tokio::time::timeout(T, s.next())
        .await
        .expect("in time")
        .expect("a message")
}
