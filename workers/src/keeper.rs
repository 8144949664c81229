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
                report_command_log(&ctx).await;
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

/// Publishes what the command stream holds and how far behind each
/// consumer that is not a sequencer's (an integrator's) is:
/// `msgr_command_log_messages`, `msgr_command_log_bytes` and
/// `msgr_integrator_backlog{consumer}` (commands it has not acked).
async fn report_command_log(ctx: &WorkerContext) {
    use futures_util::StreamExt as _;
    let Ok(mut stream) = ctx.js.get_stream(msgr_nats::stream::IN_STREAM).await else {
        return;
    };
    if let Ok(info) = stream.info().await {
        metrics::gauge!("msgr_command_log_messages").set(info.state.messages as f64);
        metrics::gauge!("msgr_command_log_bytes").set(info.state.bytes as f64);
    }
    let mut seen = std::collections::HashSet::new();
    let mut consumers = stream.consumers();
    while let Some(item) = consumers.next().await {
        let Ok(c) = item else {
            // A partial listing: leave last time's figures alone.
            return;
        };
        if c.name.starts_with("SEQ_") {
            continue;
        }
        let behind = c.num_pending + c.num_ack_pending as u64;
        metrics::gauge!("msgr_integrator_backlog", "consumer" => c.name.clone()).set(behind as f64);
        seen.insert(c.name);
    }
    // A consumer that is gone holds nothing any more (and must not go on
    // firing its alert).
    static REPORTED: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
        std::sync::Mutex::new(None);
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for gone in reported.iter().flatten().filter(|n| !seen.contains(*n)) {
        metrics::gauge!("msgr_integrator_backlog", "consumer" => gone.clone()).set(0.0);
    }
    *reported = Some(seen);
}
