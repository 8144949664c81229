//! Serving request/reply subjects: a queue subscription whose requests run
//! concurrently up to a bound, each answered with a protobuf body or error headers.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use msgr_nats::rpc::error_headers;
use msgr_nats::subject::WORKER_QUEUE;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// An API error: code and human text.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new("internal", "internal error")
    }
}

/// Decodes a request body; a malformed one is `invalid_request`.
pub(crate) fn decode<M: prost::Message + Default>(b: &Bytes) -> Result<M, Refusal> {
    M::decode(b.clone()).map_err(|e| Refusal::new("invalid_request", e.to_string()))
}

/// Room left in `max_payload` for the subject and headers of a reply.
const REPLY_HEADROOM: usize = 4 * 1024;

/// Answers requests on `subject` until `shutdown`, at most `concurrency` at once.
pub(crate) async fn serve<F, Fut>(
    client: async_nats::Client,
    subject: &'static str,
    concurrency: usize,
    shutdown: CancellationToken,
    handler: F,
) -> anyhow::Result<()>
where
    F: Fn(Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Refusal>> + Send + 'static,
{
    let mut sub = client
        .queue_subscribe(subject, WORKER_QUEUE.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {subject}: {e}"))?;
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(concurrency));
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply else { continue };
        // Waiting here (not spawning unboundedly) pushes back onto NATS, whose
        // per-subscription buffer is bounded too.
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let (client, handler) = (client.clone(), Arc::clone(&handler));
        tokio::spawn(async move {
            let mut res = handler(msg.payload).await;
            // Pages are bounded in bytes; should an answer still not fit the
            // bus, the requester is told at once instead of timing out.
            let max = client.server_info().max_payload;
            if matches!(&res, Ok(body) if max > 0 && body.len() + REPLY_HEADROOM > max) {
                tracing::error!(subject, "an answer does not fit the bus's max_payload");
                res = Err(Refusal::new("internal", "the answer is too large to send"));
            }
            let sent = match res {
                Ok(body) => client.publish(reply, body).await,
                Err(r) => {
                    client
                        .publish_with_headers(
                            reply,
                            error_headers(r.code, &r.message),
                            Bytes::new(),
                        )
                        .await
                }
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not send a reply");
            }
            drop(permit);
        });
    }
    let _ = sub.unsubscribe().await;
    Ok(())
}
