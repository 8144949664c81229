//! End-to-end tests: real nats-server (JetStream), real worker and edge,
//! SQLite on disk, real HTTP and WebSocket clients. One binary, one module
//! per area.

mod auth;
mod backup;
mod bad_input;
mod bus_auth;
mod bus_restart;
mod changes;
mod contract;
mod direct;
mod fuzz;
mod groups;
mod hardening;
mod history;
mod integrators;
mod limits;
mod media;
mod receipts;
mod resilience;
mod social;
mod tls;
mod users;
mod websocket;

use std::time::Duration;

/// Generous bound for anything that should happen "at once".
pub(crate) const T: Duration = Duration::from_secs(10);
