//! The floor under W1/W2: what one direct message costs the bus alone.
//!
//! Not a product workload (`msgr-bench` speaks only the public API). This
//! tool plays the edge and the worker with nothing else to do, against the
//! stream and consumers the worker creates (`msgr_nats::stream::ensure_all`),
//! and makes the NATS operations one stored direct message makes:
//! - "edge": a JetStream publish with `Nats-Msg-Id`, its PubAck awaited off
//!   the send path;
//! - "worker": a pull from the partition's consumer, the integrator event,
//!   the two inbox publishes (recipient and sender), then the ack;
//! - "edge": both inbox copies received through a wildcard subscription.
//!
//! With `--path v2` it makes the operations of the batched path instead:
//! the "edge" keeps one batch per partition awaiting its PubAck and sends
//! what gathered meanwhile as the next (`msgr.v2.in.<p>.batch`); the
//! "worker" publishes one integrator event and one delivery to the edge's
//! subject per pulled batch, then acks; the "edge" reads its one subject.
//!
//! No store, no WebSocket, no JSON: the latency and the CPU it reports are
//! the bus's own, a lower bound for any edge + worker on the same machine.
//! Run it against a nats-server of its own (`just bench-floor`); it refuses a
//! server where the command stream already exists, so it never takes a real
//! system's commands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use clap::Parser;
use futures_util::{FutureExt, StreamExt};
use msgr_bench::stats::{self, summarize, CpuMeter};
use msgr_nats::{stream as streams, subject};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "msgr-bus-floor",
    about = "NATS-only cost of the message path (no edge, no worker, no store)"
)]
struct Cli {
    /// A nats-server with JetStream that no msgr worker uses.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// The nats-server's pid, to report its CPU use.
    #[arg(long)]
    nats_pid: Option<u32>,
    /// Offered rates (msg/s), one step each; stops after the first step that
    /// is not held (p99 over 100 ms, a loss, or under 95 % of the rate sent).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000])]
    rates: Vec<u64>,
    /// Seconds per step.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Conversation partitions (as the worker's `partitions`); default 16
    /// for `v1`, 4 for `v2` (each path's release default).
    #[arg(long)]
    partitions: Option<u32>,
    /// Which message path: `v2` (batches per partition, a delivery per
    /// edge: the current one) or `v1` (a publish per command, a delivery per
    /// recipient: releases before v2).
    #[arg(long, default_value = "v2")]
    path: String,
    /// Write the steps as JSON here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Conversations the load is spread over (W1/W2 use 100 pairs).
const CONVERSATIONS: u64 = 100;
/// Payload size, about that of a short text's `SendCommand`.
const PAYLOAD: usize = 120;

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn conv(i: u64) -> String {
    format!("floor{i}")
}

/// The payload: send time, sequence number, conversation index, padding.
fn payload(sent_us: u64, n: u64, c: u64) -> Bytes {
    let mut p = Vec::with_capacity(PAYLOAD);
    p.extend_from_slice(&sent_us.to_le_bytes());
    p.extend_from_slice(&n.to_le_bytes());
    p.extend_from_slice(&c.to_le_bytes());
    p.resize(PAYLOAD, b'x');
    Bytes::from(p)
}

fn field(p: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        p.get(i * 8..i * 8 + 8)?.try_into().ok()?,
    ))
}

/// What the "edge" heard back.
#[derive(Default)]
struct Heard {
    /// Recipient copies: latency from publish, in microseconds.
    latencies: Vec<u64>,
    /// Sender copies (the ack path).
    sender_copies: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    now_us();
    let v2 = match cli.path.as_str() {
        "v1" => false,
        "v2" => true,
        other => anyhow::bail!("--path must be v1 or v2, got {other}"),
    };
    let partitions = cli.partitions.unwrap_or(if v2 { 4 } else { 16 });
    cli.partitions = Some(partitions);
    let edge = async_nats::ConnectOptions::new()
        .name("floor-edge")
        .subscription_capacity(65_536)
        .connect(&cli.nats)
        .await
        .with_context(|| format!("connecting to {}", cli.nats))?;
    let worker = async_nats::ConnectOptions::new()
        .name("floor-worker")
        .connect(&cli.nats)
        .await?;
    let wjs = jetstream::new(worker.clone());
    // Pulling from a running system's consumers would take its users' messages.
    if wjs.get_stream(streams::IN_STREAM).await.is_ok() {
        anyhow::bail!(
            "{} already exists on {}: msgr-bus-floor needs a nats-server of its own \
             (`just bench-floor` starts one)",
            streams::IN_STREAM,
            cli.nats
        );
    }
    streams::ensure_all(&wjs, partitions, Duration::from_secs(5), 256, 1)
        .await
        .context("creating the command stream (use a nats-server no worker uses)")?;

