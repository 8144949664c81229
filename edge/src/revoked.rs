//! Revoked sessions, as every edge sees them: a watch on the KV bucket
//! `MSGR_REVOKED` (its history first, then each new revocation as the
//! account service puts it), so a revoked token stops working here within
//! moments and the WebSockets it opened are closed.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::state::EdgeState;

/// Close code of a WebSocket whose session was revoked (application range:
/// the client should not reconnect with that token).
pub const SESSION_REVOKED: u16 = 4001;

/// Revocations held in memory at most (they age out with the bucket's).
const MAX_HELD: usize = 1_000_000;

/// Revoked session ids, with when this edge learned of each.
#[derive(Default)]
pub struct Revocations {
    map: RwLock<HashMap<String, Instant>>,
}

impl Revocations {
    /// Whether `session_id` was revoked.
    pub fn contains(&self, session_id: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(session_id)
    }

    fn insert(&self, session_id: String) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_HELD {
            let kept = msgr_nats::stream::REVOCATION_KEPT;
            map.retain(|_, at| at.elapsed() < kept);
        }
        map.insert(session_id, Instant::now());
    }
}

/// Follows `MSGR_REVOKED` until shutdown, watching again after any error
/// (the history replays, so nothing is missed); reports itself unhealthy
/// while it cannot watch.
pub async fn follow(state: EdgeState) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        match watch_once(&state).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                state
                    .health
                    .set("revocations", format!("cannot watch revoked sessions: {e}"));
                tracing::debug!(error = %e, "revocations watch failed");
            }
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn watch_once(state: &EdgeState) -> Result<(), String> {
    let bucket = state
        .js
        .get_key_value(msgr_nats::stream::REVOKED_BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    let mut watch = bucket
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    state.health.clear("revocations");
    loop {
        let entry = tokio::select! {
            () = state.shutdown.cancelled() => return Ok(()),
            e = watch.next() => e,
        };
        let entry = match entry {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the watch ended".to_owned()),
        };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            continue;
        }
        let user_id = String::from_utf8_lossy(&entry.value).into_owned();
        let session_id = entry.key;
        state.revoked.insert(session_id.clone());
        let closed = state
            .inbox
            .close_session(&user_id, &session_id, SESSION_REVOKED);
        if closed > 0 {
            tracing::info!(user = %user_id, closed, "closed the WebSockets of a revoked session");
        }
    }
}
