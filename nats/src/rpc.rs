//! Protobuf request/reply over core NATS. A failed request is answered with
//! an empty body and the headers `Msgr-Error-Code` / `Msgr-Error-Message`,
//! so success replies stay plain protobuf messages.

use std::time::Duration;

use async_nats::HeaderMap;
use prost::Message;

/// Header carrying the error code of a failed request.
pub const ERROR_CODE: &str = "Msgr-Error-Code";
/// Header carrying the human-readable error message.
pub const ERROR_MESSAGE: &str = "Msgr-Error-Message";

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The service refused it, with an API error code.
    #[error("{code}: {message}")]
    Remote { code: String, message: String },
    /// No worker answered (none running, or too slow).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The reply was not the expected message.
    #[error("bad reply: {0}")]
    BadReply(String),
}

/// The headers of an error reply.
#[must_use]
pub fn error_headers(code: &str, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ERROR_CODE, code);
    // Header values cannot hold newlines.
    h.insert(ERROR_MESSAGE, message.replace(['\r', '\n'], " ").as_str());
    h
}

/// Sends `req` to `subject` and decodes the reply as `Resp`.
///
/// # Errors
/// [`RpcError::Remote`] for a refusal, [`RpcError::Unavailable`] if nobody
/// answered within `timeout`, [`RpcError::BadReply`] for an undecodable reply.
pub async fn call<Req, Resp>(
    client: &async_nats::Client,
    subject: &'static str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RpcError>
where
    Req: Message,
    Resp: Message + Default,
{
    let started = std::time::Instant::now();
    let service = subject.strip_prefix("msgr.v1.rpc.").unwrap_or(subject);
    let result = call_inner(client, subject, req, timeout).await;
    metrics::histogram!("msgr_rpc_seconds", "service" => service)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let kind = match e {
            RpcError::Remote { .. } => "refused",
            RpcError::Unavailable(_) => "unavailable",
            RpcError::BadReply(_) => "bad_reply",
        };
        metrics::counter!("msgr_rpc_errors_total", "service" => service, "kind" => kind)
            .increment(1);
    }
    result
}

async fn call_inner<Req, Resp>(
    client: &async_nats::Client,
    subject: &'static str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RpcError>
where
    Req: Message,
    Resp: Message + Default,
{
    let request = async_nats::Request::new()
        .payload(req.encode_to_vec().into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject, request)
        .await
        .map_err(|e| RpcError::Unavailable(e.to_string()))?;
    if let Some(code) = reply.headers.as_ref().and_then(|h| h.get(ERROR_CODE)) {
        let message = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(ERROR_MESSAGE))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        return Err(RpcError::Remote {
            code: code.as_str().to_owned(),
            message,
        });
    }
    Resp::decode(reply.payload).map_err(|e| RpcError::BadReply(e.to_string()))
}
