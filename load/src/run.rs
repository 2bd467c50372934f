//! Running a streams scenario: many WebSocket streams over several source addresses, split over
//! worker processes past `max_streams_per_worker`, phases of request rates, and measurement.
//!
//! The driver (here; workers are `worker`) preloads data, starts the workers (one in-process, or child processes of this
//! binary running `worker`), waits until every stream is connected, then starts the phases on
//! all workers at once. Each second it samples the server (RSS and CPU from /proc when its pid
//! is known, the shed level from /metrics). Workers measure request latency (per kind), time to
//! first result and end-to-end event latency in HDR histograms, count errors by code and closes
//! by close code, and keep a per-second series; the driver merges them into a `Report`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::http_client;
use crate::data::Rng;
use crate::report::{Percentiles, PhaseStats, Report, SeriesPoint, ServerStats};
use crate::scenario::{Scenario, StreamLoad};
use crate::streams::rss_kb;
use crate::worker::{
    hist, random_vector, record_buckets, spawn_worker, unix_micros, Plan, Progress, WorkerOutput,
};

/// How the driver runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub server: SocketAddr,
    pub server_pid: Option<u32>,
    /// Show progress bars.
    pub progress: bool,
    /// Run even several workers as threads of this process (tests).
    pub in_process: bool,
}

fn preload(o: &RunOptions, l: &StreamLoad, seed: u64) -> Result<(), String> {
    let c = http_client();
    let base = format!("http://{}/api/v1/collections/{}", o.server, l.collection);
    let r = c
        .put(&base)
        .json(&json!({"dimension": l.dimension}))
        .send()
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!(
            "creating collection {}: {}",
            l.collection,
            r.text().unwrap_or_default()
        ));
    }
    let mut rng = Rng::new(seed);
    let mut left = l.preload;
    while left > 0 {
        let n = left.min(1000);
        let points: Vec<Value> = (0..n)
            .map(|_| json!({"vector": random_vector(&mut rng, l.dimension), "metadata": {"t": 0}}))
            .collect();
        let r = c
            .put(format!("{base}/points"))
            .json(&json!({"points": points}))
            .send()
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("preload: {}", r.text().unwrap_or_default()));
        }
        left -= n;
    }
    Ok(())
}

