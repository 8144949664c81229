//! Bounded fuzz runs against a live stack (`just fuzz` runs them longer).

use std::time::Duration;

use msgr_tests::TestApp;

use crate::T;

/// A tiny deterministic generator for the bounded fuzz runs below.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `seed` with a few bytes flipped, inserted or cut, or random bytes.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(5) {
                0 if !b.is_empty() => {
                    let j = self.below(b.len());
                    b[j] = self.next() as u8;
                }
                1 => {
                    let j = self.below(b.len() + 1);
                    b.insert(j, self.next() as u8);
                }
                2 => b.truncate(self.below(b.len() + 1)),
                3 => b = (0..self.below(96)).map(|_| self.next() as u8).collect(),
                _ => {}
            }
        }
        b
    }
}

/// Hostile and malformed input from both sides neither crashes nor blocks
/// anything: commands of random and mutated bytes published straight onto a
/// live conversation's partition (as an integrator could), random history
/// cursors and page bounds, and random multipart bodies. The partition goes
/// on sequencing, history stays dense, every REST answer is a 2xx or a
/// documented 4xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_on_the_bus_and_in_requests_neither_crash_nor_block() {
    use prost::Message as _;
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let mut a = app.ws(&alice.token).await;
    a.send_text_to(&bob.user_id, "before", "before the storm")
        .await;
    a.expect("ack", T).await;
    let (send, conv, p) = msgr_tests::direct_send_command(&alice, &bob, "hostile", "x");
    let receipt = msgr_schemas::pb::v1::ReceiptCommand {
        conversation_id: conv.clone(),
        user_id: bob.user_id.clone(),
        status: 2,
        up_to_seq: 1,
        at_ms: 1,
    }
    .encode_to_vec();
    // Changes of message 1 (and of seqs no store can hold), and a reply to
    // one: mutations keep them near every edge of their fields.
    let change = |seq: u64, change| {
        msgr_schemas::pb::v1::ChangeCommand {
            actor_id: alice.user_id.clone(),
            client_msg_id: format!("chg-{seq}"),
            conversation_id: conv.clone(),
            seq,
            change: Some(change),
            received_at_ms: 1,
        }
        .encode_to_vec()
    };
    use msgr_schemas::pb::v1::change_command::Change;
    let changes = [
        change(1, Change::EditText("edited".to_owned())),
        change(u64::MAX, Change::ReactEmoji("👍".to_owned())),
        change(1 << 63, Change::Delete(true)),
        change(1, Change::ReactEmoji("🙂".to_owned())),
    ];
    let mut reply = msgr_schemas::pb::v1::SendCommand::decode(&send[..]).expect("send");
    reply.reply_to_seq = Some(u64::MAX);
    let reply = reply.encode_to_vec();
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
    let subjects = [
        msgr_nats::subject::in_send(p, &conv),
        msgr_nats::subject::in_receipt(p, &conv),
        msgr_nats::subject::in_change(p, &conv),
        format!("msgr.v1.in.{p}.send.not-a-conversation"),
        format!("msgr.v1.in.{p}.bogus.{conv}"),
    ];
    // Each seed as it is, then mutated at random.
    for (subject, seed) in [
        (msgr_nats::subject::in_send(p, &conv), &reply),
        (msgr_nats::subject::in_change(p, &conv), &changes[1]),
        (msgr_nats::subject::in_change(p, &conv), &changes[2]),
    ] {
        js.publish(subject, seed.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored in the stream");
    }
    let mut rng = Xorshift(0x2545_F491_4F6C_DD1D);
    // `just fuzz` publishes many more.
    let commands: usize = std::env::var("MSGR_FUZZ_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    // Batches (v2) of the same seeds, mutated whole: a bad command inside one
    // is refused alone, an undecodable batch is terminated.
    let batch = {
        use msgr_schemas::pb::v1::{command::Command as C, Command, CommandBatch};
        let cmd = |c| Command { command: Some(c) };
        CommandBatch {
            commands: vec![
                cmd(C::Send(
                    msgr_schemas::pb::v1::SendCommand::decode(&send[..]).expect("send"),
                )),
                cmd(C::Receipt(
                    msgr_schemas::pb::v1::ReceiptCommand::decode(&receipt[..]).expect("receipt"),
                )),
                cmd(C::Change(
                    msgr_schemas::pb::v1::ChangeCommand::decode(&changes[0][..]).expect("change"),
                )),
                cmd(C::Send(
                    msgr_schemas::pb::v1::SendCommand::decode(&reply[..]).expect("reply"),
                )),
            ],
        }
        .encode_to_vec()
    };
    let batch_subject = msgr_nats::subject::v2::in_batch(p);
    for i in 0..commands {
        if i % 5 == 4 {
            js.publish(batch_subject.clone(), rng.mutate(&batch).into())
                .await
                .expect("publish")
                .await
                .expect("stored in the stream");
            continue;
        }
        let seed = match i % 4 {
            0 => &send,
            1 => &receipt,
            2 => &changes[i / 4 % changes.len()],
            _ => &reply,
        };
        let payload = rng.mutate(seed);
        let subject = subjects[rng.below(subjects.len())].clone();
        js.publish(subject, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored in the stream");
    }
    // The partition still sequences: a real send right after is acked.
    a.send_text_to(&bob.user_id, "after", "after the storm")
        .await;
    let ack = a.expect("ack", Duration::from_secs(20)).await;
    assert_eq!(ack["client_msg_id"], "after");
    // The whole history, page by page (the storm stored some valid sends).
    let mut msgs: Vec<serde_json::Value> = Vec::new();
    loop {
        let (s, h) = app
            .get(
                &format!(
                    "/messages/{}/{}?after={}&limit=200",
                    bob.user_id,
                    alice.user_id,
                    msgs.len()
                ),
                &bob.token,
            )
            .await;
        assert_eq!(s, 200, "{h}");
        let page = h["messages"].as_array().expect("messages").clone();
        if page.is_empty() {
            break;
        }
        msgs.extend(page);
        assert!(msgs.len() < 10_000, "history does not end");
    }
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1, "dense history");
    }
    let texts: Vec<&str> = msgs.iter().filter_map(|m| m["text"].as_str()).collect();
    // The storm holds valid edits of message 1 by its sender ("edited").
    assert!(
        matches!(texts.first(), Some(&"before the storm" | &"edited"))
            && texts.contains(&"after the storm"),
        "{} messages: {texts:?}",
        msgs.len()
    );

    // Random cursors and page bounds.
    for _ in 0..150 {
        let junk: String = (0..rng.below(40))
            .map(|_| char::from(b"aZ09-_.~%:/+=!&?#"[rng.below(17)]))
            .collect();
        let enc: String = junk.bytes().map(|b| format!("%{b:02X}")).collect();
        for path in [
            format!("/chat/{}?cursor={enc}", bob.user_id),
            format!("/messages/{}/{}?before={enc}", bob.user_id, alice.user_id),
            format!(
                "/messages/{}/{}?after={}&limit={}",
                bob.user_id,
                alice.user_id,
                rng.next(),
                rng.next() % 1000
            ),
            format!(
                "/conversations/{conv}/changes?after={}&limit={}",
                rng.next(),
                rng.next() % 1000
            ),
        ] {
            let (s, body) = app.get(&path, &bob.token).await;
            assert!(s == 200 || s == 400, "{path}: {s} {body}");
            if s == 400 {
                assert_eq!(body["error"]["code"], "invalid_query", "{path}");
            }
        }
    }

    // Random multipart bodies.
    let good = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";
    for _ in 0..100 {
        let body = rng.mutate(good);
        let r = msgr_tests::http_stream(
            app.addr,
            "POST",
            "/media",
            &[
                ("authorization", format!("Bearer {}", bob.token)),
                ("content-type", "multipart/form-data; boundary=b".to_owned()),
            ],
            futures_util::stream::once(async move { bytes::Bytes::from(body) }),
        )
        .await;
        assert!(
            r.status == 201 || (400..500).contains(&r.status),
            "multipart: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    // And the edge and worker are still there.
    let (s, _) = app
        .get(&format!("/users/{}", bob.user_id), &bob.token)
        .await;
    assert_eq!(s, 200);
}

/// Every request/reply service, the typing subject and the route
/// announcements, fed random and mutated protobuf: each request gets an
/// answer (a refusal, not silence), nothing crashes, and afterwards the
/// worker still serves real traffic (a send is acked, typing arrives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_typing_and_route_announcements_are_answered_or_dropped() {
    use prost::Message as _;
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let (mut a, mut b) = (app.ws(&alice.token).await, app.ws(&bob.token).await);
    let nats = async_nats::connect(app.nats.url()).await.expect("nats");
    let per_subject: usize = std::env::var("MSGR_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut rng = Xorshift(0x5eed_f00d);
    // Plausible seeds: requests that name real users and a real conversation.
    let seeds: Vec<Vec<u8>> = vec![
        msgr_schemas::pb::v1::UsersRequest {
            user_ids: vec![alice.user_id.clone(), bob.user_id.clone()],
        }
        .encode_to_vec(),
        msgr_schemas::pb::v1::LoginRequest {
            username: alice.username.clone(),
            password: "wrong".to_owned(),
            user_agent: "fuzz".to_owned(),
        }
        .encode_to_vec(),
        msgr_schemas::pb::v1::SessionsRequest {
            caller_id: alice.user_id.clone(),
        }
        .encode_to_vec(),
    ];
    let mut answered = 0;
    for subject in msgr_nats::subject::rpc::ALL {
        for i in 0..per_subject {
            let payload = rng.mutate(&seeds[i % seeds.len()]);
            let reply =
                tokio::time::timeout(T, nats.request(*subject, payload.clone().into())).await;
            assert!(
                matches!(reply, Ok(Ok(_))),
                "{subject}: no answer to {payload:?}: {reply:?}"
            );
            answered += 1;
        }
    }
    let dm = msgr_core::id::direct_conversation_id(&alice.user_id, &bob.user_id);
    for _ in 0..per_subject * 8 {
        let typing = msgr_schemas::pb::v1::TypingEvent {
            conversation_id: dm.clone(),
            user_id: alice.user_id.clone(),
        }
        .encode_to_vec();
        nats.publish(msgr_nats::subject::typing(&dm), rng.mutate(&typing).into())
            .await
            .expect("publish typing");
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            nats.request(
                msgr_nats::subject::v2::route("edge-fuzz"),
                rng.mutate(b"\x0a\x09edge-fuzz\x10\x01").into(),
            ),
        )
        .await;
    }
    println!("{answered} hostile requests answered");
    // What the storm pushed to bob (typing that decoded) is behind us.
    b.drain(Duration::from_millis(500)).await;
    // The worker still serves: a send is acked and pushed, typing arrives.
    a.send_text_to(&bob.user_id, "after", "after the fuzz")
        .await;
    assert_eq!(a.expect("ack", T).await["client_msg_id"], "after");
    assert_eq!(
        b.expect("message", T).await["message"]["text"],
        "after the fuzz"
    );
    a.send_json(&serde_json::json!({"type":"typing","conversation_id": dm}))
        .await;
    loop {
        let f = b.expect("typing", T).await;
        if f["user_id"] == alice.user_id.as_str() {
            break;
        }
    }
}
