//! `msgr-bench`: a load generator that speaks only the public API.
//!
//! Run with `just bench` (starts a fresh release stack and measures it) or
//! `msgr-bench --url http://127.0.0.1:8080 --pids edge=PID,worker=PID,nats=PID`.
//!
//! Workloads (select with `--workloads w1,w2,w3,w4,w5`):
//! - W1 latency: 100 pairs, 500, 2,000 and 8,000 msg/s.
//! - W2 throughput: rising rates until p99 > 100 ms or any loss.
//! - W3 group fan-out: one sender, 500 (then 1,024) connected members.
//! - W4 idle connections: edge RSS per connection and connect rate.
//! - W5 history: 1,000 messages paged 100 at a time; a 500-conversation chat list.

use msgr_bench::client;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use serde_json::{json, Value};

use msgr_bench::client::{connect_ws, get_text, next_json, register_many, send_text, User};
use msgr_bench::prom::{self, Stage};
use msgr_bench::report;
use msgr_bench::stats::{self, summarize, CpuMeter, ProcUsage, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "msgr-bench",
    about = "Load generator for msgr (public API only)"
)]
struct Cli {
    /// Base URL of a running stack.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Workloads to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "w1,w2,w3,w4,w5")]
    workloads: Vec<String>,
    /// Server processes to measure: `edge=PID,worker=PID,nats=PID`.
    #[arg(long)]
    pids: Option<String>,
    /// Where the JSON and SVG results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Shorter phases, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// W4: idle connections to hold, in steps (each one measured). 19,000 stays
    /// under the 20,000 open-files limit of the generator and the edge.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 19_000])]
    idle: Vec<usize>,
    /// Store results as `<workload>_<label>` (implies `--merge`), e.g. for a
    /// second run against an edge configured differently.
    #[arg(long)]
    label: Option<String>,
    /// Merge results into an existing `latest.json` instead of replacing it.
    #[arg(long)]
    merge: bool,
    /// W4: keep the connections open this many seconds after the last step
    /// (so generators against several edges overlap), then check them.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// W2: highest rate to try (msg/s).
    #[arg(long, default_value_t = 64_000)]
    max_rate: u64,
    /// W2: first rate to try (msg/s); later steps double it.
    #[arg(long, default_value_t = 1_000)]
    start_rate: u64,
    /// W2: after the first step that fails, this many more steps halve the gap
    /// between it and the last rate held (a doubling alone says "2,000" for a
    /// server that holds 3,500).
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// Prometheus endpoints to read around each W1/W2 phase, comma-separated;
    /// their latency histograms show which hop a tail comes from. Default: the
    /// edge's `/metrics` at `--url`.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// nats-server monitoring endpoints (`http://IP:PORT`, comma-separated):
    /// their `/varz` message counts give the NATS operations per message.
    #[arg(long, value_delimiter = ',')]
    nats_monitor: Vec<String>,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// W2's next rate after a step at `rate`: double until a step fails, then
/// (while `refine` lasts) halfway between the highest rate held and the lowest
/// that failed, on a round 100 msg/s. `None` ends W2.
fn next_w2_rate(
    rate: u64,
    held: Option<u64>,
    failed: Option<u64>,
    refine: &mut u32,
) -> Option<u64> {
    match (held, failed) {
        (_, None) => Some(rate * 2),
        (Some(lo), Some(hi)) if *refine > 0 && hi.saturating_sub(lo) >= 200 => {
            *refine -= 1;
            Some((lo + (hi - lo) / 2) / 100 * 100)
        }
        _ => None,
    }
}

/// Microseconds since the generator started (one clock for all tasks).
fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Debug, Clone, Serialize)]
struct RatePhase {
    offered_per_s: u64,
    secs: u64,
    sent: u64,
    received: u64,
    lost: u64,
    e2e: Summary,
    ack: Summary,
    generator_cpu_cores: f64,
    server: Vec<ProcUsage>,
    /// The servers' latency histograms over the phase (empty if unreadable).
    stages: Vec<Stage>,
    /// What one message cost the servers, from the phase's start until its
    /// stragglers were in.
    per_message: PerMessage,
}

