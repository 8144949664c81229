//! Edge configuration: defaults ← TOML file (`--config`) ← `MSGR_*` env.

use std::path::PathBuf;

use msgr_core::config::NatsConfig;
use serde::{Deserialize, Serialize};

/// Everything an edge process needs. It has no database settings: it has no database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeConfig {
    /// Public HTTP/WebSocket address.
    pub listen: String,
    pub nats: NatsConfig,
    /// Name of this edge in logs (random by default).
    pub edge_id: Option<String>,
    /// Timeout of request/reply calls to workers.
    pub rpc_timeout_ms: u64,
    /// How long to wait at start for a worker to answer the bootstrap call.
    pub bootstrap_timeout_secs: u64,
    /// Concurrent WebSocket connections this edge accepts.
    pub max_connections: usize,
    /// How events reach this edge: `routed` (default; the workers are told
    /// who is connected here and send one message per batch to this edge's
    /// subject), `per_user` (one subscription per connected user to
    /// `msgr.v1.deliver.user.<user>`) or `wildcard` (one subscription to
    /// every user inbox: every edge receives every event; for one or two
    /// edges).
    pub inbox: crate::ws::InboxMode,
    /// Track who is online (each user's first connection here and their
    /// last one leaving cost a write to the KV bucket `MSGR_PRESENCE`).
    /// Off: nobody on this edge shows as online, and presence watches get
    /// no answers (as Synapse's `presence.enabled: false`).
    pub presence: bool,
    /// Frames queued for one connection before it counts as slow (closed with 1013).
    pub outbox_capacity: usize,
    /// Sends of one connection awaiting their `ack` at once.
    pub max_in_flight: usize,
    /// Bytes of those sends the edge keeps to publish again if the bus lost
    /// them (sends past it get `rate_limited` until acks arrive).
    pub max_in_flight_bytes: usize,
    /// A send with no `ack` after this long is looked up in the store: acked
    /// if it is stored, published again if not (the ack event may be lost).
    pub ack_check_ms: u64,
    /// Largest WebSocket message accepted (bigger ones close the socket with 1009).
    pub max_frame_bytes: usize,
    /// A connection whose socket accepts no data for this long is closed (1013).
    pub slow_client_timeout_ms: u64,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Serve the web client from this directory instead of the copy built
    /// into the binary (for working on the client without rebuilding).
    pub web_dir: Option<PathBuf>,
    /// Anchors the local media default (`<data_dir>/media`).
    pub data_dir: PathBuf,
    /// Where media bytes live; must match the workers'.
    pub media: msgr_core::media::MediaStoreConfig,
    /// Largest upload (413 past it).
    pub max_media_bytes: u64,
    /// Upload part size: what the edge buffers per part (at most 2 in flight).
    pub media_part_bytes: usize,
    /// Rate limits (`[limits]`).
    pub limits: crate::limit::LimitsConfig,
    /// Serve HTTPS/WSS with this certificate and key (`[tls]`; plain HTTP without).
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".to_owned(),
            nats: NatsConfig::default(),
            edge_id: None,
            rpc_timeout_ms: 5_000,
            bootstrap_timeout_secs: 60,
            max_connections: 19_000,
            inbox: crate::ws::InboxMode::Routed,
            presence: true,
            outbox_capacity: 1_024,
            max_in_flight: 1_024,
            max_in_flight_bytes: 4 * 1024 * 1024,
            ack_check_ms: 3_000,
            max_frame_bytes: 256 * 1024,
            slow_client_timeout_ms: 5_000,
            max_body_bytes: 64 * 1024,
            web_dir: None,
            data_dir: PathBuf::from("./data"),
            media: msgr_core::media::MediaStoreConfig::default(),
            max_media_bytes: 100 * 1024 * 1024,
            media_part_bytes: 5 * 1024 * 1024,
            limits: crate::limit::LimitsConfig::default(),
            tls: None,
        }
    }
}
