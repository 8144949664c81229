//! `routed` inbox mode: telling the workers which users are connected here
//! (`msgr.v2.route.<edge>`), so they send this edge its users' events and
//! nothing else.
//!
//! One task publishes every change: the users whose first connection opened
//! or whose last one closed since its previous update, in one `RouteUpdate`
//! (a burst of connects is one message, never a queue of events), numbered
//! by `seq`. Each update is a request: a connection that opened waits until
//! a worker answered the update that names its user (every worker receives
//! it at the same time). Every 5 s a heartbeat carries the current seq, so a
//! worker that missed an update notices, and asks for the full list
//! (`msgr.v2.routes.sync`), which this task also answers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use msgr_nats::subject;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use tokio::sync::{watch, Notify};

const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long an update waits for a worker's answer (none may be running: no
/// responders answers at once; a worker that starts later asks for the full
/// list).
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Updates awaiting answers at once; changes meanwhile gather into the next.
const UPDATES_IN_FLIGHT: usize = 4;
/// Users per full-list part (about 30 bytes each: well under `max_payload`).
const FULL_PART_USERS: usize = 16_384;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a user has a connection here.
pub(super) type Holds = Box<dyn Fn(&str) -> bool + Send + Sync>;
/// Every user connected here.
pub(super) type Connected = Box<dyn Fn() -> Vec<String> + Send + Sync>;

struct Changes {
    /// The seq of the last update published.
    seq: u64,
    users: HashSet<String>,
}

pub(crate) struct Announcer {
    changes: Mutex<Changes>,
    wake: Notify,
    /// The highest seq answered (or given up on).
    answered: watch::Receiver<u64>,
}

impl Announcer {
    pub(super) async fn start(
        nats: async_nats::Client,
        link: watch::Receiver<msgr_nats::connect::Link>,
        edge_id: String,
        holds: Holds,
        connected: Connected,
    ) -> anyhow::Result<Arc<Self>> {
        let syncs = nats.subscribe(subject::v2::ROUTE_SYNC).await?;
        let (tx, answered) = watch::channel(0);
        let me = Arc::new(Self {
            changes: Mutex::new(Changes {
                seq: 0,
                users: HashSet::new(),
            }),
            wake: Notify::new(),
            answered,
        });
        let boot =
            u64::try_from(msgr_core::time::now_ms()).unwrap_or(0) ^ u64::from(std::process::id());
        tokio::spawn(run(
            Arc::clone(&me),
            Task {
                nats,
                link,
                edge_id,
                boot,
                holds,
                connected,
            },
            syncs,
            tx,
        ));
        Ok(me)
    }

    /// A user's connections here started or ended.
    pub(super) fn changed(&self, user: &str) -> u64 {
        let want = {
            let mut c = lock(&self.changes);
            c.users.insert(user.to_owned());
            c.seq + 1
        };
        self.wake.notify_one();
        want
    }

    /// Announces a user's first connection here and waits until a worker
    /// has it (or no worker answered in time).
    pub(super) async fn announce(&self, user: &str) {
        let want = self.changed(user);
        let mut answered = self.answered.clone();
        let _ =
            tokio::time::timeout(ANSWER_WITHIN * 2, answered.wait_for(|seq| *seq >= want)).await;
    }
}

struct Task {
    nats: async_nats::Client,
    link: watch::Receiver<msgr_nats::connect::Link>,
    edge_id: String,
    boot: u64,
    holds: Holds,
    connected: Connected,
}

