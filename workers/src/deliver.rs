//! Real-time push: events to the edges their users are connected to.
//!
//! Edges in `routed` inbox mode announce which users they hold
//! (`msgr.v2.route.<edge>`, [`run_routes`] keeps the table); an event for
//! some users goes out as one `EdgeDelivery` per edge holding any of them
//! (`msgr.v2.deliver.edge.<edge>`), and a sequencer batch's events for one
//! edge share one publish ([`Outbox`]). Users no routed edge holds get the
//! v1 per-user subject (`msgr.v1.deliver.user.<user>`), which edges in
//! `per_user` and `wildcard` mode subscribe to; with `deliver_v1 = always`
//! every user gets it as well (integrators who read inboxes).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use msgr_nats::subject;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// When the v1 per-user inbox subjects are published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverV1 {
    /// Only for users no `routed` edge holds (edges in the older modes).
    #[default]
    Unrouted,
    /// For every user, as before v2 (integrators reading user inboxes).
    Always,
}

/// An edge silent this long (no update, no heartbeat; they come every 5 s)
/// is gone: its routes are dropped.
const EDGE_GONE_AFTER: Duration = Duration::from_secs(20);
/// How long a starting worker waits for the edges' full lists before it
/// takes partitions.
pub const ROUTES_SETTLE: Duration = Duration::from_millis(300);
/// A full list is asked of one edge at most this often.
const SYNC_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// One `EdgeDelivery` stays under this (the bus's `max_payload` is 1 MiB).
const PUBLISH_MAX_BYTES: usize = 768 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct EdgeRoutes {
    id: Arc<str>,
    boot: u64,
    seq: u64,
    users: HashSet<String>,
    heard: Instant,
}

#[derive(Default)]
struct Table {
    edges: HashMap<String, EdgeRoutes>,
    /// user → the edges holding them (usually one).
    by_user: HashMap<String, Vec<Arc<str>>>,
}

impl Table {
    fn link(&mut self, user: &str, edge: &Arc<str>) {
        let list = self.by_user.entry(user.to_owned()).or_default();
        if !list.iter().any(|e| e == edge) {
            list.push(Arc::clone(edge));
        }
    }

    fn unlink(&mut self, user: &str, edge: &str) {
        if let Some(list) = self.by_user.get_mut(user) {
            list.retain(|e| &**e != edge);
            if list.is_empty() {
                self.by_user.remove(user);
            }
        }
    }

    fn drop_edge(&mut self, edge_id: &str) {
        if let Some(e) = self.edges.remove(edge_id) {
            for u in &e.users {
                self.unlink(u, edge_id);
            }
        }
    }
}

/// What to do after an update.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Ok,
    /// Updates were missed (or the edge is new to this worker): ask it for
    /// its full list.
    NeedFull,
}

/// Which users each `routed` edge holds, as announced.
#[derive(Default)]
pub struct Routes {
    table: Mutex<Table>,
    /// When a full list was last asked of each edge.
    asked: Mutex<HashMap<String, Instant>>,
}

impl Routes {
    fn apply(&self, u: pb::RouteUpdate) -> Applied {
        let mut t = lock(&self.table);
        let now = Instant::now();
        let known = t
            .edges
            .get(&u.edge_id)
            .map(|e| (e.boot, e.seq, Arc::clone(&e.id)));
        let mut verdict = Applied::Ok;
        let id = match known {
            Some((boot, seq, id)) if boot == u.boot => {
                if u.full {
                    if u.part == 0 && u.seq >= seq {
                        t.drop_edge(&u.edge_id);
                        t.edges.insert(u.edge_id.clone(), fresh(&id, &u, now));
                    }
                } else if u.add.is_empty() && u.remove.is_empty() {
                    // A heartbeat: the edge's seq now.
                    if u.seq != seq {
                        verdict = Applied::NeedFull;
                    }
                } else if u.seq != seq + 1 {
                    verdict = Applied::NeedFull;
                }
                id
            }
            _ => {
                // New to us, or the edge restarted (a new boot).
                t.drop_edge(&u.edge_id);
                let id: Arc<str> = Arc::from(u.edge_id.as_str());
                t.edges.insert(u.edge_id.clone(), fresh(&id, &u, now));
                if !u.full || u.part != 0 {
                    verdict = Applied::NeedFull;
                }
                id
            }
        };
        if let Some(e) = t.edges.get_mut(&u.edge_id) {
            e.heard = now;
            if !u.full || u.seq > e.seq {
                e.seq = e.seq.max(u.seq);
            }
            for a in &u.add {
                e.users.insert(a.clone());
            }
            for r in &u.remove {
                e.users.remove(r);
            }
        }
        for a in u.add {
            t.link(&a, &id);
        }
        for r in &u.remove {
            t.unlink(r, &u.edge_id);
        }
        verdict
    }

