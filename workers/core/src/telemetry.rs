//! Logging and metrics set-up shared by the binaries.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs a `tracing` subscriber; `RUST_LOG` overrides `default_filter`.
/// Safe to call more than once (later calls do nothing).
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Latency buckets (seconds) fine enough for sub-millisecond hops, and dense
/// between 2 and 25 ms so a p99 near a 10 ms target can be told from 20 ms.
/// The coarser boundaries of earlier releases are all kept.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.002_5, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder, installed on first use. One per
/// process: in-process test apps share it, which only merges their counts.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_batch_size".to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_batches".to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is already global; then ours stays
            // unused and /metrics renders empty, which is visible, not silent.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// The `/metrics` page: this process's CPU, memory and open files (read from
/// `/proc/self` now, under the names Prometheus' own clients use, so the
/// usual dashboards and alerts apply), then every recorded metric.
#[must_use]
pub fn render() -> String {
    if let Some(p) = ProcessStats::read() {
        metrics::gauge!("process_cpu_seconds_total").set(p.cpu_seconds);
        metrics::gauge!("process_resident_memory_bytes").set(p.rss_bytes as f64);
        metrics::gauge!("process_open_fds").set(p.open_fds as f64);
    }
    prometheus().render()
}

/// Announces what this process is: `msgr_build_info{role,version,id} 1`
/// (`id`: the worker's instance id, the edge's edge id).
pub fn build_info(role: &'static str, id: &str) {
    metrics::gauge!("msgr_build_info", "role" => role, "version" => env!("CARGO_PKG_VERSION"), "id" => id.to_owned())
        .set(1.0);
}

struct ProcessStats {
    cpu_seconds: f64,
    rss_bytes: u64,
    open_fds: usize,
}

impl ProcessStats {
    /// `None` where there is no `/proc` (not Linux).
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) follow ')'.
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        let pages: u64 = f.get(21)?.parse().ok()?;
        Some(Self {
            // USER_HZ is 100 on every Linux this runs on.
            cpu_seconds: ticks / 100.0,
            rss_bytes: pages * 4096,
            open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reports_cpu_memory_and_files() {
        let p = ProcessStats::read().expect("/proc/self");
        assert!(p.rss_bytes > 1024 * 1024, "{} bytes", p.rss_bytes);
        assert!(p.open_fds >= 3);
        assert!(p.cpu_seconds >= 0.0);
    }
}