async fn run(
    me: Arc<Announcer>,
    mut t: Task,
    mut syncs: async_nats::Subscriber,
    answered: watch::Sender<u64>,
) {
    let subject = subject::v2::route(&t.edge_id);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let update = |seq: u64| pb::RouteUpdate {
        edge_id: t.edge_id.clone(),
        boot: t.boot,
        seq,
        ..Default::default()
    };
    // Updates awaiting an answer: seq → when to stop waiting. Answers come
    // to `<inbox>.<seq>`; a worker applies updates in the order published,
    // so an answer to one answers every earlier one too.
    let mut in_flight: std::collections::BTreeMap<u64, tokio::time::Instant> =
        std::collections::BTreeMap::new();
    let reply_prefix = t.nats.new_inbox();
    let Ok(mut answers) = t.nats.subscribe(format!("{reply_prefix}.*")).await else {
        tracing::warn!("cannot subscribe to route answers");
        return;
    };
    let mut generation = t.link.borrow().generation();
    loop {
        let next_deadline = in_flight.values().min().copied();
        tokio::select! {
            () = me.wake.notified(), if in_flight.len() < UPDATES_IN_FLIGHT => {
                let (seq, users) = {
                    let mut c = lock(&me.changes);
                    if c.users.is_empty() {
                        continue;
                    }
                    c.seq += 1;
                    (c.seq, std::mem::take(&mut c.users))
                };
                let mut u = update(seq);
                for user in users {
                    if (t.holds)(&user) {
                        u.add.push(user);
                    } else {
                        u.remove.push(user);
                    }
                }
                in_flight.insert(seq, tokio::time::Instant::now() + ANSWER_WITHIN);
                if let Err(e) = t
                    .nats
                    .publish_with_reply(subject.clone(), format!("{reply_prefix}.{seq}"), u.encode_to_vec().into())
                    .await
                {
                    tracing::debug!(error = %e, "route update not published");
                }
            }
            Some(m) = answers.next() => {
                // A worker's answer, or the server's "no responders".
                if let Some(seq) = m.subject.rsplit('.').next().and_then(|s| s.parse::<u64>().ok()) {
                    in_flight.retain(|s, _| *s > seq);
                    answered.send_modify(|a| *a = (*a).max(seq));
                }
            }
            () = async { tokio::time::sleep_until(next_deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if next_deadline.is_some() => {
                let now = tokio::time::Instant::now();
                let late: Vec<u64> = in_flight.iter().filter(|(_, d)| **d <= now).map(|(s, _)| *s).collect();
                for seq in late {
                    tracing::debug!(seq, "route update not answered in time");
                    in_flight.remove(&seq);
                    answered.send_modify(|a| *a = (*a).max(seq));
                }
            }
            changed = t.link.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = t.link.borrow_and_update().clone();
                // Back on the bus: a heartbeat at once, so a worker that
                // missed updates (or dropped this edge) asks for the list now.
                if now.is_up() && now.generation() != generation {
                    generation = now.generation();
                    let seq = lock(&me.changes).seq;
                    let _ = t.nats.publish(subject.clone(), update(seq).encode_to_vec().into()).await;
                }
            }
            _ = heartbeat.tick() => {
                let seq = lock(&me.changes).seq;
                let _ = t.nats.publish(subject.clone(), update(seq).encode_to_vec().into()).await;
            }
            m = syncs.next() => {
                let Some(m) = m else {
                    tracing::warn!("route sync subscription ended");
                    return;
                };
                let Some(reply) = m.reply else { continue };
                let asked = pb::RouteSync::decode(m.payload).unwrap_or_default();
                if asked.edge_id.as_ref().is_some_and(|e| *e != t.edge_id) {
                    continue;
                }
                let seq = lock(&me.changes).seq;
                let users = (t.connected)();
                let parts = users.chunks(FULL_PART_USERS).map(<[String]>::to_vec);
                let parts: Vec<Vec<String>> = if users.is_empty() { vec![Vec::new()] } else { parts.collect() };
                for (i, add) in parts.into_iter().enumerate() {
                    let u = pb::RouteUpdate {
                        full: true,
                        part: u32::try_from(i).unwrap_or(u32::MAX),
                        add,
                        ..update(seq)
                    };
                    let _ = t.nats.publish(reply.clone(), u.encode_to_vec().into()).await;
                }
            }
        }
    }
}