    fn expire(&self) {
        let mut t = lock(&self.table);
        let gone: Vec<String> = t
            .edges
            .iter()
            .filter(|(_, e)| e.heard.elapsed() > EDGE_GONE_AFTER)
            .map(|(k, _)| k.clone())
            .collect();
        for g in gone {
            tracing::info!(edge = %g, "edge silent; its routes are dropped");
            t.drop_edge(&g);
        }
        metrics::gauge!("msgr_worker_routed_edges").set(t.edges.len() as f64);
        lock(&self.asked).retain(|_, at| at.elapsed() < EDGE_GONE_AFTER);
        metrics::gauge!("msgr_worker_routed_users").set(t.by_user.len() as f64);
    }

    /// Whether a full list may be asked of `edge` now.
    fn may_ask(&self, edge: &str) -> bool {
        let mut asked = lock(&self.asked);
        match asked.get(edge) {
            Some(t) if t.elapsed() < SYNC_AT_MOST_EVERY => false,
            _ => {
                asked.insert(edge.to_owned(), Instant::now());
                true
            }
        }
    }
}

fn fresh(id: &Arc<str>, u: &pb::RouteUpdate, now: Instant) -> EdgeRoutes {
    EdgeRoutes {
        id: Arc::clone(id),
        boot: u.boot,
        seq: u.seq,
        users: HashSet::new(),
        heard: now,
    }
}

/// Keeps `ctx.routes` current until shutdown: edges' updates and
/// heartbeats, full lists asked for at start and whenever updates were
/// missed, and silent edges dropped. Answers every update that asks (an
/// edge waits for one answer before it counts a new connection as
/// reachable).
pub async fn run_routes(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut updates = ctx.nats.subscribe(subject::v2::ROUTE_ALL).await?;
    let inbox = subject::v2::routes_full(&ctx.instance_id);
    let mut fulls = ctx.nats.subscribe(inbox.clone()).await?;
    ask_full(&ctx, &inbox, None).await;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => ctx.routes.expire(),
            m = updates.next() => {
                let Some(m) = m else { anyhow::bail!("route subscription ended") };
                let Ok(u) = pb::RouteUpdate::decode(m.payload) else {
                    tracing::warn!(subject = %m.subject, "undecodable route update");
                    continue;
                };
                let edge = u.edge_id.clone();
                if ctx.routes.apply(u) == Applied::NeedFull && ctx.routes.may_ask(&edge) {
                    ask_full(&ctx, &inbox, Some(edge)).await;
                }
                if let Some(reply) = m.reply {
                    let _ = ctx.nats.publish(reply, Bytes::new()).await;
                }
            }
            m = fulls.next() => {
                let Some(m) = m else { anyhow::bail!("route inbox ended") };
                if let Ok(u) = pb::RouteUpdate::decode(m.payload) {
                    ctx.routes.apply(u);
                }
            }
        }
    }
}

async fn ask_full(ctx: &WorkerContext, inbox: &str, edge: Option<String>) {
    let req = pb::RouteSync { edge_id: edge };
    if let Err(e) = ctx
        .nats
        .publish_with_reply(
            subject::v2::ROUTE_SYNC,
            inbox.to_owned(),
            req.encode_to_vec().into(),
        )
        .await
    {
        tracing::warn!(error = %e, "could not ask edges for their routes");
    }
}

/// Events on their way to users, grouped per edge: one publish per edge
/// (and per v1 inbox for users no routed edge holds) at [`Outbox::flush`].
#[derive(Default)]
pub struct Outbox {
    per_edge: HashMap<Arc<str>, (pb::EdgeDelivery, usize)>,
    v1: Vec<(String, Bytes)>,
}

impl Outbox {
    /// Queues the encoded `Delivery` for every user in `to`.
    pub fn push(&mut self, ctx: &WorkerContext, to: &[String], delivery: &Bytes) {
        let always = ctx.config.deliver_v1 == DeliverV1::Always;
        let t = lock(&ctx.routes.table);
        for user in to {
            let edges = t.by_user.get(user);
            if always || edges.is_none() {
                self.v1.push((user.clone(), delivery.clone()));
            }
            for edge in edges.into_iter().flatten() {
                let (d, bytes) = self.per_edge.entry(Arc::clone(edge)).or_default();
                match d.items.last_mut() {
                    // The same event (the same bytes) for another user on this edge.
                    Some(last)
                        if last.delivery.as_ptr() == delivery.as_ptr()
                            && last.delivery.len() == delivery.len() =>
                    {
                        last.users.push(user.clone());
                        *bytes += user.len() + 2;
                    }
                    _ => {
                        *bytes += delivery.len() + user.len() + 8;
                        d.items.push(pb::RoutedDelivery {
                            users: vec![user.clone()],
                            delivery: delivery.clone(),
                        });
                    }
                }
            }
        }
    }

    /// Publishes everything queued (core NATS: buffered, not awaited one
    /// by one).
    pub async fn flush(self, ctx: &WorkerContext) {
        for (edge, (d, bytes)) in self.per_edge {
            let subject = subject::v2::deliver_edge(&edge);
            for part in split(d, bytes) {
                metrics::histogram!("msgr_worker_edge_delivery_items")
                    .record(part.items.len() as f64);
                if let Err(e) = ctx
                    .nats
                    .publish(subject.clone(), part.encode_to_vec().into())
                    .await
                {
                    tracing::warn!(error = %e, "edge delivery publish failed");
                }
            }
        }
        for (user, payload) in self.v1 {
            if let Err(e) = ctx
                .nats
                .publish(subject::deliver_user(&user), payload)
                .await
            {
                tracing::warn!(error = %e, "inbox publish failed");
            }
        }
    }
}

