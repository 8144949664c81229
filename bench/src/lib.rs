//! Shared by the bench binaries: latency summaries and process readings.

pub mod stats;