/// The server's shed level, from its /metrics (None when unreadable).
fn shed_level(c: &reqwest::blocking::Client, server: SocketAddr) -> Option<f64> {
    let text = c
        .get(format!("http://{server}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("ruvector_shed_level "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// CPU seconds of a process (utime + stime, 100 ticks/s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

/// One sample of the server: (seconds into the phases, shed level, RSS kB, CPU cores busy).
type Sample = (f64, Option<f64>, Option<u64>, Option<f64>);

/// Runs a streams scenario and reports.
pub fn run_streams(s: &Scenario, o: &RunOptions) -> Result<Report, String> {
    let l = s.streams.clone().ok_or("not a streams scenario")?;
    let rss = |pid: Option<u32>| pid.map(rss_kb);
    let seed = 42;
    preload(o, &l, seed)?;
    // After the preload: the streams' memory, not the data's.
    let rss_before = rss(o.server_pid);
    let per = l.max_streams_per_worker.max(1);
    let n_workers = l.count.div_ceil(per);
    let mut workers = Vec::new();
    let mut first = 0;
    for w in 0..n_workers {
        let count = (l.count - first).min(l.count.div_ceil(n_workers));
        let plan = Plan {
            server: o.server,
            load: l.clone(),
            first,
            count,
            seed: seed + w as u64,
        };
        workers.push(spawn_worker(plan, o.in_process || n_workers == 1)?);
        first += count;
    }
    let bar = indicatif::ProgressBar::new(l.count as u64);
    if o.progress {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("connecting");
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // Wait for every stream to be connected (or to have failed).
    let mut connected = vec![(0usize, 0usize); workers.len()];
    let connect_started = Instant::now();
    loop {
        for (i, w) in workers.iter().enumerate() {
            while let Ok(p) = w.progress.try_recv() {
                if let Progress::Connected(a, b) = p {
                    connected[i] = (a, b);
                }
            }
        }
        let (ok, failed) = connected
            .iter()
            .fold((0, 0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        bar.set_position((ok + failed) as u64);
        if ok + failed >= l.count {
            break;
        }
        if connect_started.elapsed() > Duration::from_secs(600) {
            return Err("streams did not connect within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let rss_connected = rss(o.server_pid);
    for w in &mut workers {
        let go = std::mem::replace(&mut w.go, Box::new(|| {}));
        go();
    }
    let started = Instant::now();
    let started_unix_ms = unix_micros() / 1000;
    let total = s.duration_s();
    bar.set_length((total.ceil() as u64).max(1));
    bar.set_position(0);
    let client = http_client();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_cpu = o.server_pid.map(|p| (Instant::now(), cpu_seconds(p)));
    let mut outputs: Vec<Option<WorkerOutput>> = vec![None; workers.len()];
    let mut ticks = vec![(0u64, 0u64); workers.len()];
    while outputs.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(1000));
        let t = started.elapsed().as_secs_f64();
        let cpu = match (o.server_pid, last_cpu.as_mut()) {
            (Some(pid), Some((at, secs))) => {
                let now = cpu_seconds(pid);
                let wall = at.elapsed().as_secs_f64();
                let frac = if wall > 0.0 {
                    (now - *secs) / wall
                } else {
                    0.0
                };
                *at = Instant::now();
                *secs = now;
                Some(frac)
            }
            _ => None,
        };
        samples.push((t, shed_level(&client, o.server), rss(o.server_pid), cpu));
        for (i, w) in workers.iter().enumerate() {
            while let Ok(p) = w.progress.try_recv() {
                match p {
                    Progress::Tick(a, e) => ticks[i] = (a, e),
                    Progress::Done(out) => outputs[i] = Some(*out),
                    Progress::Connected(..) => {}
                }
            }
        }
        let live = ticks
            .iter()
            .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
        let phase = l
            .phases
            .iter()
            .scan(0.0, |acc, p| {
                *acc += p.duration_s;
                Some((p.name.clone(), *acc))
            })
            .find(|(_, end)| t < *end)
            .map(|(n, _)| n)
            .unwrap_or_else(|| "finishing".into());
        bar.set_message(phase);
        bar.set_position(t.min(total) as u64);
        if o.progress {
            bar.println(format!("t={t:>5.0}s answered={} errors={}", live.0, live.1));
        }
        if t > total + 120.0 {
            return Err("workers did not finish in time".into());
        }
    }
    bar.finish_and_clear();
    let outs: Vec<WorkerOutput> = outputs.into_iter().flatten().collect();
    Ok(build_report(
        s,
        &l,
        outs,
        started_unix_ms,
        connect_secs,
        started.elapsed().as_secs_f64(),
        rss_before,
        rss_connected,
        samples,
    ))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    s: &Scenario,
    l: &StreamLoad,
    outs: Vec<WorkerOutput>,
    started_unix_ms: u64,
    connect_secs: f64,
    elapsed: f64,
    rss_before: Option<u64>,
    rss_connected: Option<u64>,
    samples: Vec<Sample>,
) -> Report {
    let mut latency: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut all = WorkerOutput::default();
    let mut seconds: Vec<(u64, u64, Histogram<u64>)> = Vec::new();
    for o in &outs {
        all.connected += o.connected;
        all.connect_failures += o.connect_failures;
        all.sent += o.sent;
        all.answered += o.answered;
        all.skipped += o.skipped;
        for (k, v) in &o.errors_by_code {
            *all.errors_by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.closes_by_code {
            *all.closes_by_code.entry(k.clone()).or_default() += v;
        }
        for (k, b) in &o.latency {
            record_buckets(latency.entry(k.clone()).or_insert_with(hist), b);
        }
        for (i, sec) in o.series.iter().enumerate() {
            while seconds.len() <= i {
                seconds.push((0, 0, hist()));
            }
            seconds[i].0 += sec.answered;
            seconds[i].1 += sec.errors;
            record_buckets(&mut seconds[i].2, &sec.latency);
        }
    }
    let sample_at = |t: f64| samples.iter().find(|x| x.0 >= t).or(samples.last());
    let series: Vec<SeriesPoint> = seconds
        .iter()
        .enumerate()
        .map(|(i, (a, e, h))| {
            let smp = sample_at(i as f64 + 1.0);
            SeriesPoint {
                t: i as f64,
                rps: *a as f64,
                errors: *e,
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                shed_level: smp.and_then(|x| x.1),
                rss_kb: smp.and_then(|x| x.2),
                cpu: smp.and_then(|x| x.3),
            }
        })
        .collect();
    let mut phases = Vec::new();
    let mut t0 = 0.0;
    for p in &l.phases {
        let t1 = t0 + p.duration_s;
        let mut h = hist();
        let (mut answered, mut errors) = (0u64, 0u64);
        for (i, (a, e, sh)) in seconds.iter().enumerate() {
            let t = i as f64;
            if t >= t0.floor() && t < t1.ceil().max(t0.floor() + 1.0) {
                answered += a;
                errors += e;
                let _ = h.add(sh);
            }
        }
        let shed_max = samples
            .iter()
            .filter(|x| x.0 > t0 && x.0 <= t1 + 1.0)
            .filter_map(|x| x.1)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        phases.push(PhaseStats {
            name: p.name.clone(),
            start_s: t0,
            end_s: t1,
            target_rps: p.rate,
            rps: answered as f64 / p.duration_s,
            errors,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            shed_level_max: shed_max,
        });
        t0 = t1;
    }
    let rss_values: Vec<u64> = samples.iter().filter_map(|x| x.2).collect();
    let cpus: Vec<f64> = samples.iter().filter_map(|x| x.3).collect();
    let server = rss_before.map(|before| {
        let connected_kb = rss_connected.unwrap_or(before);
        ServerStats {
            rss_before_kb: before,
            rss_connected_kb: connected_kb,
            rss_peak_kb: rss_values.iter().copied().max().unwrap_or(connected_kb),
            rss_end_kb: rss_values.last().copied().unwrap_or(connected_kb),
            bytes_per_stream: connected_kb.saturating_sub(before) as f64 * 1024.0
                / all.connected.max(1) as f64,
            cpu_avg: if cpus.is_empty() {
                0.0
            } else {
                cpus.iter().sum::<f64>() / cpus.len() as f64
            },
            cpu_max: cpus.iter().copied().fold(0.0, f64::max),
        }
    });
    let errors: u64 = all.errors_by_code.values().sum();
    let duration = s.duration_s().max(f64::MIN_POSITIVE);
    Report {
        scenario: s.name.clone(),
        kind: "streams".into(),
        started_unix_ms,
        duration_s: elapsed,
        connect_s: connect_secs,
        workers: outs.len(),
        streams_requested: l.count,
        streams_connected: all.connected,
        streams_failed: all.connect_failures,
        sent: all.sent,
        answered: all.answered,
        skipped: all.skipped,
        errors,
        throughput_rps: all.answered as f64 / duration,
        latency_us: latency
            .iter()
            .map(|(k, h)| (k.clone(), Percentiles::of(h)))
            .collect(),
        errors_by_code: all.errors_by_code,
        closes_by_code: all.closes_by_code,
        server,
        phases,
        series,
        ann: None,
    }
}

/// Runs any scenario.
pub fn run(s: &Scenario, o: &RunOptions) -> Result<Report, String> {
    s.validate()?;
    match s.kind {
        crate::scenario::Kind::Streams => run_streams(s, o),
        crate::scenario::Kind::Ann => {
            let a = s
                .ann
                .as_ref()
                .ok_or("an ann scenario needs an [ann] table")?;
            let ef: Vec<String> = a.ef.iter().map(|e| e.to_string()).collect();
            let mut args = vec![
                "bench-ann".to_owned(),
                format!("--n={}", a.n),
                format!("--nq={}", a.nq),
                format!("--dim={}", a.dim),
                format!("--metric={}", a.metric),
                format!("--ef={}", ef.join(",")),
                format!("--k={}", a.k),
                format!("--m={}", a.m),
                format!("--ef-construction={}", a.ef_construction),
            ];
            if a.over_http {
                args.push(format!("--url=http://{}", o.server));
            }
            let b = <crate::ann::BenchAnn as clap::Parser>::try_parse_from(args)
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            let v = crate::ann::bench(&b)?;
            Ok(Report {
                scenario: s.name.clone(),
                kind: "ann".into(),
                started_unix_ms: unix_micros() / 1000,
                duration_s: t.elapsed().as_secs_f64(),
                ann: Some(v),
                ..Default::default()
            })
        }
    }
}
