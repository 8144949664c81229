//! The servers' own latency histograms around a phase: scrape `/metrics`
//! before and after, subtract, and read percentiles off the buckets. This is
//! how a run says which hop a tail comes from (PubAck, the wait before the
//! sequencer, the store) without any instrumentation of its own.

use std::collections::BTreeMap;

use serde::Serialize;

/// One histogram's cumulative buckets (`le` upper bound, count), sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A server stage over one phase, in milliseconds. The percentiles are the
/// upper bounds of the buckets they fall in, so read them as "at most"; past
/// the last finite bound they are infinite (`null` in JSON).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stage {
    pub name: String,
    pub count: u64,
    pub mean_ms: f64,
    pub p50_le_ms: f64,
    pub p99_le_ms: f64,
}

/// The unlabelled `*_seconds` histograms in a Prometheus text exposition,
/// by name without the `_seconds` suffix. Labelled series (other than `le`)
/// are left out: the hot-path stages carry no labels.
pub fn histograms(text: &str) -> BTreeMap<String, Hist> {
    let mut out: BTreeMap<String, Hist> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Some((name, labels)) = series.split_once('{') {
            let Some(base) = name.strip_suffix("_seconds_bucket") else {
                continue;
            };
            let labels = labels.trim_end_matches('}');
            let Some(le) = labels
                .strip_prefix("le=\"")
                .and_then(|l| l.strip_suffix('"'))
            else {
                continue; // another label besides `le`
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                }
            };
            if let Ok(n) = value.parse::<f64>() {
                out.entry(base.to_owned())
                    .or_default()
                    .buckets
                    .push((le, n as u64));
            }
        } else if let Some(base) = series.strip_suffix("_seconds_sum") {
            if let Ok(v) = value.parse() {
                out.entry(base.to_owned()).or_default().sum = v;
            }
        } else if let Some(base) = series.strip_suffix("_seconds_count") {
            if let Ok(v) = value.parse::<f64>() {
                out.entry(base.to_owned()).or_default().count = v as u64;
            }
        }
    }
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out.retain(|_, h| !h.buckets.is_empty());
    out
}

/// What each histogram recorded between `before` and `after` (histograms
/// that recorded nothing are left out). A histogram missing from `before`
/// counts from zero, as after a restart of the server that exports it.
pub fn stages(before: &BTreeMap<String, Hist>, after: &BTreeMap<String, Hist>) -> Vec<Stage> {
    let empty = Hist::default();
    let mut out = Vec::new();
    for (name, a) in after {
        let b = before.get(name).unwrap_or(&empty);
        let count = a.count.saturating_sub(b.count);
        if count == 0 {
            continue;
        }
        let earlier = |le: f64| {
            b.buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0, |(_, n)| *n)
        };
        let delta: Vec<(f64, u64)> = a
            .buckets
            .iter()
            .map(|&(le, n)| (le, n.saturating_sub(earlier(le))))
            .collect();
        let at = |q: f64| {
            let want = (count as f64 * q).ceil() as u64;
            delta
                .iter()
                .find(|(_, n)| *n >= want)
                .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
        };
        out.push(Stage {
            name: name.strip_prefix("msgr_").unwrap_or(name).to_owned(),
            count,
            mean_ms: ((a.sum - b.sum).max(0.0) / count as f64 * 1e6).round() / 1000.0,
            p50_le_ms: at(0.50),
            p99_le_ms: at(0.99),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bucket_counts: [u64; 4], sum: f64) -> String {
        let [a, b, c, d] = bucket_counts;
        format!(
            "# TYPE msgr_worker_persist_seconds histogram\n\
             msgr_worker_persist_seconds_bucket{{le=\"0.001\"}} {a}\n\
             msgr_worker_persist_seconds_bucket{{le=\"0.005\"}} {b}\n\
             msgr_worker_persist_seconds_bucket{{le=\"0.01\"}} {c}\n\
             msgr_worker_persist_seconds_bucket{{le=\"+Inf\"}} {d}\n\
             msgr_worker_persist_seconds_sum {sum}\n\
             msgr_worker_persist_seconds_count {d}\n\
             msgr_rpc_seconds_bucket{{method=\"lookup\",le=\"0.001\"}} 7\n\
             msgr_rpc_seconds_count{{method=\"lookup\"}} 7\n\
             msgr_edge_messages_in_total 12\n"
        )
    }

    #[test]
    fn parses_unlabelled_histograms_only() {
        let h = histograms(&text([1, 2, 3, 4], 0.5));
        assert_eq!(h.len(), 1, "{h:?}");
        let p = &h["msgr_worker_persist"];
        assert_eq!(p.count, 4);
        assert_eq!(p.sum, 0.5);
        assert_eq!(
            p.buckets,
            vec![(0.001, 1), (0.005, 2), (0.01, 3), (f64::INFINITY, 4)]
        );
    }

    #[test]
    fn a_phase_is_the_difference_of_two_scrapes() {
        let before = histograms(&text([10, 10, 10, 10], 0.010));
        // 100 more: 90 under 1 ms, 8 under 5 ms, 2 under 10 ms.
        let after = histograms(&text([100, 108, 110, 110], 0.010 + 0.2));
        let s = stages(&before, &after);
        assert_eq!(
            s,
            vec![Stage {
                name: "worker_persist".into(),
                count: 100,
                mean_ms: 2.0,
                p50_le_ms: 1.0,
                p99_le_ms: 10.0,
            }]
        );
        // Nothing recorded in between: no stage.
        assert!(stages(&after, &after).is_empty());
    }

    #[test]
    fn a_tail_beyond_the_last_bound_reads_as_infinite() {
        let after = histograms(&text([0, 0, 0, 5], 1.0));
        let s = stages(&BTreeMap::new(), &after);
        assert_eq!(s[0].p50_le_ms, f64::INFINITY);
    }
}
