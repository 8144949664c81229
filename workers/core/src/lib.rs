//! The messenger's domain, shared by the edge and the workers.
//!
//! # Layout
//! - [`id`]: id generation and parsing (users, conversations, messages), partitioning.
//! - [`validate`]: input rules from the client contract (usernames, passwords, text size).
//! - [`time`]: clock and the RFC 3339 millisecond format of the API.
//! - [`auth`]: argon2id password hashing and PASETO v4.public tokens.
//! - [`store`]: the store port (what the workers need from a database) and, behind the
//!   `testing` feature, the conformance suite every adapter must pass.
//! - [`config`]: layered configuration (defaults, TOML file, `MSGR_` environment).
//! - [`telemetry`]: tracing and the Prometheus recorder.
//! - [`shutdown`]: the Ctrl-C / SIGTERM signal.

pub mod auth;
pub mod config;
pub mod id;
pub mod media;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod validate;
