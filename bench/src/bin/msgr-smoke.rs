//! `msgr-smoke`: a small, bounded load that touches every path an operator's
//! dashboard shows — direct and group messages, receipts, a refused send,
//! history and chat-list reads, user look-ups, uploads — through the public
//! API of a running stack. The dashboard test runs it so that every panel has
//! data; it stops by itself after `--secs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use msgr_bench::client::{self, User};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(name = "msgr-smoke", about = "A small load over every API path")]
struct Cli {
    /// The edge (or load balancer).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Direct messages per second (each way).
    #[arg(long, default_value_t = 10)]
    rate: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let addr: SocketAddr = cli
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be http://IP:PORT")?;
    let run = format!("{:x}", std::process::id());
    let users = client::register_many(addr, &format!("smoke{run}"), 3, 3).await?;
    let (a, b, c) = (&users[0], &users[1], &users[2]);
    let (s, g) = client::http(
        addr,
        "POST",
        "/groups/create",
        Some(&a.token),
        Some(json!({"name": "smoke", "members": [b.user_id, c.user_id]})),
    )
    .await?;
    anyhow::ensure!(s == 201, "group create: {s} {g}");
    let gid = g["group_id"].as_str().context("group_id")?.to_owned();

    let wa = client::connect_ws(addr, &a.token, None).await?;
    let wb = client::connect_ws(addr, &b.token, None).await?;
    let wc = client::connect_ws(addr, &c.token, None).await?;
    // Read every socket in the background (acks, pushes, errors), counting.
    let (counts_tx, mut counts) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (mut ta, mut tb, mut tc) = (wa.tx, wb.tx, wc.tx);
    for mut rx in [wa.rx, wb.rx, wc.rx] {
        let tx = counts_tx.clone();
        tokio::spawn(async move {
            while let Some(v) = client::next_json(&mut rx).await {
                let _ = tx.send(v["type"].as_str().unwrap_or("?").to_owned());
            }
        });
    }

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1_000 / cli.rate.max(1)));
    let mut n = 0u64;
    let mut last_second = 0;
    while started.elapsed() < Duration::from_secs(cli.secs) {
        tick.tick().await;
        n += 1;
        send(&mut ta, &format!("a{n}"), "to_user", &b.user_id).await?;
        send(&mut tb, &format!("b{n}"), "to_user", &a.user_id).await?;
        let second = started.elapsed().as_secs();
        if second == last_second {
            continue;
        }
        last_second = second;
        // Once a second: the slower paths.
        send(&mut tc, &format!("c{n}"), "to_group", &gid).await?;
        // Refused: nobody may send to themself (the edge says so), nor to a
        // group they are not in (the sequencer does).
        send(&mut ta, &format!("self{n}"), "to_user", &a.user_id).await?;
        send(
            &mut ta,
            &format!("stranger{n}"),
            "to_group",
            "g00000000000000000000000000000000",
        )
        .await?;
        let conv = direct_id(&a.user_id, &b.user_id);
        client::send_text(
            &mut tb,
            &json!({"type": "receipt", "conversation_id": conv, "status": "read", "up_to_seq": n})
                .to_string(),
        )
        .await?;
        read(
            addr,
            b,
            &format!("/messages/{}/{}?limit=50", b.user_id, a.user_id),
        )
        .await?;
        read(addr, a, &format!("/chat/{}", a.user_id)).await?;
        read(addr, c, &format!("/groups/{gid}?limit=20")).await?;
        read(addr, a, &format!("/users?query=smoke{run}")).await?;
        // Refused by a service (an RPC error, as a stranger would cause).
        let (s, _) = client::http(
            addr,
            "GET",
            "/users/u00000000000000000000000000000000",
            Some(&a.token),
            None,
        )
        .await?;
        anyhow::ensure!(s == 404, "an unknown user: {s}");
        if second.is_multiple_of(3) {
            let (s, m) = upload(addr, a, format!("smoke upload {n}").into_bytes()).await?;
            anyhow::ensure!(s == 201, "upload: {s} {m}");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(counts_tx);
    let mut seen = std::collections::BTreeMap::<String, u64>::new();
    while let Ok(t) = counts.try_recv() {
        *seen.entry(t).or_default() += 1;
    }
    println!(
        "msgr-smoke: {n} ticks in {:?}; frames {seen:?}",
        started.elapsed()
    );
    anyhow::ensure!(seen.get("ack").copied().unwrap_or(0) > 0, "no acks at all");
    Ok(())
}

fn direct_id(a: &str, b: &str) -> String {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    format!("d_{x}_{y}")
}

async fn send(tx: &mut client::Writer, cmid: &str, kind: &str, to: &str) -> anyhow::Result<()> {
    client::send_text(
        tx,
        &json!({"type": "send", "client_msg_id": cmid, kind: to, "text": format!("smoke {cmid}")})
            .to_string(),
    )
    .await
}

async fn read(addr: SocketAddr, u: &User, path: &str) -> anyhow::Result<Value> {
    let (s, v) = client::http(addr, "GET", path, Some(&u.token), None).await?;
    anyhow::ensure!(s == 200, "GET {path}: {s} {v}");
    Ok(v)
}

async fn upload(addr: SocketAddr, u: &User, bytes: Vec<u8>) -> anyhow::Result<(u16, Value)> {
    client::http_raw(addr, "POST", "/media", Some(&u.token), "text/plain", bytes).await
}