/// A phase's server cost divided by the messages sent in it.
#[derive(Debug, Clone, Serialize)]
struct PerMessage {
    /// CPU of every measured server process (`--pids`), in µs.
    server_cpu_us: f64,
    /// nats-server messages in + out (`/varz`, every node given), or `None`
    /// without `--nats-monitor`.
    nats_ops: Option<f64>,
    /// Bytes written to storage by every measured process.
    disk_bytes: f64,
}

/// `in_msgs + out_msgs` summed over the nats-servers given; `None` if any
/// cannot be read.
async fn nats_msgs(monitors: &[String]) -> Option<u64> {
    if monitors.is_empty() {
        return None;
    }
    let mut total = 0;
    for m in monitors {
        let url = format!("{}/varz", m.trim_end_matches('/'));
        let v: Value = match get_text(&url).await {
            Ok(t) => serde_json::from_str(&t).ok()?,
            Err(e) => {
                eprintln!("    (no /varz from {url}: {e:#})");
                return None;
            }
        };
        total += v["in_msgs"].as_u64()? + v["out_msgs"].as_u64()?;
    }
    Some(total)
}

impl PerMessage {
    fn print(&self) {
        let ops = self
            .nats_ops
            .map_or_else(|| "?".to_owned(), |o| format!("{o:.2}"));
        eprintln!(
            "    per message: server CPU {:.0} µs, NATS ops {ops}, disk {:.2} KiB",
            self.server_cpu_us,
            self.disk_bytes / 1024.0
        );
    }
}

/// Every `*_seconds` histogram the `metrics` endpoints export, merged (the
/// edge's and the worker's names do not overlap). An endpoint that cannot be
/// read is reported once per phase and left out.
async fn scrape(metrics: &[String]) -> std::collections::BTreeMap<String, prom::Hist> {
    let mut all = std::collections::BTreeMap::new();
    for url in metrics {
        match get_text(url).await {
            Ok(text) => all.extend(prom::histograms(&text)),
            Err(e) => eprintln!("    (no server histograms from {url}: {e:#})"),
        }
    }
    all
}

/// The hops of one message, in the order it takes them, as the servers name
/// their histograms: the edge's publish until the PubAck, the wait in the
/// stream before the sequencer reads the command, the store write (queueing
/// for the writer included) and its fsync, the fan-out and acks after it, and
/// the edge's frame-in to ack-out.
const FLOW: &[&str] = &[
    "edge_publish",
    "worker_command_age",
    "worker_persist",
    "store_commit_sync",
    "worker_emit",
    "edge_ack",
];

/// Prints a phase's hot-path stages on one line, in flow order (the JSON has
/// every histogram).
fn print_stages(stages: &[Stage]) {
    let line: Vec<String> = FLOW
        .iter()
        .filter_map(|name| stages.iter().find(|s| s.name == *name))
        .map(|s| format!("{} p50≤{} p99≤{}", s.name, ms(s.p50_le_ms), ms(s.p99_le_ms)))
        .collect();
    if !line.is_empty() {
        eprintln!("    server (ms): {}", line.join(", "));
    }
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "∞".to_owned()
    }
}

/// Per-phase latency samples, one collector per client (no shared hot lock).
type Samples = Arc<Mutex<Vec<(u32, u64)>>>;

/// 100 (or `pairs`) senders and receivers, connected once, driven at rates.
struct Pairs {
    writers: Vec<Arc<tokio::sync::Mutex<client::Writer>>>,
    to: Vec<String>,
    e2e: Vec<Samples>,
    acks: Vec<Samples>,
}

