//! How events reach this edge's connections, in one of three modes
//! ([`InboxMode`]):
//!
//! - `routed` (default): one subscription per edge
//!   (`msgr.v2.deliver.edge.<edge>`), and the workers are told which users
//!   are connected here ([`super::routes`]): they send each edge one
//!   message per batch with every event for its users, and nothing for
//!   users elsewhere. A user's first connection here counts as reachable
//!   once a worker has confirmed the route. No per-user subscription,
//!   channel or task, and edges still scale out.
//! - `per_user`: one NATS subscription per *user* with connections
//!   here, not per connection. A user's devices on this edge share it; a
//!   small pump task copies each event (a refcounted `Bytes`) into every
//!   device's mailbox. It is made, and flushed to the server, before the
//!   user's first connection reads any frame, and dropped with the last one.
//!   NATS sends an edge only its own users' events, so edges scale out.
//! - `wildcard`: one subscription to every inbox (`msgr.v1.deliver.user.*`),
//!   made at start, and one dispatcher that routes events by subject to the
//!   users connected here and drops the rest. No per-user subscription,
//!   channel or task (about 40 % less memory per idle connection), but every
//!   edge receives every user's events: for one or two edges per NATS
//!   cluster, not for a fleet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::StreamExt;
use msgr_nats::subject;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell};

use super::mailbox::{Item, TRY_AGAIN_LATER};
use super::session::Session;

/// How an edge subscribes to inbox subjects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboxMode {
    #[default]
    Routed,
    PerUser,
    Wildcard,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Users = Mutex<HashMap<String, Arc<UserInbox>>>;

/// Users with at least one connection on this edge.
pub struct Inbox {
    mode: InboxMode,
    users: Arc<Users>,
    /// `wildcard`, `routed`: set when the one subscription ended; joins then fail.
    dead: Arc<std::sync::atomic::AtomicBool>,
    /// `routed`: tells the workers who is connected here.
    routes: Option<Arc<super::routes::Announcer>>,
}

struct UserInbox {
    sessions: Mutex<Vec<Arc<Session>>>,
    /// Set once events for this user flow to this edge.
    live: OnceCell<()>,
    /// Wakes the pump to stop (the last connection left); keeps the permit
    /// if the pump is not waiting yet.
    stop: Notify,
}

/// A connection's place in the inbox; leaving is dropping it.
pub(crate) struct Membership<'a> {
    inbox: &'a Inbox,
    entry: Arc<UserInbox>,
    session: Arc<Session>,
}

impl Inbox {
    /// Asks every connection of `user_id` here opened with session
    /// `session_id` to close with `code`; returns how many.
    pub fn close_session(&self, user_id: &str, session_id: &str, code: u16) -> usize {
        let Some(entry) = lock(&self.users).get(user_id).cloned() else {
            return 0;
        };
        let sessions = lock(&entry.sessions);
        let mut n = 0;
        for s in sessions.iter() {
            if s.session_id.as_deref() == Some(session_id) {
                s.mailbox.close(code);
                n += 1;
            }
        }
        n
    }

    /// An inbox in `mode`. In `wildcard` mode the one subscription is made
    /// here (and flushed), before the edge accepts connections.
    ///
    /// # Errors
    /// If the wildcard subscription cannot be made.
    pub async fn start(
        mode: InboxMode,
        nats: &async_nats::Client,
        link: tokio::sync::watch::Receiver<msgr_nats::connect::Link>,
        edge_id: &str,
    ) -> anyhow::Result<Self> {
        let users = Arc::new(Users::default());
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut routes = None;
        match mode {
            InboxMode::Wildcard => {
                let sub = nats.subscribe(subject::DELIVER_USER_ALL).await?;
                nats.flush().await?;
                tokio::spawn(dispatch(Arc::clone(&users), Arc::clone(&dead), sub));
            }
            InboxMode::Routed => {
                let sub = nats.subscribe(subject::v2::deliver_edge(edge_id)).await?;
                nats.flush().await?;
                tokio::spawn(dispatch_routed(Arc::clone(&users), Arc::clone(&dead), sub));
                let holds = {
                    let users = Arc::clone(&users);
                    move |u: &str| lock(&users).contains_key(u)
                };
                let connected = {
                    let users = Arc::clone(&users);
                    move || lock(&users).keys().cloned().collect::<Vec<_>>()
                };
                routes = Some(
                    super::routes::Announcer::start(
                        nats.clone(),
                        link,
                        edge_id.to_owned(),
                        Box::new(holds),
                        Box::new(connected),
                    )
                    .await?,
                );
            }
            InboxMode::PerUser => {}
        }
        Ok(Self {
            mode,
            users,
            dead,
            routes,
        })
    }

