//! Shared by the bench binaries: latency summaries and process readings,
//! clients of the public API, and the chaos suite's checker.

pub mod chaos;
pub mod client;
pub mod prom;
pub mod report;
pub mod stats;
