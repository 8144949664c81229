//! Presence: who is online, across every edge, and when they were last seen.
//!
//! - Each edge counts its connections per user. When a user's count here
//!   goes 0 → 1 or 1 → 0 the user is marked dirty; a background task writes
//!   dirty users to the KV bucket `MSGR_PRESENCE` (key `u.<user>`: the edges
//!   holding their connections, and when they were last seen), with a
//!   compare-and-set so edges never overwrite each other, then publishes
//!   the user's state on `msgr.v1.presence.<user>`. A burst of connects is
//!   coalesced: memory is one entry per user, never a queue of events.
//! - An edge writes its heartbeat (`e.<edge>`) every 10 s; an edge whose
//!   heartbeat is older than 30 s (it crashed) no longer makes its users
//!   online: a user with two devices on two edges is online while either
//!   edge holds one and lives.
//! - A connection watches up to 100 users (`{"type":"presence"}`), each
//!   allowed by the workers (a shared chat, their privacy setting, no
//!   block); it gets their state at once and every change after. An edge
//!   subscribes to `msgr.v1.presence.<user>` only for users watched on it
//!   (one subscription per user, shared by its watchers, dropped with the
//!   last), so it receives only the changes someone there looks at.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use msgr_nats::subject;
use msgr_schemas::client::ServerFrame;
use msgr_schemas::pb::v1 as pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::session::{encode, Session};
use crate::state::EdgeState;

const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// An edge whose heartbeat is older than this is gone.
const EDGE_DEAD_AFTER_MS: i64 = 30_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A user's presence record in the bucket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Connections per edge.
    #[serde(default)]
    edges: HashMap<String, u32>,
    #[serde(default)]
    last_seen_ms: i64,
}

/// Watchers of one user: connections, by the address of their session.
type Watchers = HashMap<usize, Weak<Session>>;

/// This edge's part of presence.
#[derive(Default)]
pub struct Presence {
    counts: Mutex<HashMap<String, u32>>,
    dirty: Mutex<HashSet<String>>,
    wake: Notify,
    watchers: Mutex<HashMap<String, Watchers>>,
    /// Whom each connection watches (by the address of its session), so a
    /// connection leaving touches only its own entries.
    watching: Mutex<HashMap<usize, Vec<String>>>,
    /// Other edges' heartbeats as last read: (heartbeat ms, read at).
    heartbeats: Mutex<HashMap<String, (i64, Instant)>>,
    /// The bucket, once found (the workers create it).
    kv: Mutex<Option<kv::Store>>,
    /// Subscriptions to watched users' presence events: their pump tasks,
    /// and whether each is subscribed yet.
    subs: Mutex<HashMap<String, Sub>>,
}

/// One watched user's presence subscription.
struct Sub {
    task: tokio::task::AbortHandle,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(session: &Arc<Session>) -> usize {
    Arc::as_ptr(session) as usize
}

impl Presence {
    /// A connection of `user` opened here.
    pub(crate) fn connected(&self, user: &str) {
        let mut counts = lock(&self.counts);
        let n = counts.entry(user.to_owned()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.mark(user);
        }
    }

    /// A connection of `user` closed here; it watches nothing any more.
    pub(crate) fn disconnected(&self, session: &Arc<Session>) {
        {
            let mut counts = lock(&self.counts);
            if let Some(n) = counts.get_mut(&session.user_id) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&session.user_id);
                    self.mark(&session.user_id);
                }
            }
        }
        self.unwatch(session);
    }

    fn mark(&self, user: &str) {
        lock(&self.dirty).insert(user.to_owned());
        self.wake.notify_one();
    }

    fn unwatch(&self, session: &Arc<Session>) {
        let key = key_of(session);
        let Some(users) = lock(&self.watching).remove(&key) else {
            return;
        };
        let mut gone = Vec::new();
        {
            let mut watchers = lock(&self.watchers);
            for u in users {
                if let Some(w) = watchers.get_mut(&u) {
                    w.remove(&key);
                    if w.is_empty() {
                        watchers.remove(&u);
                        gone.push(u);
                    }
                }
            }
        }
        self.drop_subs(&gone);
    }

    /// Ends the subscriptions of users nobody here watches any more.
    fn drop_subs(&self, users: &[String]) {
        if users.is_empty() {
            return;
        }
        let watchers = lock(&self.watchers);
        let mut subs = lock(&self.subs);
        for u in users {
            if !watchers.contains_key(u) {
                subs.remove(u); // aborts its task, which unsubscribes
            }
        }
    }

    /// `session` now watches exactly `users`.
    fn watch(&self, session: &Arc<Session>, users: &[String]) {
        self.unwatch(session);
        if users.is_empty() {
            return;
        }
        {
            let mut watchers = lock(&self.watchers);
            for u in users {
                watchers
                    .entry(u.clone())
                    .or_default()
                    .insert(key_of(session), Arc::downgrade(session));
            }
        }
        lock(&self.watching).insert(key_of(session), users.to_vec());
    }

    /// Sends a presence event to the connections watching its user.
    fn dispatch(&self, e: &pb::PresenceEvent) {
        let frame = encode(&presence_frame(e));
        let mut watchers = lock(&self.watchers);
        let Some(w) = watchers.get_mut(&e.user_id) else {
            return;
        };
        w.retain(|_, s| {
            let Some(s) = s.upgrade() else { return false };
            let hidden_here = e.hidden
                && e.hidden_from
                    .as_ref()
                    .is_none_or(|viewer| *viewer == s.user_id);
            if e.hidden && !hidden_here {
                return true;
            }
            s.post(frame.clone());
            // Hidden from this viewer: the watch ends (asking again is refused).
            !hidden_here
        });
        if w.is_empty() {
            watchers.remove(&e.user_id);
            drop(watchers);
            self.drop_subs(std::slice::from_ref(&e.user_id));
        }
    }
}