    /// Registers `session` for its user's events, subscribing if it is the
    /// user's first connection here (`per_user`). Returns once events flow.
    pub(crate) async fn join(
        &self,
        nats: &async_nats::Client,
        session: &Arc<Session>,
    ) -> Result<Membership<'_>, String> {
        if self.dead.load(std::sync::atomic::Ordering::Acquire) {
            return Err("the inbox subscription has ended".to_owned());
        }
        let user_id = &session.user_id;
        let entry = {
            let mut users = lock(&self.users);
            let entry = Arc::clone(users.entry(user_id.clone()).or_insert_with(|| {
                Arc::new(UserInbox {
                    sessions: Mutex::new(Vec::new()),
                    live: OnceCell::new(),
                    stop: Notify::new(),
                })
            }));
            lock(&entry.sessions).push(Arc::clone(session));
            entry
        };
        // Built before the await, so a failed subscribe still leaves cleanly.
        let membership = Membership {
            inbox: self,
            entry: Arc::clone(&entry),
            session: Arc::clone(session),
        };
        if let Some(routes) = &self.routes {
            // The first connection of a user here: reachable once a worker
            // knows the route (later ones find it known).
            entry
                .live
                .get_or_try_init(|| async {
                    routes.announce(user_id).await;
                    Ok::<(), String>(())
                })
                .await?;
        }
        if self.mode == InboxMode::PerUser {
            entry
                .live
                .get_or_try_init(|| async {
                    let sub = nats
                        .subscribe(subject::deliver_user(user_id))
                        .await
                        .map_err(|e| e.to_string())?;
                    nats.flush().await.map_err(|e| e.to_string())?;
                    tokio::spawn(pump(
                        Arc::clone(&self.users),
                        user_id.clone(),
                        Arc::clone(&entry),
                        sub,
                    ));
                    Ok::<(), String>(())
                })
                .await?;
        }
        Ok(membership)
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let mut users = lock(&self.inbox.users);
        let mut sessions = lock(&self.entry.sessions);
        sessions.retain(|s| !Arc::ptr_eq(s, &self.session));
        if sessions.is_empty() {
            forget(&mut users, &self.session.user_id, &self.entry);
            self.entry.stop.notify_one();
            if let Some(routes) = &self.inbox.routes {
                routes.changed(&self.session.user_id);
            }
        }
    }
}

/// Removes `user_id`'s entry if it is still `entry` (a newer one may have
/// replaced it), so the next connection of that user starts afresh.
fn forget(users: &mut HashMap<String, Arc<UserInbox>>, user_id: &str, entry: &Arc<UserInbox>) {
    if users.get(user_id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        users.remove(user_id);
    }
}

/// Asks every connection of `entry` to reconnect (1013).
fn close_all(entry: &UserInbox) {
    for s in lock(&entry.sessions).iter() {
        s.mailbox.close(TRY_AGAIN_LATER);
    }
}

fn deliver(entry: &UserInbox, payload: &bytes::Bytes) {
    for s in lock(&entry.sessions).iter() {
        // A full mailbox closes that connection; the others go on.
        s.mailbox.push(Item::Event(payload.clone()));
    }
}

/// `per_user`: one user's subscription → that user's connections.
async fn pump(
    users: Arc<Users>,
    user_id: String,
    entry: Arc<UserInbox>,
    mut sub: async_nats::Subscriber,
) {
    metrics::gauge!("msgr_edge_inbox_subscriptions").increment(1.0);
    loop {
        tokio::select! {
            biased;
            () = entry.stop.notified() => break,
            m = sub.next() => match m {
                Some(m) => deliver(&entry, &m.payload),
                None => {
                    // The client is gone for good. Forget this entry first, so a
                    // device joining now subscribes anew instead of sharing a dead
                    // subscription; then let the current ones reconnect.
                    forget(&mut lock(&users), &user_id, &entry);
                    close_all(&entry);
                    break;
                }
            },
        }
    }
    metrics::gauge!("msgr_edge_inbox_subscriptions").decrement(1.0);
    let _ = sub.unsubscribe().await;
}

/// `wildcard`: every inbox → the users connected here.
async fn dispatch(
    users: Arc<Users>,
    dead: Arc<std::sync::atomic::AtomicBool>,
    mut sub: async_nats::Subscriber,
) {
    while let Some(m) = sub.next().await {
        let Some(user) = subject::deliver_user_of(&m.subject) else {
            continue;
        };
        let entry = lock(&users).get(user).cloned();
        if let Some(entry) = entry {
            deliver(&entry, &m.payload);
        }
    }
    tracing::warn!("inbox subscription ended; closing every connection");
    dead.store(true, std::sync::atomic::Ordering::Release);
    for entry in lock(&users).values() {
        close_all(entry);
    }
}

/// `routed`: this edge's deliveries → the users they name.
async fn dispatch_routed(
    users: Arc<Users>,
    dead: Arc<std::sync::atomic::AtomicBool>,
    mut sub: async_nats::Subscriber,
) {
    use prost::Message as _;
    while let Some(m) = sub.next().await {
        let Ok(d) = msgr_schemas::pb::v1::EdgeDelivery::decode(m.payload) else {
            tracing::warn!("undecodable edge delivery");
            continue;
        };
        for item in d.items {
            let payload = item.delivery;
            for user in &item.users {
                let entry = lock(&users).get(user).cloned();
                if let Some(entry) = entry {
                    deliver(&entry, &payload);
                }
            }
        }
    }
    tracing::warn!("edge delivery subscription ended; closing every connection");
    dead.store(true, std::sync::atomic::Ordering::Release);
    for entry in lock(&users).values() {
        close_all(entry);
    }
}
