//! `msgr-bench`'s report of a run: the table on the terminal and the SVG
//! plot of latency per offered rate, both read from the results document.

use serde_json::{json, Value};

/// The results table on the terminal: latency per workload and, for W1/W2
/// steps, what a message cost the servers.
pub fn print_table(doc: &Value) {
    println!(
        "\n{:<28} {:>10} {:>10} {:>10} {:>10} {:>8}   per message: {:>7} {:>7} {:>9}",
        "workload", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "lost", "CPU µs", "NATS", "disk KiB"
    );
    // W1/W2 steps: what one message cost the servers.
    let cost = |p: &Value| {
        let m = &p["per_message"];
        if m.is_null() {
            return String::new();
        }
        format!(
            "   {:>20.0} {:>7} {:>9.2}",
            m["server_cpu_us"].as_f64().unwrap_or(f64::NAN),
            m["nats_ops"]
                .as_f64()
                .map_or_else(|| "?".to_owned(), |o| format!("{o:.2}")),
            m["disk_bytes"].as_f64().unwrap_or(f64::NAN) / 1024.0
        )
    };
    let row_with = |name: String, s: &Value, lost: &Value, extra: String| {
        println!(
            "{:<28} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8}{extra}",
            name,
            s["p50_ms"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            s["p999_ms"].as_f64().unwrap_or(0.0),
            s["max_ms"].as_f64().unwrap_or(0.0),
            lost
        );
    };
    let row = |name: String, s: &Value, lost: &Value| row_with(name, s, lost, String::new());
    let r = &doc["results"];
    for p in r["w1"].as_array().into_iter().flatten() {
        row_with(
            format!("W1 {} msg/s e2e", p["offered_per_s"]),
            &p["e2e"],
            &p["lost"],
            cost(p),
        );
        row(
            format!("W1 {} msg/s ack", p["offered_per_s"]),
            &p["ack"],
            &json!(""),
        );
    }
    for p in r["w2"]["steps"].as_array().into_iter().flatten() {
        row_with(
            format!("W2 {} msg/s e2e", p["offered_per_s"]),
            &p["e2e"],
            &p["lost"],
            cost(p),
        );
    }
    if !r["w2"].is_null() {
        println!(
            "W2 highest rate held: {} (lowest failed: {})",
            r["w2"]["highest_rate_held"], r["w2"]["lowest_rate_failed"]
        );
    }
    for g in r["w3"].as_array().into_iter().flatten() {
        row(
            format!("W3 {} members", g["members"]),
            &g["latency"],
            &json!(g["expected"].as_u64().unwrap_or(0) - g["deliveries"].as_u64().unwrap_or(0)),
        );
    }
    for (key, w4) in r.as_object().into_iter().flatten() {
        if key != "w4" && !key.starts_with("w4_") {
            continue;
        }
        let mode = key.strip_prefix("w4_").unwrap_or("");
        for l in w4.as_array().into_iter().flatten() {
            println!(
                "W4 {mode} {} idle connections open, {:.0}/s, {:.1} KiB edge RSS each",
                l["open"],
                l["connect_per_s"].as_f64().unwrap_or(0.0),
                l["edge_kib_per_connection"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if !r["w5"].is_null() {
        row(
            "W5 1,000 msgs, 100/page".to_owned(),
            &r["w5"]["history_1000_total"],
            &json!(""),
        );
        row(
            "W5 one page of 100".to_owned(),
            &r["w5"]["history_page"],
            &json!(""),
        );
        row(
            "W5 chat list, 500 chats".to_owned(),
            &r["w5"]["chat_list_500"],
            &json!(""),
        );
    }
}

/// Latency percentiles per offered rate (W1 and W2) as an SVG.
///
/// # Errors
/// If the SVG cannot be drawn or written.
pub fn plot(doc: &Value, path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let r = &doc["results"];
    let mut points: Vec<(f64, f64, f64, f64)> = r["w1"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(r["w2"]["steps"].as_array().into_iter().flatten())
        .map(|p| {
            (
                p["offered_per_s"].as_f64().unwrap_or(0.0),
                p["e2e"]["p50_ms"].as_f64().unwrap_or(0.0),
                p["e2e"]["p99_ms"].as_f64().unwrap_or(0.0),
                p["e2e"]["p999_ms"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let max_y = points.iter().map(|p| p.3).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "msgr end-to-end latency by offered rate",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((500f64..max_x).log_scale(), 0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("offered msg/s")
        .y_desc("ms")
        .draw()?;
    for (name, idx, color) in [("p50", 1, BLUE), ("p99", 2, RED), ("p99.9", 3, BLACK)] {
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.0, [p.1, p.2, p.3][idx - 1]))
            .collect();
        chart
            .draw_series(LineSeries::new(series, color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
