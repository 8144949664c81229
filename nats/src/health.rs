//! What keeps a process from making progress right now, for `/healthz`.
//!
//! Each part of a process that can get stuck (the NATS link, the bus
//! definitions, the store, a partition's lease) reports a problem under its
//! own key while it lasts and clears it once it is gone. `/healthz` answers
//! 200 when nothing is reported and 503 with every problem otherwise, so an
//! orchestrator or load balancer sees why, not only that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The current problems of one process; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    problems: Arc<Mutex<BTreeMap<String, (String, Instant)>>>,
}

impl Health {
    /// A process with no problems (exported as `msgr_health_problems`, the
    /// number of current problems, so it can be alerted on).
    #[must_use]
    pub fn new() -> Self {
        metrics::gauge!("msgr_health_problems").set(0.0);
        Self::default()
    }

    /// Reports (or updates) the problem under `key`. The time it started is
    /// kept across updates, so the report says how long it has lasted.
    pub fn set(&self, key: &str, problem: impl Into<String>) {
        let mut p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        let problem = problem.into();
        match p.get_mut(key) {
            Some(entry) => entry.0 = problem,
            None => {
                p.insert(key.to_owned(), (problem, Instant::now()));
            }
        }
        metrics::gauge!("msgr_health_problems").set(p.len() as f64);
    }

    /// The problem under `key` is gone.
    pub fn clear(&self, key: &str) {
        let mut p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        if p.remove(key).is_some() {
            metrics::gauge!("msgr_health_problems").set(p.len() as f64);
        }
    }

    /// Clears every key that starts with `prefix`.
    pub fn clear_prefix(&self, prefix: &str) {
        let mut p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        p.retain(|k, _| !k.starts_with(prefix));
        metrics::gauge!("msgr_health_problems").set(p.len() as f64);
    }

    /// Whether `key` currently has a problem.
    #[must_use]
    pub fn has(&self, key: &str) -> bool {
        let p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        p.contains_key(key)
    }

    /// Every current problem as `"<key>: <problem> (for <n> s)"`, sorted by key.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        p.iter()
            .map(|(k, (problem, since))| {
                format!("{k}: {problem} (for {} s)", since.elapsed().as_secs())
            })
            .collect()
    }

    /// The `/healthz` answer: HTTP status and JSON body.
    #[must_use]
    pub fn report(&self) -> (u16, String) {
        let problems = self.problems();
        if problems.is_empty() {
            return (200, r#"{"status":"ready"}"#.to_owned());
        }
        let list = problems
            .iter()
            .map(|p| json_string(p))
            .collect::<Vec<_>>()
            .join(",");
        (
            503,
            format!(r#"{{"status":"unhealthy","problems":[{list}]}}"#),
        )
    }
}

/// A JSON string literal (msgr-core has no JSON dependency of its own).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_reported_until_cleared() {
        let h = Health::new();
        assert_eq!(h.report().0, 200);
        h.set("nats", "disconnected");
        h.set("partition 3", "lease store: \"no responders\"");
        let (status, body) = h.report();
        assert_eq!(status, 503);
        assert!(body.contains(r#""nats: disconnected (for 0 s)""#), "{body}");
        assert!(body.contains(r#"lease store: \"no responders\""#), "{body}");
        h.clear("nats");
        h.clear_prefix("partition ");
        assert_eq!(h.report(), (200, r#"{"status":"ready"}"#.to_owned()));
    }
}