fn presence_frame(e: &pb::PresenceEvent) -> ServerFrame {
    ServerFrame::Presence {
        user_id: e.user_id.clone(),
        online: e.online && !e.hidden,
        last_seen: (!e.hidden && e.last_seen_ms > 0)
            .then(|| msgr_core::time::rfc3339_ms(e.last_seen_ms)),
    }
}

/// The presence bucket (looked up once, then kept).
async fn bucket(state: &EdgeState) -> Result<kv::Store, String> {
    if let Some(b) = lock(&state.presence.kv).clone() {
        return Ok(b);
    }
    let b = state
        .js
        .get_key_value(msgr_nats::stream::PRESENCE_BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    *lock(&state.presence.kv) = Some(b.clone());
    Ok(b)
}

/// Forgets the bucket after an error (it may have been re-created).
fn forget_bucket(state: &EdgeState) {
    *lock(&state.presence.kv) = None;
}

fn user_key(user: &str) -> String {
    format!("u.{user}")
}

fn edge_key(edge: &str) -> String {
    format!("e.{edge}")
}

/// Writes dirty users and this edge's heartbeat until shutdown; on shutdown
/// takes this edge's connections out of every record it is in.
pub(crate) async fn run(state: EdgeState) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut kv: Option<kv::Store> = None;
    let presence = &state.presence;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            () = presence.wake.notified() => {}
            _ = heartbeat.tick() => {}
        }
        if kv.is_none() {
            kv = bucket(&state).await.ok();
        }
        let Some(b) = kv.as_ref() else {
            continue;
        };
        let now = msgr_core::time::now_ms();
        if b.put(edge_key(&state.edge_id), now.to_string().into())
            .await
            .is_err()
        {
            kv = None;
            forget_bucket(&state);
            continue;
        }
        let mut dirty: Vec<String> = lock(&presence.dirty).drain().collect();
        while let Some(user) = dirty.pop() {
            let here = lock(&presence.counts).get(&user).copied().unwrap_or(0);
            match write(b, &state.edge_id, &user, here).await {
                Ok(record) => publish(&state, &user, &record).await,
                Err(e) => {
                    // Kept for the next round (the heartbeat tick at the latest).
                    tracing::debug!(error = %e, "presence write failed; retrying");
                    let mut again = lock(&presence.dirty);
                    again.insert(user);
                    again.extend(dirty.drain(..));
                    drop(again);
                    kv = None;
                    forget_bucket(&state);
                    break;
                }
            }
        }
    }
    // Leaving: this edge's users are offline unless another edge holds them.
    if let Some(b) = kv {
        let users: Vec<String> = lock(&presence.counts).keys().cloned().collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for user in users {
                if let Ok(r) = write(&b, &state.edge_id, &user, 0).await {
                    publish(&state, &user, &r).await;
                }
            }
        })
        .await;
    }
}

/// Sets this edge's connection count of `user` in their record.
async fn write(b: &kv::Store, edge: &str, user: &str, here: u32) -> Result<Record, String> {
    for _ in 0..8 {
        let entry = b.entry(user_key(user)).await.map_err(|e| e.to_string())?;
        let (mut record, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<Record>(&e.value).unwrap_or_default(),
                Some(e.revision),
            ),
            Some(e) => (Record::default(), Some(e.revision)),
            None => (Record::default(), None),
        };
        let was_online = !record.edges.is_empty();
        if here == 0 {
            record.edges.remove(edge);
        } else {
            record.edges.insert(edge.to_owned(), here);
        }
        // Last seen: when the last connection closed, or (while online)
        // when one opened, so an edge that crashes leaves a sensible time.
        if here > 0 || was_online {
            record.last_seen_ms = msgr_core::time::now_ms();
        }
        let value = Bytes::from(serde_json::to_vec(&record).map_err(|e| e.to_string())?);
        let done = match revision {
            Some(r) => b.update(user_key(user), value, r).await.is_ok(),
            None => b.create(user_key(user), value).await.is_ok(),
        };
        if done {
            return Ok(record);
        }
        // Another edge wrote between: read again.
    }
    Err("presence record kept changing".to_owned())
}

