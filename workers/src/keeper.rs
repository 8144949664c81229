//! The bus keeper: re-creates what this worker depends on whenever the bus
//! may have lost it, not only at start-up.
//!
//! A restarted nats-server may come back without a stream, a consumer or a
//! bucket (memory storage, a wiped store, an operator's mistake). The keeper
//! checks every definition right after each reconnect, when a role reports
//! an error that suggests something is missing (`bus_check`), and every
//! [`EVERY`] otherwise. Creating is idempotent, so several workers doing it
//! at once is harmless. A failure is reported in `/healthz` under `bus` and
//! retried; a definition that conflicts with this worker's configuration
//! (another partition count) stops the worker, as it would at start.

use std::sync::Arc;
use std::time::Duration;

use msgr_nats::connect::Link;
use msgr_nats::stream::EnsureError;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// How often the definitions are checked with nothing else prompting it.
const EVERY: Duration = Duration::from_secs(10);
/// Retry delay while checks fail.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until `shutdown`.
///
/// # Errors
/// A definition on the bus that conflicts with this worker's configuration.
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    mut link: watch::Receiver<Link>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut generation = link.borrow().generation();
    let mut failing = false;
    loop {
        let wait = if failing { RETRY } else { EVERY };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
            () = ctx.bus_check.notified() => {}
            changed = link.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let now = link.borrow_and_update().clone();
                // Only a new connection is news; a drop is reported by the
                // link watcher and checked once it is back.
                if !now.is_up() || now.generation() == generation {
                    continue;
                }
                generation = now.generation();
                tracing::info!("reconnected to NATS; checking streams, consumers and buckets");
            }
        }
        if !link.borrow().is_up() {
            continue;
        }
        match ctx.bus.ensure(&ctx.js).await {
            Ok(_) => {
                if failing {
                    tracing::info!("bus definitions are in place again");
                }
                failing = false;
                ctx.health.clear("bus");
            }
            Err(
                e @ (EnsureError::PartitionMismatch { .. } | EnsureError::LeaseTtlMismatch { .. }),
            ) => {
                ctx.health.set("bus", e.to_string());
                return Err(anyhow::anyhow!(
                    "bus definitions conflict with this worker: {e}"
                ));
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "checking the bus failed; retrying");
                }
                failing = true;
                ctx.health
                    .set("bus", format!("cannot check or create streams: {e}"));
            }
        }
    }
}
