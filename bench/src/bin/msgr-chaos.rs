//! `msgr-chaos`: a fault suite with an independent checker, against a
//! running `just cluster` shape (`just chaos` starts one of its own).
//!
//! While a steady, bounded load runs through the load balancer — direct
//! chats and a group, clients that keep an outbox and resend every unacked
//! message with the same `client_msg_id` after any disconnect, as the web
//! client does — a seeded nemesis applies each fault kind at least once:
//! `kill -9` of a worker, an edge, one NATS node; one NATS node paused
//! (SIGSTOP), and one cut off the network while it runs (every packet to and
//! from its sockets dropped, then let through again); SIGSTOP of a worker for
//! longer than its lease, then SIGCONT; a crash and restart of PostgreSQL;
//! `kill -9` of every process at once. The cluster's supervisors restart
//! what was killed. Afterwards the load stops, the outboxes drain, and the
//! checker (`msgr_bench::chaos`) judges the run from what clients can read:
//! their acks and pushes, and every member's REST history.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use msgr_bench::chaos::{self, Ack, Observed, Seen, Sent};
use msgr_bench::client::{self, User};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "msgr-chaos", about = "Fault suite with an independent checker")]
struct Cli {
    /// The load balancer (`just cluster` serves clients on 127.0.0.1:8090).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    url: String,
    /// The cluster's data directory (pid files under `pids/`).
    #[arg(long, default_value = "data/cluster")]
    cluster_dir: PathBuf,
    /// The cgroup (v2) holding the NATS nodes' `nats-<n>` cgroups, as nft
    /// names it: relative to /sys/fs/cgroup, one level below the cgroup v2
    /// root (`just chaos` sets it; `cut-nats` needs it, root and nft).
    #[arg(long)]
    nats_cgroup: Option<String>,
    /// Seeds the nemesis (order of faults, their targets and gaps).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many times each fault kind is applied.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Faults to apply (default: all kinds).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Mean seconds between faults (each gap is 0.75-1.5 × this).
    #[arg(long, default_value_t = 8.0)]
    gap_secs: f64,
    /// Direct chats (two clients each).
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    /// Members of the one group (each a client).
    #[arg(long, default_value_t = 4)]
    group: usize,
    /// Messages per second per client.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// The workers' lease TTL: a paused worker stays paused 2 s longer.
    #[arg(long, default_value_t = 2_000)]
    lease_ttl_ms: u64,
    /// How long unacked messages may take to drain after the load stops.
    #[arg(long, default_value_t = 90)]
    drain_secs: u64,
    /// Write the report here (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    KillWorker,
    KillEdge,
    KillNats,
    /// SIGSTOP one NATS node for `PAUSE_NATS`, then SIGCONT: to its peers and
    /// clients it answers nothing (a hung node), then it rejoins with stale
    /// state.
    PauseNats,
    /// Drops every packet to and from one NATS node's sockets for `CUT_NATS`
    /// (nft, by the node's cgroup), then lets them through: the node runs on
    /// alone, its own election timers included, then heals into the cluster.
    CutNats,
    PauseWorker,
    RestartPostgres,
    KillAll,
}

/// Long enough for the other nodes to elect new leaders and for the paused
/// node's clients to give up on it (two unanswered 2 s pings).
const PAUSE_NATS: Duration = Duration::from_secs(15);

/// Longer than a pause: the cut-off node has time to call elections of its
/// own (it cannot win them) before it heals.
const CUT_NATS: Duration = Duration::from_secs(20);

/// The nft table `cut-nats` adds and deletes.
const NFT_TABLE: &str = "msgr_chaos_cut";