    // Worker side: one task per partition, as the sequencer runs them.
    for p in 0..partitions {
        let consumer: jetstream::consumer::PullConsumer = wjs
            .get_consumer_from_stream(streams::sequencer_consumer(p, 0), streams::IN_STREAM)
            .await
            .map_err(|e| anyhow::anyhow!("consumer SEQ_{p}: {e}"))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(256)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pulling SEQ_{p}: {e}"))?;
        let nats = worker.clone();
        tokio::spawn(async move {
            while let Some(Ok(first)) = messages.next().await {
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match messages.next().now_or_never() {
                        Some(Some(Ok(m))) => batch.push(m),
                        _ => break,
                    }
                }
                if v2 {
                    // One event and one edge delivery for the whole pull.
                    let mut all = Vec::new();
                    let mut p = 0;
                    for m in &batch {
                        all.extend_from_slice(&m.payload);
                        p = field(&m.payload, 2).unwrap_or(0) % u64::from(partitions);
                    }
                    let all = Bytes::from(all);
                    let _ = nats
                        .publish(subject::v2::evt_messages(p as u32), all.clone())
                        .await;
                    let _ = nats.publish(subject::v2::deliver_edge("floor"), all).await;
                    for m in &batch {
                        let _ = m.ack().await;
                    }
                    continue;
                }
                for m in &batch {
                    let c = field(&m.payload, 2).unwrap_or(0);
                    let body = m.payload.clone();
                    let _ = nats
                        .publish(subject::evt_message(&conv(c)), body.clone())
                        .await;
                    for user in [format!("r{c}"), format!("s{c}")] {
                        let _ = nats
                            .publish(subject::deliver_user(&user), body.clone())
                            .await;
                    }
                }
                for m in &batch {
                    let _ = m.ack().await;
                }
            }
        });
    }

    // Edge side: every inbox through one wildcard subscription (v1), or
    // the edge's one subject (v2: each record is a recipient's copy, and
    // stands for the sender's too).
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut inbox = edge
        .subscribe(if v2 {
            subject::v2::deliver_edge("floor")
        } else {
            subject::DELIVER_USER_ALL.to_owned()
        })
        .await?;
    edge.flush().await?;
    if v2 {
        let heard = Arc::clone(&heard);
        tokio::spawn(async move {
            while let Some(m) = inbox.next().await {
                let at = now_us();
                let mut h = heard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for record in m.payload.chunks(PAYLOAD) {
                    if let Some(sent) = field(record, 0) {
                        h.latencies.push(at.saturating_sub(sent));
                        h.sender_copies += 1;
                    }
                }
            }
        });
    } else {
        let heard = Arc::clone(&heard);
        tokio::spawn(async move {
            while let Some(m) = inbox.next().await {
                let at = now_us();
                let recipient =
                    subject::deliver_user_of(&m.subject).is_some_and(|u| u.starts_with('r'));
                let mut h = heard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if recipient {
                    if let Some(sent) = field(&m.payload, 0) {
                        h.latencies.push(at.saturating_sub(sent));
                    }
                } else {
                    h.sender_copies += 1;
                }
            }
        });
    }

    let ejs = jetstream::new(edge.clone());
    let unacked = Arc::new(AtomicU64::new(0));
    let mut procs = Vec::new();
    if let Some(pid) = cli.nats_pid {
        procs.push(("nats".to_owned(), pid));
    }
    procs.push(("floor tool".to_owned(), std::process::id()));
    let mut steps = Vec::new();
    let mut n = 0u64;
    println!(
        "{:>8} {:>8} {:>6} {:>8} {:>8} {:>8}  cpu (cores)",
        "msg/s", "sent", "lost", "p50 ms", "p99 ms", "max ms"
    );
    for &rate in &cli.rates {
        *heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Heard::default();
        let meter = CpuMeter::start(&procs);
        let started = Instant::now();
        let total = rate * cli.secs;
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        if v2 {
            sent = send_batched(&ejs, &unacked, rate, cli.secs, partitions, &mut n).await?;
        }
        while !v2 && sent < total && started.elapsed() < Duration::from_secs(cli.secs + 5) {
            tick.tick().await;
            let due = (started.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
            while sent < due {
                let c = n % CONVERSATIONS;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("floor:{n}").as_str());
                let ack = ejs
                    .publish_with_headers(
                        subject::in_send((c % u64::from(partitions)) as u32, &conv(c)),
                        headers,
                        payload(now_us(), n, c),
                    )
                    .await?;
                let unacked = Arc::clone(&unacked);
                tokio::spawn(async move {
                    if ack.await.is_err() {
                        unacked.fetch_add(1, Ordering::Relaxed);
                    }
                });
                n += 1;
                sent += 1;
            }
        }
        let send_secs = started.elapsed().as_secs_f64();
        // Stragglers: up to 5 s for every recipient copy.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let got = heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .latencies
                .len() as u64;
            if got >= sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let usage = meter.stop();
        let h = std::mem::take(
            &mut *heard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let lost = sent.saturating_sub(h.latencies.len() as u64);
        let e2e = summarize(h.latencies);
        let held =
            e2e.p99_ms <= 100.0 && lost == 0 && sent as f64 >= 0.95 * (rate * cli.secs) as f64;
        let cpu: Vec<String> = usage
            .iter()
            .map(|u| format!("{} {:.2}", u.name, u.cpu_cores))
            .collect();
        println!(
            "{rate:>8} {sent:>8} {lost:>6} {:>8.2} {:>8.2} {:>8.2}  {}{}",
            e2e.p50_ms,
            e2e.p99_ms,
            e2e.max_ms,
            cpu.join(", "),
            if held { "" } else { "  (not held)" }
        );
        steps.push(json!({
            "offered_per_s": rate,
            "sent": sent,
            "send_secs": send_secs,
            "lost": lost,
            "sender_copies": h.sender_copies,
            "e2e": e2e,
            "processes": usage,
            "held": held,
        }));
        if !held {
            break;
        }
    }
    let failed_acks = unacked.load(Ordering::Relaxed);
    if failed_acks > 0 {
        println!("{failed_acks} publishes were not acknowledged");
    }
    if let Some(out) = &cli.out {
        let doc = json!({
            "machine": stats::machine(),
            "partitions": partitions,
            "path": cli.path,
            "unacked_publishes": failed_acks,
            "steps": steps,
        });
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// The `v2` "edge": at `rate` for `secs`, commands queued per partition and
/// published as one batch per partition whenever its previous batch has its
/// PubAck (as `msgr-edge` does). Returns how many were sent.
async fn send_batched(
    js: &jetstream::Context,
    unacked: &Arc<AtomicU64>,
    rate: u64,
    secs: u64,
    partitions: u32,
    n: &mut u64,
) -> anyhow::Result<u64> {
    let parts = partitions as usize;
    let mut queued: Vec<Vec<u8>> = vec![Vec::new(); parts];
    let mut in_flight = vec![false; parts];
    // At most one batch per partition is in flight: so many completions.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<usize>(parts.max(1));
    let started = Instant::now();
    let total = rate * secs;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = 0usize;
    while (sent < total || pending > 0) && started.elapsed() < Duration::from_secs(secs + 5) {
        tokio::select! {
            _ = tick.tick() => {
                let due = (started.elapsed().as_micros() as u64 * rate / 1_000_000).min(total);
                while sent < due {
                    let c = *n % CONVERSATIONS;
                    let p = (c % u64::from(partitions)) as usize;
                    queued[p].extend_from_slice(&payload(now_us(), *n, c));
                    *n += 1;
                    sent += 1;
                }
            }
            Some(p) = done_rx.recv() => {
                in_flight[p] = false;
                pending -= 1;
            }
        }
        for p in 0..parts {
            if in_flight[p] || queued[p].is_empty() {
                continue;
            }
            let body = Bytes::from(std::mem::take(&mut queued[p]));
            let ack = js.publish(subject::v2::in_batch(p as u32), body).await?;
            in_flight[p] = true;
            pending += 1;
            let (done, unacked) = (done_tx.clone(), Arc::clone(unacked));
            tokio::spawn(async move {
                if ack.await.is_err() {
                    unacked.fetch_add(1, Ordering::Relaxed);
                }
                let _ = done.send(p).await;
            });
        }
    }
    Ok(sent)
}
