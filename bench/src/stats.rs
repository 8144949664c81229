//! Latency summaries and process CPU/RSS readings from /proc.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Summarises latencies given in microseconds.
pub fn summarize(mut us: Vec<u64>) -> Summary {
    if us.is_empty() {
        return Summary::default();
    }
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        us[i] as f64 / 1000.0
    };
    Summary {
        count: us.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: us[us.len() - 1] as f64 / 1000.0,
    }
}

/// The machine a run measured: core count and CPU model, for the JSON results.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    serde_json::json!({
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "cpu": cpu,
    })
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// [`cpu_seconds`] of a process plus its live children: PostgreSQL does its
/// work in backends forked by the postmaster.
pub fn cpu_seconds_with_children(pid: u32) -> Option<f64> {
    let own = cpu_seconds(pid)?;
    let children: f64 = children_of(pid)?.into_iter().filter_map(cpu_seconds).sum();
    Some(own + children)
}

/// The live processes whose parent is `pid`.
fn children_of(pid: u32) -> Option<Vec<u32>> {
    Some(
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|child| parent_of(*child) == Some(pid))
            .collect(),
    )
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Bytes a process (and its live children) caused to be written to storage
/// so far (`write_bytes` in `/proc/PID/io`: what reached the block layer,
/// page cache writeback included).
pub fn write_bytes_with_children(pid: u32) -> Option<u64> {
    let own = write_bytes(pid)?;
    let children: u64 = children_of(pid)?.into_iter().filter_map(write_bytes).sum();
    Some(own + children)
}

fn write_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// What the server processes spent, all together, between two readings:
/// CPU seconds and bytes written to storage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    pub cpu_secs: f64,
    pub write_bytes: u64,
}

impl Spent {
    pub fn now(procs: &[(String, u32)]) -> Self {
        procs.iter().fold(Self::default(), |acc, (_, pid)| Self {
            cpu_secs: acc.cpu_secs + cpu_seconds_with_children(*pid).unwrap_or(0.0),
            write_bytes: acc.write_bytes + write_bytes_with_children(*pid).unwrap_or(0),
        })
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU use of the named processes between two readings.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    procs: Vec<(String, u32, f64)>,
    started: std::time::Instant,
}

/// One process's share over a window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUsage {
    pub name: String,
    /// Cores used on average (1.0 = one full core).
    pub cpu_cores: f64,
    pub rss_mib: f64,
}

impl CpuMeter {
    pub fn start(procs: &[(String, u32)]) -> Self {
        let procs = procs
            .iter()
            .map(|(n, p)| (n.clone(), *p, cpu_seconds_with_children(*p).unwrap_or(0.0)))
            .collect();
        Self {
            procs,
            started: std::time::Instant::now(),
        }
    }

    pub fn stop(&self) -> Vec<ProcUsage> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.procs
            .iter()
            .map(|(name, pid, before)| ProcUsage {
                name: name.clone(),
                cpu_cores: (cpu_seconds_with_children(*pid).unwrap_or(*before) - before) / secs,
                rss_mib: rss_kib(*pid).unwrap_or(0) as f64 / 1024.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let s = summarize((1..=1000).map(|v| v * 1000).collect());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms),
            (1000, 500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(summarize(Vec::new()).count, 0);
    }

    #[test]
    fn this_process_has_cpu_and_memory_readings() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(
            write_bytes_with_children(me).is_some(),
            "/proc/self/io readable"
        );
        assert!(rss_kib(me).is_some_and(|r| r > 0));
    }
}
