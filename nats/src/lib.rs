//! The bus: the one place where NATS subjects, streams and consumers are
//! defined, plus the small helpers every process uses on them.
//!
//! # Layout
//! - [`subject`]: every subject string (only this module spells them).
//! - [`stream`]: the `MSGR_IN` stream, per-partition sequencer consumers and
//!   the lease bucket, created idempotently by workers.
//! - [`rpc`]: protobuf request/reply with errors carried in headers.
//! - [`connect`]: connecting (several servers, quick reconnects, the link's state).
//! - [`health`]: what keeps a process from making progress, for `/healthz`.
//! - [`lease`]: a compare-and-set lease in a JetStream KV bucket, so each
//!   partition has exactly one active sequencer.

pub mod connect;
pub mod health;
pub mod lease;
pub mod rpc;
pub mod stream;
pub mod subject;
