//! A run's report: JSON (machine-readable), a table (people), and an SVG chart of throughput and
//! latency percentiles over time with the server's shed level overlaid.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseStats {
    pub name: String,
    pub start_s: f64,
    pub end_s: f64,
    pub target_rps: f64,
    pub rps: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub shed_level_max: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t: f64,
    pub rps: f64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub shed_level: Option<f64>,
    pub rss_kb: Option<u64>,
    pub cpu: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStats {
    pub rss_before_kb: u64,
    /// Once every stream was connected, before the phases.
    pub rss_connected_kb: u64,
    pub rss_peak_kb: u64,
    pub rss_end_kb: u64,
    /// (connected − before) / streams.
    pub bytes_per_stream: f64,
    /// Cores busy (1.0 = one core), over the phases.
    pub cpu_avg: f64,
    pub cpu_max: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub kind: String,
    pub started_unix_ms: u64,
    pub duration_s: f64,
    pub connect_s: f64,
    pub workers: usize,
    pub streams_requested: usize,
    pub streams_connected: usize,
    pub streams_failed: usize,
    pub sent: u64,
    pub answered: u64,
    /// Turns a stream skipped: `max_inflight_per_stream` requests unanswered, or waiting out a
    /// `retry_after_ms` (clients honour it).
    pub skipped: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    /// Request latency by kind (`search`, `insert`, `ping`), time to first result
    /// (`search_first_result`) and end-to-end event latency (`event_end_to_end`), µs.
    pub latency_us: BTreeMap<String, Percentiles>,
    pub errors_by_code: BTreeMap<String, u64>,
    pub closes_by_code: BTreeMap<String, u64>,
    pub server: Option<ServerStats>,
    pub phases: Vec<PhaseStats>,
    pub series: Vec<SeriesPoint>,
    pub ann: Option<Value>,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl Report {
    /// The final table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "scenario {} ({}), {:.1} s",
            self.scenario, self.kind, self.duration_s
        ));
        if let Some(a) = &self.ann {
            line(serde_json::to_string_pretty(a).unwrap_or_default());
            return out;
        }
        line(format!(
            "streams: {} requested, {} connected, {} failed ({} worker(s), connected in {:.1} s)",
            self.streams_requested,
            self.streams_connected,
            self.streams_failed,
            self.workers,
            self.connect_s
        ));
        line(format!(
            "requests: {} sent, {} answered, {} errors, {} skipped; {:.0} answered/s",
            self.sent, self.answered, self.errors, self.skipped, self.throughput_rps
        ));
        line(format!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p95", "p99", "p99.9", "max"
        ));
        for (k, p) in &self.latency_us {
            line(format!(
                "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                k,
                p.count,
                ms(p.p50),
                ms(p.p95),
                ms(p.p99),
                ms(p.p999),
                ms(p.max)
            ));
        }
        line(format!(
            "{:<12} {:>8} {:>10} {:>10} {:>8} {:>9} {:>9} {:>5}",
            "phase", "secs", "target/s", "done/s", "errors", "p50 ms", "p99 ms", "shed"
        ));
        for p in &self.phases {
            line(format!(
                "{:<12} {:>8.1} {:>10.0} {:>10.0} {:>8} {:>9} {:>9} {:>5}",
                p.name,
                p.end_s - p.start_s,
                p.target_rps,
                p.rps,
                p.errors,
                ms(p.p50_us),
                ms(p.p99_us),
                p.shed_level_max
                    .map(|l| format!("{l:.0}"))
                    .unwrap_or_else(|| "-".into())
            ));
        }
        if !self.errors_by_code.is_empty() {
            line(format!("errors by code: {:?}", self.errors_by_code));
        }
        if !self.closes_by_code.is_empty() {
            line(format!("closes by code: {:?}", self.closes_by_code));
        }
        if let Some(s) = &self.server {
            line(format!(
                "server RSS: {:.1} MB before, {:.1} MB with the streams ({:.0} bytes per stream), peak {:.1} MB; CPU avg {:.2} max {:.2} cores",
                s.rss_before_kb as f64 / 1024.0,
                s.rss_connected_kb as f64 / 1024.0,
                s.bytes_per_stream,
                s.rss_peak_kb as f64 / 1024.0,
                s.cpu_avg,
                s.cpu_max
            ));
        }
        out
    }

    /// An SVG chart: throughput (and errors) over time with the shed level, and p50/p99 latency.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, bottom) = root.split_vertically(350);
        let t_max = self
            .series
            .last()
            .map(|p| p.t + 1.0)
            .unwrap_or(1.0)
            .max(1.0);
        let rps_max = self
            .series
            .iter()
            .map(|p| p.rps.max(p.errors as f64))
            .fold(1.0, f64::max)
            * 1.1;
        let mut c = ChartBuilder::on(&top)
            .caption(
                format!("{}: answered/s, errors/s and shed level", self.scenario),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(40)
            .build_cartesian_2d(0.0..t_max, 0.0..rps_max)
            .map_err(|e| err(&e))?
            .set_secondary_coord(0.0..t_max, 0.0..3.5);
        c.configure_mesh()
            .x_desc("s")
            .y_desc("answered/s")
            .draw()
            .map_err(|e| err(&e))?;
        c.configure_secondary_axes()
            .y_desc("shed level")
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            self.series.iter().map(|p| (p.t, p.rps)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("answered/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.draw_series(LineSeries::new(
            self.series.iter().map(|p| (p.t, p.errors as f64)),
            &RED,
        ))
        .map_err(|e| err(&e))?
        .label("errors/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        let shed: Vec<(f64, f64)> = self
            .series
            .iter()
            .filter_map(|p| p.shed_level.map(|l| (p.t, l)))
            .collect();
        if !shed.is_empty() {
            c.draw_secondary_series(AreaSeries::new(shed, 0.0, RGBColor(255, 140, 0).mix(0.25)))
                .map_err(|e| err(&e))?
                .label("shed level")
                .legend(|(x, y)| {
                    Rectangle::new(
                        [(x, y - 5), (x + 20, y + 5)],
                        RGBColor(255, 140, 0).mix(0.25).filled(),
                    )
                });
        }
        c.configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        let lat_max = self
            .series
            .iter()
            .map(|p| p.p99_us as f64 / 1000.0)
            .fold(1.0, f64::max)
            * 1.1;
        let mut c = ChartBuilder::on(&bottom)
            .caption("latency (ms)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max, 0.0..lat_max)
            .map_err(|e| err(&e))?;
        c.configure_mesh()
            .x_desc("s")
            .y_desc("ms")
            .draw()
            .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            self.series.iter().map(|p| (p.t, p.p50_us as f64 / 1000.0)),
            &GREEN,
        ))
        .map_err(|e| err(&e))?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        c.draw_series(LineSeries::new(
            self.series.iter().map(|p| (p.t, p.p99_us as f64 / 1000.0)),
            &MAGENTA,
        ))
        .map_err(|e| err(&e))?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
        c.configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}