impl Pairs {
    async fn connect(addr: SocketAddr, users: &[User]) -> anyhow::Result<Self> {
        let n = users.len() / 2;
        let (senders, receivers) = users.split_at(n);
        let mut me = Self {
            writers: Vec::new(),
            to: Vec::new(),
            e2e: Vec::new(),
            acks: Vec::new(),
        };
        for (s, r) in senders.iter().zip(receivers) {
            let mut rws = connect_ws(addr, &r.token, None).await?;
            let e2e: Samples = Arc::default();
            let sink = Arc::clone(&e2e);
            // Receiver: message frames carry "<phase>:<sent_us>" as text.
            tokio::spawn(async move {
                while let Some(v) = next_json(&mut rws.rx).await {
                    if v["type"] == "message" {
                        if let Some((p, t)) = v["message"]["text"]
                            .as_str()
                            .and_then(|t| t.split_once(':'))
                        {
                            if let (Ok(p), Ok(t)) = (p.parse::<u32>(), t.parse::<u64>()) {
                                let lat = now_us().saturating_sub(t);
                                sink.lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push((p, lat));
                            }
                        }
                    }
                }
            });
            let sws = connect_ws(addr, &s.token, None).await?;
            let acks: Samples = Arc::default();
            let (rx, tx) = (sws.rx, sws.tx);
            let sink = Arc::clone(&acks);
            let mut rx = rx;
            tokio::spawn(async move {
                while let Some(v) = next_json(&mut rx).await {
                    if v["type"] == "ack" {
                        // client_msg_id is "<phase>-<n>-<sent_us>".
                        let id = v["client_msg_id"].as_str().unwrap_or_default();
                        let mut it = id.split('-');
                        if let (Some(p), Some(_), Some(t)) = (it.next(), it.next(), it.next()) {
                            if let (Ok(p), Ok(t)) = (p.parse::<u32>(), t.parse::<u64>()) {
                                sink.lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push((p, now_us().saturating_sub(t)));
                            }
                        }
                    }
                }
            });
            // The writer half is all a sender task needs; reads are above.
            me.writers.push(Arc::new(tokio::sync::Mutex::new(tx)));
            me.to.push(r.user_id.clone());
            me.e2e.push(e2e);
            me.acks.push(acks);
        }
        Ok(me)
    }

