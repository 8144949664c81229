//! This edge's interest in per-user inbox subjects.
//!
//! One NATS subscription per *user* with connections here, not per
//! connection: a user's devices on this edge share it, and one small pump
//! task copies each event (a refcounted `Bytes`) into every device's
//! mailbox. The subscription is made, and flushed to the server, before the
//! first connection of a user reads any frame, and dropped with the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::StreamExt;
use msgr_nats::subject;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::mailbox::{Item, TRY_AGAIN_LATER};
use super::session::Session;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Users with at least one connection on this edge.
#[derive(Default)]
pub struct Inbox {
    users: Mutex<HashMap<String, Arc<UserInbox>>>,
}

struct UserInbox {
    sessions: Mutex<Vec<Arc<Session>>>,
    /// Set once the subscription is live.
    live: OnceCell<()>,
    /// Stops the pump (the last connection left).
    stop: CancellationToken,
}

/// A connection's place in the inbox; leaving is dropping it.
pub(crate) struct Membership<'a> {
    inbox: &'a Inbox,
    user_id: String,
    entry: Arc<UserInbox>,
    session: Arc<Session>,
}

impl Inbox {
    /// Number of users with a live entry (for tests and metrics).
    pub fn users(&self) -> usize {
        lock(&self.users).len()
    }

    /// Registers `session` for its user's events, subscribing if it is the
    /// user's first connection here. Returns once events are flowing.
    pub(crate) async fn join(
        &self,
        nats: &async_nats::Client,
        session: &Arc<Session>,
    ) -> Result<Membership<'_>, String> {
        let user_id = session.user_id.clone();
        let entry = {
            let mut users = lock(&self.users);
            let entry = Arc::clone(users.entry(user_id.clone()).or_insert_with(|| {
                Arc::new(UserInbox {
                    sessions: Mutex::new(Vec::new()),
                    live: OnceCell::new(),
                    stop: CancellationToken::new(),
                })
            }));
            lock(&entry.sessions).push(Arc::clone(session));
            entry
        };
        // Built before the await, so a failed subscribe still leaves cleanly.
        let membership = Membership {
            inbox: self,
            user_id,
            entry: Arc::clone(&entry),
            session: Arc::clone(session),
        };
        entry
            .live
            .get_or_try_init(|| async {
                let sub = nats
                    .subscribe(subject::deliver_user(&membership.user_id))
                    .await
                    .map_err(|e| e.to_string())?;
                nats.flush().await.map_err(|e| e.to_string())?;
                metrics::gauge!("msgr_edge_inbox_subscriptions").increment(1.0);
                tokio::spawn(pump(Arc::clone(&entry), sub));
                Ok::<(), String>(())
            })
            .await?;
        Ok(membership)
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let mut users = lock(&self.inbox.users);
        let mut sessions = lock(&self.entry.sessions);
        sessions.retain(|s| !Arc::ptr_eq(s, &self.session));
        if sessions.is_empty() {
            if users
                .get(&self.user_id)
                .is_some_and(|e| Arc::ptr_eq(e, &self.entry))
            {
                users.remove(&self.user_id);
            }
            self.entry.stop.cancel();
        }
    }
}

async fn pump(entry: Arc<UserInbox>, mut sub: async_nats::Subscriber) {
    loop {
        tokio::select! {
            biased;
            () = entry.stop.cancelled() => break,
            m = sub.next() => match m {
                Some(m) => {
                    for s in lock(&entry.sessions).iter() {
                        // A full mailbox closes that connection; the others go on.
                        s.mailbox.push(Item::Event(m.payload.clone()));
                    }
                }
                None => {
                    // The client is gone for good: let devices reconnect elsewhere.
                    for s in lock(&entry.sessions).iter() {
                        s.mailbox.close(TRY_AGAIN_LATER);
                    }
                    break;
                }
            },
        }
    }
    metrics::gauge!("msgr_edge_inbox_subscriptions").decrement(1.0);
    let _ = sub.unsubscribe().await;
}