/// `d` in parts of at most [`PUBLISH_MAX_BYTES`] (about: `bytes` is the
/// estimate kept while queueing). A single item larger than that goes alone.
fn split(d: pb::EdgeDelivery, bytes: usize) -> Vec<pb::EdgeDelivery> {
    if bytes <= PUBLISH_MAX_BYTES {
        return vec![d];
    }
    let mut parts = Vec::new();
    let mut cur = pb::EdgeDelivery::default();
    let mut size = 0;
    let mut add = |item: pb::RoutedDelivery| {
        let n = item.encoded_len();
        if size + n > PUBLISH_MAX_BYTES && !cur.items.is_empty() {
            parts.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.items.push(item);
    };
    for mut item in d.items {
        // A group event for thousands of users: split the user list too.
        while item.users.len() > 1 && item.encoded_len() > PUBLISH_MAX_BYTES {
            let rest = item.users.split_off(item.users.len() / 2);
            add(pb::RoutedDelivery {
                users: rest,
                delivery: item.delivery.clone(),
            });
        }
        add(item);
    }
    if !cur.items.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Pushes one event to `to` at once (events outside a sequencer batch:
/// group changes, typing, refusals).
pub async fn push_now(ctx: &WorkerContext, to: &[String], delivery: &pb::Delivery) {
    let mut o = Outbox::default();
    o.push(ctx, to, &Bytes::from(delivery.encode_to_vec()));
    o.flush(ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(edge: &str, boot: u64, seq: u64, add: &[&str], remove: &[&str]) -> pb::RouteUpdate {
        pb::RouteUpdate {
            edge_id: edge.to_owned(),
            boot,
            seq,
            full: false,
            part: 0,
            add: add.iter().map(|s| (*s).to_owned()).collect(),
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn edges_of(r: &Routes, user: &str) -> Vec<String> {
        let t = lock(&r.table);
        let mut v: Vec<String> = t
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn updates_in_order_route_users_and_a_gap_asks_for_the_full_list() {
        let r = Routes::default();
        // First word from an edge: applied, but the rest is unknown.
        assert_eq!(r.apply(upd("e1", 7, 1, &["ua"], &[])), Applied::NeedFull);
        assert_eq!(r.apply(upd("e1", 7, 2, &["ub"], &[])), Applied::Ok);
        assert_eq!(r.apply(upd("e2", 9, 1, &["ua"], &[])), Applied::NeedFull);
        assert_eq!(edges_of(&r, "ua"), ["e1", "e2"]);
        assert_eq!(r.apply(upd("e1", 7, 3, &[], &["ua"])), Applied::Ok);
        assert_eq!(edges_of(&r, "ua"), ["e2"]);
        // Seq 4 was lost: 5 is applied and the full list asked for.
        assert_eq!(r.apply(upd("e1", 7, 5, &["uc"], &[])), Applied::NeedFull);
        // A heartbeat that matches, then one that shows a miss.
        assert_eq!(r.apply(upd("e1", 7, 5, &[], &[])), Applied::Ok);
        assert_eq!(r.apply(upd("e1", 7, 6, &[], &[])), Applied::NeedFull);
        // The full list replaces what was held.
        let full = pb::RouteUpdate {
            full: true,
            ..upd("e1", 7, 6, &["ud"], &[])
        };
        assert_eq!(r.apply(full), Applied::Ok);
        assert!(edges_of(&r, "ub").is_empty(), "not in the full list");
        assert_eq!(edges_of(&r, "ud"), ["e1"]);
        // The edge restarted: its old routes go.
        assert_eq!(r.apply(upd("e1", 8, 1, &["ue"], &[])), Applied::NeedFull);
        assert!(edges_of(&r, "ud").is_empty());
        assert_eq!(edges_of(&r, "ue"), ["e1"]);
    }

    #[test]
    fn large_deliveries_are_split_under_the_payload_bound() {
        let users: Vec<String> = (0..40_000).map(|i| format!("u{i:026}")).collect();
        let item = pb::RoutedDelivery {
            users: users.clone(),
            delivery: Bytes::from(vec![7; 100]),
        };
        let mut d = pb::EdgeDelivery { items: vec![item] };
        for i in 0..20 {
            d.items.push(pb::RoutedDelivery {
                users: vec![format!("v{i}")],
                delivery: Bytes::from(vec![1; 60_000]),
            });
        }
        let parts = split(d, usize::MAX);
        assert!(parts.len() > 2);
        let mut seen = 0;
        for p in &parts {
            assert!(
                p.encoded_len() <= PUBLISH_MAX_BYTES + 70_000,
                "{}",
                p.encoded_len()
            );
            seen += p.items.iter().map(|i| i.users.len()).sum::<usize>();
        }
        assert_eq!(seen, 40_000 + 20, "every user once");
    }
}
