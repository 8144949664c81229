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