    /// Sends at `rate` msg/s in aggregate for `secs`, then waits 5 s for stragglers.
    async fn phase(
        &self,
        phase: u32,
        rate: u64,
        secs: u64,
        procs: &[(String, u32)],
        metrics: &[String],
        nats_monitor: &[String],
    ) -> RatePhase {
        let before = scrape(metrics).await;
        let spent_before = stats::Spent::now(procs);
        let ops_before = nats_msgs(nats_monitor).await;
        let n = self.writers.len() as u64;
        let period = Duration::from_secs_f64(n as f64 / rate as f64);
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs(secs);
        let meter = CpuMeter::start(procs);
        let me = stats::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let wall = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (w, to)) in self.writers.iter().zip(&self.to).enumerate() {
            let (w, to) = (Arc::clone(w), to.clone());
            // Spread senders evenly over one period.
            let offset = period.mul_f64(i as f64 / n as f64);
            tasks.spawn(async move {
                let mut sent = 0u64;
                let mut k = 0u32;
                loop {
                    let at = start + offset + period * k;
                    if at >= end {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    let t = now_us();
                    let frame = format!(
                        r#"{{"type":"send","client_msg_id":"{phase}-{k}-{t}","to_user":"{to}","text":"{phase}:{t}"}}"#
                    );
                    if send_text(&mut *w.lock().await, &frame).await.is_err() {
                        break;
                    }
                    sent += 1;
                    k += 1;
                }
                sent
            });
        }
        let mut sent = 0;
        while let Some(r) = tasks.join_next().await {
            sent += r.unwrap_or(0);
        }
        let server = meter.stop();
        let gen_cpu = (stats::cpu_seconds(std::process::id()).unwrap_or(me) - me)
            / wall.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let spent = stats::Spent::now(procs);
        let ops_after = nats_msgs(nats_monitor).await;
        let stages = prom::stages(&before, &scrape(metrics).await);
        let per = sent.max(1) as f64;
        let per_message = PerMessage {
            server_cpu_us: (spent.cpu_secs - spent_before.cpu_secs) * 1e6 / per,
            nats_ops: ops_before
                .zip(ops_after)
                .map(|(b, a)| a.saturating_sub(b) as f64 / per),
            disk_bytes: spent.write_bytes.saturating_sub(spent_before.write_bytes) as f64 / per,
        };
        let take = |v: &[Samples]| -> Vec<u64> {
            v.iter()
                .flat_map(|s| {
                    s.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .iter()
                        .filter(|(p, _)| *p == phase)
                        .map(|(_, l)| *l)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let e2e = take(&self.e2e);
        let ack = take(&self.acks);
        let received = e2e.len() as u64;
        RatePhase {
            offered_per_s: rate,
            secs,
            sent,
            received,
            lost: sent.saturating_sub(received),
            e2e: summarize(e2e),
            ack: summarize(ack),
            generator_cpu_cores: gen_cpu,
            server,
            stages,
            per_message,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = now_us();
    let addr: SocketAddr = cli
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be http://IP:PORT")?;
    let procs: Vec<(String, u32)> = cli
        .pids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| {
            kv.split_once('=')
                .and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        })
        .collect();
    let edge_pid = procs.iter().find(|(n, _)| n == "edge").map(|(_, p)| *p);
    let metrics = if cli.metrics.is_empty() {
        vec![format!("http://{addr}/metrics")]
    } else {
        cli.metrics.clone()
    };
    let run_id = format!("{}", std::process::id());
    let mut report: HashMap<&str, Value> = HashMap::new();
    let (short, long) = if cli.quick { (3, 3) } else { (20, 15) };

    for w in &cli.workloads {
        match w.as_str() {
            "w1" => {
                eprintln!("W1: registering 200 users");
                let users = register_many(addr, &format!("w1-{run_id}"), 200, 8).await?;
                let pairs = Pairs::connect(addr, &users).await?;
                let mut phases = Vec::new();
                for (i, rate) in [500u64, 2_000, 8_000].into_iter().enumerate() {
                    eprintln!("W1: {rate} msg/s for {short} s");
                    let p = pairs
                        .phase(i as u32, rate, short, &procs, &metrics, &cli.nats_monitor)
                        .await;
                    eprintln!(
                        "    p50 {:.2} ms  p99 {:.2} ms  lost {}",
                        p.e2e.p50_ms, p.e2e.p99_ms, p.lost
                    );
                    print_stages(&p.stages);
                    p.per_message.print();
                    phases.push(p);
                }
                report.insert("w1", serde_json::to_value(&phases)?);
            }
            "w2" => {
                eprintln!("W2: registering 200 users");
                let users = register_many(addr, &format!("w2-{run_id}"), 200, 8).await?;
                let pairs = Pairs::connect(addr, &users).await?;
                let mut phases = Vec::new();
                let mut rate = cli.start_rate.max(1);
                let mut held = None;
                let mut failed = None;
                let mut refine = cli.refine;
                while rate <= cli.max_rate {
                    if failed.is_some() {
                        // Let the backlog of the failed step drain first.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    eprintln!("W2: {rate} msg/s for {long} s");
                    let p = pairs
                        .phase(
                            100 + phases.len() as u32,
                            rate,
                            long,
                            &procs,
                            &metrics,
                            &cli.nats_monitor,
                        )
                        .await;
                    eprintln!(
                        "    p50 {:.2} ms  p99 {:.2} ms  sent {} lost {}",
                        p.e2e.p50_ms, p.e2e.p99_ms, p.sent, p.lost
                    );
                    print_stages(&p.stages);
                    p.per_message.print();
                    // The generator itself may fall behind: judge the rate it achieved.
                    let ok = p.e2e.p99_ms <= 100.0
                        && p.lost == 0
                        && p.sent as f64 >= 0.95 * (rate * long) as f64;
                    phases.push(p);
                    if ok {
                        held = Some(rate);
                    } else {
                        failed = Some(rate);
                    }
                    match next_w2_rate(rate, held, failed, &mut refine) {
                        Some(next) => rate = next,
                        None => break,
                    }
                }
                report.insert(
                    "w2",
                    json!({"highest_rate_held": held, "lowest_rate_failed": failed, "steps": phases}),
                );
            }
            "w3" => {
                let mut out = Vec::new();
                for members in [500usize, 1_024] {
                    out.push(
                        w3(
                            addr,
                            &format!("w3-{run_id}-{members}"),
                            members,
                            short,
                            &procs,
                        )
                        .await?,
                    );
                }
                report.insert("w3", json!(out));
            }
            "w4" => report
                .insert(
                    "w4",
                    w4(addr, &format!("w4-{run_id}"), &cli.idle, cli.hold, edge_pid).await?,
                )
                .map_or((), |_| ()),
            "w5" => report
                .insert("w5", w5(addr, &format!("w5-{run_id}")).await?)
                .map_or((), |_| ()),
            other => anyhow::bail!("unknown workload {other}"),
        }
    }
    let machine = stats::machine();
    let mut results = serde_json::Map::new();
    let latest = cli.out.join("latest.json");
    if cli.merge || cli.label.is_some() {
        // Keep what an earlier run of this `just bench` wrote.
        if let Ok(prev) = std::fs::read(&latest) {
            if let Ok(Value::Object(mut prev)) = serde_json::from_slice::<Value>(&prev) {
                if let Some(Value::Object(r)) = prev.remove("results") {
                    results = r;
                }
            }
        }
    }
    for (k, v) in report {
        let key = match &cli.label {
            Some(l) => format!("{k}_{l}"),
            None => k.to_owned(),
        };
        results.insert(key, v);
    }
    let doc = json!({"machine": machine, "results": results});
    std::fs::create_dir_all(&cli.out)?;
    std::fs::write(&latest, serde_json::to_string_pretty(&doc)?)?;
    report::print_table(&doc);
    report::plot(&doc, &cli.out.join("latency.svg"))?;
    eprintln!(
        "wrote {} and latency.svg",
        cli.out.join("latest.json").display()
    );
    Ok(())
}

async fn w3(
    addr: SocketAddr,
    prefix: &str,
    members: usize,
    secs: u64,
    procs: &[(String, u32)],
) -> anyhow::Result<Value> {
    eprintln!("W3: registering {members} users");
    let users = register_many(addr, prefix, members, 8).await?;
    let (sender, rest) = users.split_first().context("no users")?;
    let samples: Samples = Arc::default();
    let mut readers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(members);
    for u in rest {
        let mut ws = connect_ws(addr, &u.token, None).await?;
        let (sink, ready) = (Arc::clone(&samples), ready_tx.clone());
        readers.push(tokio::spawn(async move {
            while let Some(v) = next_json(&mut ws.rx).await {
                match v["type"].as_str() {
                    Some("group") => {
                        let _ = ready.try_send(());
                    }
                    Some("message") => {
                        if let Some(t) = v["message"]["text"]
                            .as_str()
                            .and_then(|t| t.split_once(':'))
                            .and_then(|(_, t)| t.parse::<u64>().ok())
                        {
                            sink.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push((0, now_us().saturating_sub(t)));
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    let ids: Vec<_> = rest.iter().map(|u| u.user_id.clone()).collect();
    let (s, g) = client::http(
        addr,
        "POST",
        "/groups/create",
        Some(&sender.token),
        Some(json!({"name": prefix, "members": ids})),
    )
    .await?;
    anyhow::ensure!(s == 201, "create group: {s} {g}");
    let gid = g["group_id"].as_str().context("group_id")?.to_owned();
    for _ in 0..rest.len() {
        tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .context("members not ready")?;
    }
    let mut ws = connect_ws(addr, &sender.token, None).await?;
    let meter = CpuMeter::start(procs);
    let started = Instant::now();
    let mut k = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let t = now_us();
        send_text(
            &mut ws.tx,
            &format!(
                r#"{{"type":"send","client_msg_id":"g{k}","to_group":"{gid}","text":"0:{t}"}}"#
            ),
        )
        .await?;
        k += 1;
    }
    let server = meter.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lat: Vec<u64> = samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(_, l)| *l)
        .collect();
    let expected = k * rest.len();
    let delivered = lat.len();
    for r in readers {
        r.abort();
    }
    let summary = summarize(lat);
    eprintln!("    {members} members: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  {delivered}/{expected} delivered", summary.p50_ms, summary.p99_ms, summary.max_ms);
    Ok(json!({
        "members": members, "messages": k, "deliveries": delivered, "expected": expected,
        "deliveries_per_s": delivered as f64 / secs as f64, "latency": summary, "server": server,
    }))
}

async fn w4(
    addr: SocketAddr,
    prefix: &str,
    levels: &[usize],
    hold: u64,
    edge_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let n = levels.iter().copied().max().unwrap_or(0);
    eprintln!("W4: idle connections, held at {levels:?}");
    // One user per connection, as on a real edge: each pays for its inbox interest.
    let users = register_many(addr, prefix, n, 16).await?;
    let before = edge_pid.and_then(stats::rss_kib);
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut out = Vec::new();
    let mut connecting = Duration::ZERO;
    let mut sorted = levels.to_vec();
    sorted.sort_unstable();
    for level in sorted {
        let started = Instant::now();
        let mut i = conns.len() + failed;
        while conns.len() < level && i < n {
            // Several loopback source addresses: more than one address's worth of ports.
            let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % 4) as u8));
            match connect_ws(addr, &users[i].token, Some(from)).await {
                Ok(ws) => conns.push(ws),
                Err(_) => failed += 1,
            }
            i += 1;
            if i.is_multiple_of(1000) {
                eprint!("\r    {} open", conns.len());
            }
        }
        connecting += started.elapsed();
        eprintln!();
        // Let allocations from the connect burst settle before reading RSS.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = edge_pid.and_then(stats::rss_kib);
        let per_conn = match (before, after) {
            (Some(b), Some(a)) if !conns.is_empty() => {
                Some(a.saturating_sub(b) as f64 / conns.len() as f64)
            }
            _ => None,
        };
        let rate = conns.len() as f64 / connecting.as_secs_f64();
        eprintln!(
            "    {} open (failed {failed}) at {rate:.0}/s; edge RSS per connection {per_conn:?} KiB",
            conns.len(),
        );
        out.push(
            json!({"requested": level, "open": conns.len(), "failed": failed,
            "connect_per_s": rate,
            "edge_rss_before_mib": before.map(|b| b as f64 / 1024.0),
            "edge_rss_after_mib": after.map(|a| a as f64 / 1024.0),
            "edge_kib_per_connection": per_conn}),
        );
    }
    if hold > 0 {
        tokio::time::sleep(Duration::from_secs(hold)).await;
        // Still open after the hold: every connection answers a ping.
        let mut alive = 0usize;
        for ws in &mut conns {
            if client::ping(ws).await.is_ok() {
                alive += 1;
            }
        }
        eprintln!(
            "    after {hold} s: {alive} of {} answer a ping",
            conns.len()
        );
        if let Some(last) = out.last_mut() {
            last["held_secs"] = json!(hold);
            last["alive_after_hold"] = json!(alive);
        }
    }
    drop(conns);
    Ok(json!(out))
}

async fn w5(addr: SocketAddr, prefix: &str) -> anyhow::Result<Value> {
    eprintln!("W5: 1,000 messages, then paging");
    let users = register_many(addr, prefix, 2, 2).await?;
    let (a, b) = (&users[0], &users[1]);
    let mut ws = connect_ws(addr, &a.token, None).await?;
    for i in 0..1000 {
        send_text(&mut ws.tx, &format!(r#"{{"type":"send","client_msg_id":"h{i}","to_user":"{}","text":"history message {i}"}}"#, b.user_id)).await?;
    }
    let mut acks = 0;
    while acks < 1000 {
        let v = tokio::time::timeout(Duration::from_secs(30), next_json(&mut ws.rx))
            .await
            .context("acks")?
            .context("closed")?;
        if v["type"] == "ack" {
            acks += 1;
        }
    }
    let mut runs = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut after = 0u64;
        let mut got = 0;
        loop {
            let p0 = Instant::now();
            let (s, page) = client::http(
                addr,
                "GET",
                &format!(
                    "/messages/{}/{}?after={after}&limit=100",
                    b.user_id, a.user_id
                ),
                Some(&b.token),
                None,
            )
            .await?;
            pages.push(p0.elapsed().as_micros() as u64);
            anyhow::ensure!(s == 200, "history: {s}");
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            got += msgs.len();
            let Some(last) = msgs.last() else { break };
            after = last["seq"].as_u64().unwrap_or(after);
            if !page["has_more"].as_bool().unwrap_or(false) {
                break;
            }
        }
        anyhow::ensure!(got == 1000, "paged {got} of 1000");
        runs.push(t0.elapsed().as_micros() as u64);
    }
    eprintln!("W5: a chat list with 500 conversations");
    let peers = register_many(addr, &format!("{prefix}-peer"), 500, 8).await?;
    for chunk in peers.chunks(50) {
        let mut socks = Vec::new();
        for p in chunk {
            let mut s = connect_ws(addr, &p.token, None).await?;
            send_text(
                &mut s.tx,
                &format!(
                    r#"{{"type":"send","client_msg_id":"c","to_user":"{}","text":"hi"}}"#,
                    b.user_id
                ),
            )
            .await?;
            socks.push(s);
        }
        for mut s in socks {
            while let Some(v) = tokio::time::timeout(Duration::from_secs(30), next_json(&mut s.rx))
                .await
                .context("ack")?
            {
                if v["type"] == "ack" {
                    break;
                }
            }
        }
    }
    let mut lists = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut cursor = String::new();
        let mut n = 0;
        loop {
            let q = if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            };
            let (s, page) = client::http(
                addr,
                "GET",
                &format!("/chat/{}?limit=200{q}", b.user_id),
                Some(&b.token),
                None,
            )
            .await?;
            anyhow::ensure!(s == 200, "chat list: {s}");
            n += page["chats"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
        anyhow::ensure!(n >= 500, "listed {n} chats");
        lists.push(t0.elapsed().as_micros() as u64);
    }
    let total = summarize(runs);
    let page = summarize(pages);
    let chat = summarize(lists);
    eprintln!("    1,000 messages in {:.2} ms (median of 5); page p50 {:.2} ms p99 {:.2} ms; 500-chat list {:.2} ms", total.p50_ms, page.p50_ms, page.p99_ms, chat.p50_ms);
    Ok(json!({"history_1000_total": total, "history_page": page, "chat_list_500": chat}))
}

#[cfg(test)]
mod tests {
    use super::next_w2_rate;

    #[test]
    fn w2_doubles_until_a_step_fails_then_halves_the_gap() {
        let mut refine = 2;
        assert_eq!(
            next_w2_rate(1_000, Some(1_000), None, &mut refine),
            Some(2_000)
        );
        // 4,000 failed after 2,000 held: try 3,000, then 3,500 if that holds.
        assert_eq!(
            next_w2_rate(4_000, Some(2_000), Some(4_000), &mut refine),
            Some(3_000)
        );
        assert_eq!(
            next_w2_rate(3_000, Some(3_000), Some(4_000), &mut refine),
            Some(3_500)
        );
        // Refinement used up.
        assert_eq!(
            next_w2_rate(3_500, Some(3_500), Some(4_000), &mut refine),
            None
        );
    }

    #[test]
    fn w2_stops_without_a_rate_held_or_a_gap_worth_a_step() {
        let mut refine = 2;
        assert_eq!(next_w2_rate(1_000, None, Some(1_000), &mut refine), None);
        assert_eq!(
            next_w2_rate(2_100, Some(2_000), Some(2_100), &mut refine),
            None
        );
        assert_eq!(refine, 2);
        let mut none = 0;
        assert_eq!(
            next_w2_rate(4_000, Some(2_000), Some(4_000), &mut none),
            None
        );
    }
}
