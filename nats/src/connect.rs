//! One way to connect for every process: any of several servers, reconnect
//! forever with a short capped backoff, and the link's state as a watch so
//! a process can report it (`/healthz`) and react to a reconnect (re-check
//! the streams and buckets it depends on: the server may have lost them).

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;

/// The state of a process's NATS link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected; `generation` counts connections (1 for the first), so a
    /// watcher can tell a reconnect that happened while it was busy.
    Up { generation: u64 },
    /// Lost at `since`; the client is reconnecting.
    Down { since: Instant, generation: u64 },
}

impl Link {
    /// Whether the link is up.
    #[must_use]
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up { .. })
    }

    /// Connections made so far.
    #[must_use]
    pub fn generation(&self) -> u64 {
        match self {
            Self::Up { generation } | Self::Down { generation, .. } => *generation,
        }
    }
}

/// Splits `url` on commas: `nats://a:4222,nats://b:4222` names a cluster's
/// seed servers; the client learns the rest from them and fails over.
#[must_use]
pub fn server_list(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Delay before reconnect attempt `n`: at once, then doubling from 50 ms to
/// at most 1 s, with jitter so a fleet does not reconnect in lockstep. The
/// client's default grows to 4 s, which is most of a lease TTL.
#[must_use]
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts.saturating_sub(2))
        .unwrap_or(u32::MAX)
        .min(10);
    let base = Duration::from_millis(50u64.saturating_mul(1u64 << exp)).min(Duration::from_secs(1));
    let jitter = u64::from(rand_u16()) % (base.as_millis() as u64 / 5 + 1);
    base + Duration::from_millis(jitter)
}

/// A little randomness without a dependency: the low bits of the clock.
fn rand_u16() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.subsec_nanos() >> 7) as u16)
        .unwrap_or(0)
}

/// Connects as `name` to any server of `url` (comma-separated), retrying
/// until one answers, with `options` applied first (capacities, auth).
/// Returns the client and a watch of its [`Link`].
///
/// # Errors
/// A malformed URL.
pub async fn connect(
    url: &str,
    name: &str,
    options: ConnectOptions,
) -> Result<(Client, watch::Receiver<Link>), async_nats::ConnectError> {
    let (tx, rx) = watch::channel(Link::Down {
        since: Instant::now(),
        generation: 0,
    });
    let name_owned = name.to_owned();
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        // A connect to a server cut off the network hangs until this, before
        // the next server in the list is tried.
        .connection_timeout(Duration::from_secs(2))
        // A server that stops answering (hung, or cut off the network) is left
        // for another after two unanswered pings: ~4-6 s, not the default's
        // minutes. (At 4 s the chaos suite saw ~14 s to notice, then 5 s of
        // connect timeout against the same dead node: ~20 s of stall.)
        .ping_interval(Duration::from_secs(2))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let tx = tx.clone();
            let name = name_owned.clone();
            async move {
                match event {
                    Event::Connected => {
                        tx.send_modify(|l| {
                            *l = Link::Up {
                                generation: l.generation() + 1,
                            };
                        });
                        tracing::info!(client = %name, "NATS connected");
                    }
                    Event::Disconnected => {
                        tx.send_modify(|l| {
                            if l.is_up() {
                                *l = Link::Down {
                                    since: Instant::now(),
                                    generation: l.generation(),
                                };
                            }
                        });
                        tracing::warn!(client = %name, "NATS disconnected; reconnecting");
                    }
                    Event::LameDuckMode => {
                        tracing::info!(client = %name, "NATS server entering lame duck mode")
                    }
                    other => tracing::warn!(client = %name, event = %other, "NATS event"),
                }
            }
        })
        .connect(server_list(url))
        .await?;
    Ok((client, rx))
}

/// Reports the link in `health` under `"nats"` until `stop` is cancelled.
pub async fn report_link(
    mut link: watch::Receiver<Link>,
    health: crate::health::Health,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let current = link.borrow_and_update().clone();
        match current {
            Link::Up { .. } => health.clear("nats"),
            Link::Down { generation: 0, .. } => health.set("nats", "not connected to NATS yet"),
            Link::Down { .. } => health.set("nats", "disconnected from NATS; reconnecting"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            r = link.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_split_on_commas() {
        assert_eq!(
            server_list("nats://a:1, nats://b:2,"),
            vec!["nats://a:1".to_owned(), "nats://b:2".to_owned()]
        );
        assert_eq!(server_list("nats://a:1"), vec!["nats://a:1".to_owned()]);
    }

    #[test]
    fn reconnects_start_at_once_and_stay_under_a_second_and_a_fifth() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert!(reconnect_delay(2) >= Duration::from_millis(50));
        for n in 2..200 {
            assert!(
                reconnect_delay(n) <= Duration::from_millis(1_200),
                "attempt {n}"
            );
        }
        assert!(reconnect_delay(30) >= Duration::from_secs(1));
    }
}