/// splitmix64: a seeded sequence, so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One client: a user, the conversation it writes to, and what it saw.
struct Client {
    name: String,
    user: User,
    conversation: String,
    /// `to_user` or `to_group` and the id.
    target: (&'static str, String),
}

#[derive(Default)]
struct Log {
    sent: Vec<(String, u64, Instant)>,
    acks: Vec<(String, u64, String, Instant)>,
    pushes: Vec<(String, Seen)>,
    reconnects: Vec<Instant>,
    errors: Vec<(Instant, String)>,
    /// cmids the server refused at least once.
    refused: std::collections::HashSet<String>,
}

#[derive(Debug, Serialize)]
struct FaultReport {
    kind: FaultKind,
    target: String,
    at_s: f64,
    /// Per conversation: from the fault to the first ack after it.
    recovery_ms_max: u64,
    recovery_ms_median: u64,
    /// From the fault until the next one (at most 20 s), over all clients:
    /// the next fault's effects are its own.
    window_ms: u64,
    reconnects: usize,
    errors: BTreeMap<String, usize>,
    /// From the fault to the last error or reconnect in its window: how long
    /// clients saw anything but late acks (0 when they saw nothing).
    disturbed_ms: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    seed: u64,
    clients: usize,
    rate_per_client: f64,
    load_secs: f64,
    verdict: chaos::Verdict,
    /// Longest time with no ack anywhere while the load ran.
    longest_stall_ms: u64,
    faults: Vec<FaultReport>,
    passed: bool,
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("{url}: expected http://IP:PORT"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let addr = addr_of(&cli.url)?;
    let faults = if cli.faults.is_empty() {
        vec![
            FaultKind::KillWorker,
            FaultKind::KillEdge,
            FaultKind::KillNats,
            FaultKind::PauseNats,
            FaultKind::CutNats,
            FaultKind::PauseWorker,
            FaultKind::RestartPostgres,
            FaultKind::KillAll,
        ]
    } else {
        cli.faults.clone()
    };
    let mut rng = Rng(cli.seed);
    // The schedule: every kind `rounds` times in a seeded order; killing
    // everything goes last in each round (it takes longest to recover from).
    let mut schedule = Vec::new();
    for _ in 0..cli.rounds.max(1) {
        let mut round: Vec<FaultKind> = faults
            .iter()
            .copied()
            .filter(|f| *f != FaultKind::KillAll)
            .collect();
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i as u64 + 1) as usize);
        }
        if faults.contains(&FaultKind::KillAll) {
            round.push(FaultKind::KillAll);
        }
        schedule.extend(round);
    }
    if faults.contains(&FaultKind::CutNats) {
        // Fail before the load, not at the fault: a cut that cannot be made
        // must not pass as a run that had one.
        let cgroup = cli.nats_cgroup.as_deref().context(
            "cut-nats needs --nats-cgroup (`just chaos` sets it), or leave it out with --faults",
        )?;
        for n in 1..=3 {
            let dir = Path::new("/sys/fs/cgroup").join(format!("{cgroup}/nats-{n}"));
            anyhow::ensure!(dir.is_dir(), "cut-nats: no cgroup {}", dir.display());
        }
        nft(&["list", "tables"], None)?;
        // A cut left by an interrupted run would isolate a node from the start.
        let _ = heal_quietly();
    }

    // People: direct pairs and one group.
    let run = format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ u128::from(cli.seed) ^ now_nanos()
    );
    let run = &run[run.len().saturating_sub(6)..];
    let n_users = cli.pairs * 2 + cli.group;
    let users = client::register_many(addr, &format!("chaos{run}"), n_users, 4)
        .await
        .context("registering the clients")?;
    let mut clients = Vec::new();
    for i in 0..cli.pairs {
        let (a, b) = (&users[2 * i], &users[2 * i + 1]);
        let conv = direct_id(&a.user_id, &b.user_id);
        for (me, peer, name) in [(a, b, format!("p{i}a")), (b, a, format!("p{i}b"))] {
            clients.push(Client {
                name,
                user: me.clone(),
                conversation: conv.clone(),
                target: ("to_user", peer.user_id.clone()),
            });
        }
    }
    if cli.group >= 2 {
        let members: Vec<&User> = users[cli.pairs * 2..].iter().collect();
        let (s, g) = client::http(
            addr,
            "POST",
            "/groups/create",
            Some(&members[0].token),
            Some(json!({"name": "chaos", "members": members[1..].iter().map(|u| u.user_id.clone()).collect::<Vec<_>>()})),
        )
        .await?;
        anyhow::ensure!(s == 201, "group create: {s} {g}");
        let gid = g["group_id"].as_str().context("group_id")?.to_owned();
        for (i, u) in members.iter().enumerate() {
            clients.push(Client {
                name: format!("g{i}"),
                user: (*u).clone(),
                conversation: gid.clone(),
                target: ("to_group", gid.clone()),
            });
        }
    }
    let clients = Arc::new(clients);
    println!(
        "chaos: {} clients at {}/s each through {addr}, seed {}, schedule {:?}",
        clients.len(),
        cli.rate,
        cli.seed,
        schedule
    );

    let t0 = Instant::now();
    let sending = CancellationToken::new();
    let finished = CancellationToken::new();
    let logs: Vec<Arc<Mutex<Log>>> = (0..clients.len()).map(|_| Arc::default()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, log) in logs.iter().enumerate() {
        tasks.spawn(run_client(
            addr,
            Arc::clone(&clients),
            i,
            cli.rate,
            sending.clone(),
            finished.clone(),
            Arc::clone(log),
        ));
    }

    // The nemesis.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut applied = Vec::new();
    for kind in &schedule {
        let gap = cli.gap_secs * (0.75 + 0.75 * rng.unit());
        // Recovery counts from the start of the fault (a pause's too).
        let at = Instant::now();
        let target = apply(*kind, &cli, &mut rng).await?;
        println!("{:>6.1} s  {kind:?} {target}", (at - t0).as_secs_f64());
        applied.push((*kind, target, at));
        let settle = if *kind == FaultKind::KillAll {
            gap.max(15.0)
        } else {
            gap
        };
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    sending.cancel();
    let load_end = Instant::now();
    println!(
        "{:>6.1} s  load stopped; draining",
        (load_end - t0).as_secs_f64()
    );
    let drain_deadline = Instant::now() + Duration::from_secs(cli.drain_secs);
    while Instant::now() < drain_deadline && !all_acked(&logs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    finished.cancel();
    while tasks.join_next().await.is_some() {}

    // What clients can read: their records, and every member's history.
    let mut observed = Observed::default();
    for (c, log) in clients.iter().zip(&logs) {
        let log = log.lock().expect("log");
        for (cmid, order, _) in &log.sent {
            observed.sent.push(Sent {
                cmid: cmid.clone(),
                conversation: c.conversation.clone(),
                sender: c.user.user_id.clone(),
                order: *order,
                refused: log.refused.contains(cmid),
            });
        }
        for (cmid, seq, mid, _) in &log.acks {
            observed.acks.insert(
                cmid.clone(),
                Ack {
                    seq: *seq,
                    message_id: mid.clone(),
                },
            );
        }
        for (conv, seen) in &log.pushes {
            observed
                .pushes
                .entry(conv.clone())
                .or_default()
                .push(seen.clone());
        }
    }
    for c in clients.iter() {
        let h = history(addr, c).await?;
        observed
            .histories
            .entry(c.conversation.clone())
            .or_default()
            .push((c.user.user_id.clone(), h));
    }
    let verdict = chaos::check(&observed);

    // Recovery per fault, the longest stall, what clients saw.
    let mut acks_by_conv: HashMap<&str, Vec<Instant>> = HashMap::new();
    let mut all_acks = Vec::new();
    let (mut reconnects, mut errors) = (Vec::new(), Vec::new());
    for (c, log) in clients.iter().zip(&logs) {
        let log = log.lock().expect("log");
        for (_, _, _, t) in &log.acks {
            acks_by_conv.entry(&c.conversation).or_default().push(*t);
            all_acks.push(*t);
        }
        reconnects.extend(log.reconnects.iter().copied());
        errors.extend(log.errors.iter().cloned());
    }
    all_acks.sort_unstable();
    let longest_stall = all_acks
        .windows(2)
        .filter(|w| w[1] <= load_end)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let faults: Vec<FaultReport> = applied
        .iter()
        .enumerate()
        .map(|(i, (kind, target, at))| {
            let mut rec: Vec<u64> = acks_by_conv
                .values()
                .filter_map(|ts| ts.iter().filter(|t| *t > at).min())
                .map(|t| (*t - *at).as_millis() as u64)
                .collect();
            rec.sort_unstable();
            let mut end = *at + Duration::from_secs(20);
            if let Some((_, _, next)) = applied.get(i + 1) {
                end = end.min(*next);
            }
            let window = |t: &Instant| *t >= *at && *t < end;
            let mut errs = BTreeMap::new();
            let mut last_seen = *at;
            for (t, code) in &errors {
                if window(t) {
                    *errs.entry(code.clone()).or_insert(0) += 1;
                    last_seen = last_seen.max(*t);
                }
            }
            for t in reconnects.iter().filter(|t| window(t)) {
                last_seen = last_seen.max(*t);
            }
            FaultReport {
                kind: *kind,
                target: target.clone(),
                at_s: (*at - t0).as_secs_f64(),
                recovery_ms_max: rec.last().copied().unwrap_or(u64::MAX),
                recovery_ms_median: rec.get(rec.len() / 2).copied().unwrap_or(u64::MAX),
                window_ms: (end - *at).as_millis() as u64,
                reconnects: reconnects.iter().filter(|t| window(t)).count(),
                errors: errs,
                disturbed_ms: (last_seen - *at).as_millis() as u64,
            }
        })
        .collect();
    let report = Report {
        seed: cli.seed,
        clients: clients.len(),
        rate_per_client: cli.rate,
        load_secs: (load_end - t0).as_secs_f64(),
        passed: verdict.passed(),
        verdict,
        longest_stall_ms: longest_stall.as_millis() as u64,
        faults,
    };
    print_report(&report);
    if let Some(out) = &cli.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
        println!("report: {}", out.display());
    }
    if !report.passed {
        anyhow::bail!(
            "the checker found violations: {:?}",
            report.verdict.failures()
        );
    }
    Ok(())
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn direct_id(a: &str, b: &str) -> String {
    let (x, y) = if a < b { (a, b) } else { (b, a) };
    format!("d_{x}_{y}")
}

fn all_acked(logs: &[Arc<Mutex<Log>>]) -> bool {
    logs.iter().all(|l| {
        let l = l.lock().expect("log");
        l.acks.len() >= l.sent.len()
    })
}

fn print_report(r: &Report) {
    let v = &r.verdict;
    println!("\n| count | value |\n|---|---|");
    for (k, n) in [
        ("sent", v.sent),
        ("acked", v.acked),
        ("lost (acked, missing)", v.lost),
        ("duplicated", v.duplicated),
        ("acked-seq mismatches", v.ack_mismatch),
        ("gaps in dense seqs", v.gaps),
        ("members whose histories diverge", v.divergent_members),
        ("never acked after the drain", v.never_acked),
        ("one sender's accepted messages out of order", v.reordered),
        ("pushes that disagree with history", v.push_mismatch),
    ] {
        println!("| {k} | {n} |");
    }
    println!(
        "| longest stall (no ack anywhere) | {} ms |",
        r.longest_stall_ms
    );
    println!("\n| at | fault | first ack after it, per conversation (median / max) | reconnects | errors | errors or reconnects until | window |\n|---|---|---|---|---|---|---|");
    for f in &r.faults {
        println!(
            "| {:.0} s | {:?} {} | {} / {} ms | {} | {:?} | {} ms | {} ms |",
            f.at_s,
            f.kind,
            f.target,
            f.recovery_ms_median,
            f.recovery_ms_max,
            f.reconnects,
            f.errors,
            f.disturbed_ms,
            f.window_ms
        );
    }
    println!("\n{}", if r.passed { "PASSED" } else { "FAILED" });
}

/// One client's life: connect through the balancer, send at `rate` until
/// `sending` ends, resend what is unacked after every reconnect (and after
/// 10 s without an answer), record everything, until `finished`.
async fn run_client(
    addr: SocketAddr,
    clients: Arc<Vec<Client>>,
    me: usize,
    rate: f64,
    sending: CancellationToken,
    finished: CancellationToken,
    log: Arc<Mutex<Log>>,
) {
    let c = &clients[me];
    // order → (cmid, last sent)
    let mut outbox: BTreeMap<u64, (String, Instant)> = BTreeMap::new();
    let mut next_order = 0u64;
    let mut connected_before = false;
    let mut backoff = Duration::from_millis(100);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Spread the clients' sends over the period.
    tokio::time::sleep(period.mul_f64(me as f64 / clients.len() as f64)).await;
    'connect: while !finished.is_cancelled() {
        let ws = tokio::select! {
            () = finished.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(5), client::connect_ws(addr, &c.user.token, None)) => r,
        };
        let Ok(Ok(ws)) = ws else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if connected_before {
            log.lock().expect("log").reconnects.push(Instant::now());
        }
        connected_before = true;
        let client::Ws { mut rx, mut tx } = ws;
        let (frames_tx, mut frames) = tokio::sync::mpsc::channel::<Value>(1024);
        let reader = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            while let Some(v) = client::next_json(&mut rx).await {
                if frames_tx.send(v).await.is_err() {
                    break;
                }
            }
        }));
        // Resend everything unacked, in the order it was first sent.
        for (cmid, last) in outbox.values_mut() {
            if client::send_text(&mut tx, &send_frame(c, cmid))
                .await
                .is_err()
            {
                continue 'connect;
            }
            *last = Instant::now();
        }
        let mut last_frame = Instant::now();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = finished.cancelled() => break 'connect,
                _ = tick.tick(), if !sending.is_cancelled() => {
                    let order = next_order;
                    next_order += 1;
                    let cmid = format!("{}-{}-{order:06}", c.name, &c.user.user_id[1..7]);
                    log.lock().expect("log").sent.push((cmid.clone(), order, Instant::now()));
                    outbox.insert(order, (cmid.clone(), Instant::now()));
                    if client::send_text(&mut tx, &send_frame(c, &cmid)).await.is_err() {
                        break;
                    }
                }
                f = frames.recv() => {
                    let Some(f) = f else { break };
                    last_frame = Instant::now();
                    let now = Instant::now();
                    match f["type"].as_str() {
                        Some("ack") => {
                            let cmid = f["client_msg_id"].as_str().unwrap_or_default().to_owned();
                            if let Some((&order, _)) = outbox.iter().find(|(_, (c, _))| *c == cmid) {
                                outbox.remove(&order);
                                log.lock().expect("log").acks.push((
                                    cmid,
                                    f["seq"].as_u64().unwrap_or(0),
                                    f["message_id"].as_str().unwrap_or_default().to_owned(),
                                    now,
                                ));
                            }
                        }
                        Some("message") => {
                            let m = &f["message"];
                            log.lock().expect("log").pushes.push((
                                m["conversation_id"].as_str().unwrap_or_default().to_owned(),
                                Seen {
                                    seq: m["seq"].as_u64().unwrap_or(0),
                                    message_id: m["message_id"].as_str().unwrap_or_default().to_owned(),
                                    cmid: m["client_msg_id"].as_str().unwrap_or_default().to_owned(),
                                    sender: m["sender_id"].as_str().unwrap_or_default().to_owned(),
                                },
                            ));
                        }
                        Some("error") => {
                            let code = f["code"].as_str().unwrap_or("?").to_owned();
                            let mut l = log.lock().expect("log");
                            l.errors.push((now, code.clone()));
                            if let Some(cmid) = f["client_msg_id"].as_str() {
                                l.refused.insert(cmid.to_owned());
                            }
                            drop(l);
                            // Resend soon, with the same id.
                            if let Some(cmid) = f["client_msg_id"].as_str() {
                                if let Some((_, last)) = outbox.values_mut().find(|(c, _)| c == cmid) {
                                    *last = now - Duration::from_millis(9_500);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                _ = check.tick() => {
                    let now = Instant::now();
                    let due: Vec<String> = outbox
                        .values()
                        .filter(|(_, last)| now - *last > Duration::from_secs(10))
                        .map(|(c, _)| c.clone())
                        .collect();
                    for cmid in due {
                        if client::send_text(&mut tx, &send_frame(c, &cmid)).await.is_err() {
                            continue 'connect;
                        }
                        if let Some((_, last)) = outbox.values_mut().find(|(c, _)| *c == cmid) {
                            *last = now;
                        }
                    }
                    // A silent socket (a peer that died without closing) is
                    // found by a ping that gets no pong.
                    if now - last_frame > Duration::from_secs(20) {
                        break;
                    }
                    if now - last_frame > Duration::from_secs(8)
                        && client::send_text(&mut tx, r#"{"type":"ping"}"#).await.is_err()
                    {
                        break;
                    }
                }
            }
        }
        drop(reader);
    }
}

fn send_frame(c: &Client, cmid: &str) -> String {
    json!({"type": "send", "client_msg_id": cmid, c.target.0: c.target.1, "text": format!("chaos {cmid}")})
        .to_string()
}

/// A member's whole history of their conversation, through the balancer
/// (retried while it recovers).
async fn history(addr: SocketAddr, c: &Client) -> anyhow::Result<Vec<Seen>> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let path = if c.target.0 == "to_user" {
            format!(
                "/messages/{}/{}?after={after}&limit=200",
                c.user.user_id, c.target.1
            )
        } else {
            format!("/groups/{}?after={after}&limit=200", c.target.1)
        };
        let mut tries = 0;
        let page = loop {
            match client::http(addr, "GET", &path, Some(&c.user.token), None).await {
                Ok((200, v)) => break v,
                other => {
                    tries += 1;
                    anyhow::ensure!(tries < 60, "history {path}: {other:?}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        let Some(last) = msgs.last() else {
            return Ok(out);
        };
        after = last["seq"].as_u64().context("seq")?;
        out.extend(msgs.iter().map(|m| Seen {
            seq: m["seq"].as_u64().unwrap_or(0),
            message_id: m["message_id"].as_str().unwrap_or_default().to_owned(),
            cmid: m["client_msg_id"].as_str().unwrap_or_default().to_owned(),
            sender: m["sender_id"].as_str().unwrap_or_default().to_owned(),
        }));
        if !page["has_more"].as_bool().unwrap_or(false) {
            return Ok(out);
        }
    }
}

/// The pid in `<cluster>/pids/<name>.pid`, waiting a little for a process
/// being restarted by its supervisor.
async fn pid_of(dir: &Path, name: &str) -> anyhow::Result<u32> {
    for _ in 0..100 {
        if let Ok(s) = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))) {
            if let Ok(pid) = s.trim().parse::<u32>() {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    return Ok(pid);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no running {name} in {}", dir.display())
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// SIGKILL to PostgreSQL's postmaster and every backend it forked.
fn crash_postgres(dir: &Path) -> anyhow::Result<u32> {
    let pidfile = std::fs::read_to_string(dir.join("pg/postmaster.pid"))
        .context("PostgreSQL's postmaster.pid")?;
    let pid: u32 = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("postmaster pid")?;
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-P", &pid.to_string()])
        .status();
    signal(pid, "KILL");
    Ok(pid)
}

/// Drops every packet sent from or arriving for a socket of a process in
/// `cgroup` (a path as nft names it, two levels below the cgroup v2 root).
fn cut_off(cgroup: &str) -> anyhow::Result<()> {
    let rules = format!(
        "table inet {NFT_TABLE} {{\n\
         chain out {{ type filter hook output priority 0; socket cgroupv2 level 2 \"{cgroup}\" drop; }}\n\
         chain in {{ type filter hook input priority 0; socket cgroupv2 level 2 \"{cgroup}\" drop; }}\n\
         }}\n"
    );
    nft(&["-f", "-"], Some(&rules))
}

/// Lets the cut-off node's packets through again.
fn heal() -> anyhow::Result<()> {
    nft(&["delete", "table", "inet", NFT_TABLE], None)
}

fn heal_quietly() -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("nft")
        .args(["delete", "table", "inet", NFT_TABLE])
        .stderr(std::process::Stdio::null())
        .status()
}

fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running nft (Debian: apt-get install nftables; needs root)")?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "nft {args:?} failed ({status})");
    Ok(())
}

/// Applies one fault; returns what it hit.
async fn apply(kind: FaultKind, cli: &Cli, rng: &mut Rng) -> anyhow::Result<String> {
    let dir = &cli.cluster_dir;
    Ok(match kind {
        FaultKind::KillWorker | FaultKind::KillEdge | FaultKind::KillNats => {
            let (role, n) = match kind {
                FaultKind::KillWorker => ("worker", 2),
                FaultKind::KillEdge => ("edge", 2),
                _ => ("nats", 3),
            };
            let name = format!("{role}-{}", rng.below(n) + 1);
            let pid = pid_of(dir, &name).await?;
            signal(pid, "KILL");
            format!("{name} (pid {pid})")
        }
        FaultKind::PauseNats => {
            let name = format!("nats-{}", rng.below(3) + 1);
            let pid = pid_of(dir, &name).await?;
            signal(pid, "STOP");
            tokio::time::sleep(PAUSE_NATS).await;
            signal(pid, "CONT");
            format!("{name} (pid {pid}) for {} ms", PAUSE_NATS.as_millis())
        }
        FaultKind::CutNats => {
            let n = rng.below(3) + 1;
            let cgroup = cli
                .nats_cgroup
                .as_deref()
                .context("cut-nats needs --nats-cgroup")?;
            cut_off(&format!("{cgroup}/nats-{n}"))?;
            tokio::time::sleep(CUT_NATS).await;
            heal()?;
            format!("nats-{n} for {} ms", CUT_NATS.as_millis())
        }
        FaultKind::PauseWorker => {
            let name = format!("worker-{}", rng.below(2) + 1);
            let pid = pid_of(dir, &name).await?;
            signal(pid, "STOP");
            let paused = Duration::from_millis(cli.lease_ttl_ms + 2_000);
            tokio::time::sleep(paused).await;
            signal(pid, "CONT");
            format!("{name} (pid {pid}) for {} ms", paused.as_millis())
        }
        FaultKind::RestartPostgres => {
            let pid = crash_postgres(dir)?;
            format!("postmaster (pid {pid}) and its backends")
        }
        FaultKind::KillAll => {
            let mut hit = Vec::new();
            if let Ok(pid) = crash_postgres(dir) {
                hit.push(format!("postgres {pid}"));
            }
            let mut names: Vec<String> = std::fs::read_dir(dir.join("pids"))?
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter_map(|n| n.strip_suffix(".pid").map(str::to_owned))
                .filter(|n| n != "pg")
                .collect();
            names.sort();
            for name in names {
                if let Ok(s) = std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid")))
                {
                    if let Ok(pid) = s.trim().parse::<u32>() {
                        signal(pid, "KILL");
                        hit.push(name);
                    }
                }
            }
            format!("every process: {}", hit.join(", "))
        }
    })
}