async fn publish(state: &EdgeState, user: &str, record: &Record) {
    let online = live_edges(state, record).await;
    let e = pb::PresenceEvent {
        user_id: user.to_owned(),
        online,
        last_seen_ms: record.last_seen_ms,
        hidden: false,
        hidden_from: None,
    };
    let _ = state
        .nats
        .publish(subject::presence(user), e.encode_to_vec().into())
        .await;
}

/// Whether any edge in `record` holds a connection and is alive.
async fn live_edges(state: &EdgeState, record: &Record) -> bool {
    let now = msgr_core::time::now_ms();
    for (edge, n) in &record.edges {
        if *n == 0 {
            continue;
        }
        if *edge == state.edge_id {
            return true;
        }
        let cached = lock(&state.presence.heartbeats)
            .get(edge)
            .filter(|(_, at)| at.elapsed() < Duration::from_secs(5))
            .map(|(ms, _)| *ms);
        let beat = match cached {
            Some(ms) => ms,
            None => {
                let Ok(b) = bucket(state).await else {
                    return true;
                };
                let ms = match b.get(edge_key(edge)).await {
                    Ok(Some(v)) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
                    _ => 0,
                };
                let mut hb = lock(&state.presence.heartbeats);
                if hb.len() > 1024 {
                    hb.clear();
                }
                hb.insert(edge.clone(), (ms, Instant::now()));
                ms
            }
        };
        if now - beat < EDGE_DEAD_AFTER_MS {
            return true;
        }
    }
    false
}

/// The current presence of `user`, read from the bucket.
async fn current(state: &EdgeState, user: &str) -> pb::PresenceEvent {
    let record = match bucket(state).await {
        Ok(b) => match b.get(user_key(user)).await {
            Ok(Some(v)) => serde_json::from_slice::<Record>(&v).unwrap_or_default(),
            _ => Record::default(),
        },
        Err(_) => Record::default(),
    };
    pb::PresenceEvent {
        user_id: user.to_owned(),
        online: live_edges(state, &record).await,
        last_seen_ms: record.last_seen_ms,
        hidden: false,
        hidden_from: None,
    }
}

/// Makes sure this edge follows `user`'s presence events; returns a signal
/// that turns true once the subscription is in place.
fn subscribe(state: &EdgeState, user: &str) -> tokio::sync::watch::Receiver<bool> {
    let mut subs = lock(&state.presence.subs);
    if let Some(s) = subs.get(user) {
        return s.ready.clone();
    }
    let (tx, ready) = tokio::sync::watch::channel(false);
    let (st, subject) = (state.clone(), subject::presence(user));
    let task = tokio::spawn(async move {
        let mut sub = match st.nats.subscribe(subject).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "presence subscription failed");
                return;
            }
        };
        // The server has the interest before the first state is read.
        let _ = st.nats.flush().await;
        let _ = tx.send(true);
        while let Some(msg) = sub.next().await {
            if let Ok(e) = pb::PresenceEvent::decode(msg.payload) {
                st.presence.dispatch(&e);
            }
        }
    });
    subs.insert(
        user.to_owned(),
        Sub {
            task: task.abort_handle(),
            ready: ready.clone(),
        },
    );
    ready
}

/// # `{"type":"presence","user_ids":[…]}`
/// Watches the users the workers allow (the others are left out, with no
/// error: whether someone hides their presence is theirs to know) and
/// answers with their state now.
pub(super) async fn watch(
    state: &EdgeState,
    session: &Arc<Session>,
    user_ids: Vec<String>,
) -> Result<(), super::frame::FrameError> {
    if !state.config.presence {
        return Ok(()); // turned off on this edge: nothing to tell
    }
    if state.limits.read(&session.user_id).is_err() {
        crate::limit::counted("presence");
        return Err(super::frame::FrameError::new(
            "rate_limited",
            "too many presence requests",
        ));
    }
    let mut ids: Vec<String> = user_ids
        .into_iter()
        .filter(|u| msgr_core::id::is_user_id(u) && *u != session.user_id)
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        state.presence.watch(session, &[]); // watching nobody now
        return Ok(());
    }
    let allowed: pb::PresenceAllowed = msgr_nats::rpc::call(
        &state.nats,
        subject::rpc::PRESENCE_ALLOWED,
        &pb::PresenceAllowedRequest {
            caller_id: session.user_id.clone(),
            user_ids: ids,
        },
        state.rpc_timeout(),
    )
    .await
    .map_err(|_| super::frame::FrameError::new("unavailable", "presence is unavailable; retry"))?;
    state.presence.watch(session, &allowed.user_ids);
    let ready: Vec<_> = allowed
        .user_ids
        .iter()
        .map(|u| subscribe(state, u))
        .collect();
    let state = state.clone();
    let session = Arc::clone(session);
    tokio::spawn(async move {
        for (u, mut ready) in allowed.user_ids.iter().zip(ready) {
            // Subscribed first, so no change after this read is missed.
            let _ = tokio::time::timeout(Duration::from_secs(2), ready.wait_for(|r| *r)).await;
            let e = current(&state, u).await;
            session.post(encode(&presence_frame(&e)));
        }
    });
    Ok(())
}
