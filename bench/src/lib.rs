//! Shared by the bench binaries: latency summaries and process readings.

pub mod prom;
pub mod stats;
