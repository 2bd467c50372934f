//! `bench-ann` through a running server: durable inserts over HTTP, the wait until the graph has
//! linked them, then the ef sweep — with, when the server runs on this machine, its CPU time per
//! query and its own latency histogram beside the client's figures (the client's share of a
//! shared machine is not the server's cost).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::sweep::{histogram, parallel_qps, recall, Dataset, SweepRow};
use ruvector_actors::types::HnswParams;

/// CPU seconds (user + system) the process `pid` has used so far, from /proc (clock ticks of
/// 1/100 s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The server's `/metrics` text (empty when it cannot be read).
fn metrics_text(client: &reqwest::blocking::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// Cumulative bucket counts `(le, count)` of the server's search-route request histogram.
fn search_buckets(client: &reqwest::blocking::Client, url: &str) -> Vec<(f64, f64)> {
    metrics_text(client, url)
        .lines()
        .filter(|l| {
            l.starts_with("ruvector_http_request_duration_seconds_bucket{")
                && l.contains("points/search\"")
                && l.contains("method=\"POST\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The `q` quantile (seconds) of the requests between two bucket readings, interpolated
/// linearly inside its bucket (as Prometheus' `histogram_quantile` does).
fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &diff {
        if n >= rank {
            if !le.is_finite() {
                return Some(lower.0);
            }
            let share = if n > lower.1 {
                (rank - lower.1) / (n - lower.1)
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, n);
    }
    None
}

/// What the HTTP part measured.
pub struct HttpReport {
    pub insert: Duration,
    pub rows: Vec<SweepRow>,
}

fn check(res: reqwest::Result<reqwest::blocking::Response>, what: &str) -> Result<Value, String> {
    let res = res.map_err(|e| format!("{what}: {e}"))?;
    let status = res.status();
    let body: Value = res.json().unwrap_or(Value::Null);
    if status.is_success() || status.as_u16() == 204 {
        Ok(body)
    } else {
        Err(format!("{what}: HTTP {status}: {body}"))
    }
}

/// Waits (at most two minutes) until the server's `ruvector_shed_level` is 0.
fn wait_for_normal_shed_level(client: &reqwest::blocking::Client, url: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        let level = metrics_text(client, url)
            .lines()
            .find_map(|l| l.strip_prefix("ruvector_shed_level "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if level.is_none_or(|l| l == 0.0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Sends a request, waiting as told and sending it again while the server answers 429 or 503
/// with a `retry_after_ms` (shedding is on, as shipped), for at most two minutes.
fn send_retrying(
    make: impl Fn() -> reqwest::blocking::RequestBuilder,
    what: &str,
) -> Result<Value, String> {
    let t = Instant::now();
    loop {
        let res = make().send().map_err(|e| format!("{what}: {e}"))?;
        let status = res.status().as_u16();
        if matches!(status, 429 | 503) && t.elapsed() < Duration::from_secs(120) {
            let body: Value = res.json().unwrap_or(Value::Null);
            let wait = body["retry_after_ms"].as_u64().unwrap_or(1000).min(5000);
            std::thread::sleep(Duration::from_millis(wait));
            continue;
        }
        return check(Ok(res), what);
    }
}

/// Waits until `ruvector_shard_unindexed` of `collection` is 0 on every shard (at most 10 min);
/// answers how long that took.
fn wait_until_indexed(client: &reqwest::blocking::Client, url: &str, collection: &str) -> Duration {
    let t = Instant::now();
    let label = format!("collection=\"{collection}\"");
    while t.elapsed() < Duration::from_secs(600) {
        let waiting: Vec<f64> = metrics_text(client, url)
            .lines()
            .filter(|l| l.starts_with("ruvector_shard_unindexed{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        if !waiting.is_empty() && waiting.iter().all(|w| *w == 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// How to run the HTTP part.
pub struct HttpPlan<'a> {
    pub url: &'a str,
    pub hnsw: HnswParams,
    pub efs: &'a [usize],
    pub threads: usize,
    pub batch: usize,
    /// Keep the collection afterwards (e.g. to measure a restart with it).
    pub keep: bool,
    /// The server's process id, when it runs on this machine: CPU time per query is measured.
    pub server_pid: Option<u32>,
    /// Shards of the collection (default: the server's).
    pub shards: Option<usize>,
}

/// The whole server: durable inserts in batches from `threads` clients, then the ef sweep with
/// one client and with `threads` concurrent clients.
pub fn http(d: &Dataset, plan: &HttpPlan) -> Result<HttpReport, String> {
    let HttpPlan {
        url,
        hnsw,
        efs,
        threads,
        batch,
        keep,
        server_pid,
        shards,
    } = *plan;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let name = format!("bench-ann-{}", std::process::id());
    let coll = format!("{url}/api/v1/collections/{name}");
    let _ = client.delete(&coll).send();
    let mut spec = json!({
        "dimension": d.base[0].len(),
        "metric": d.metric.as_str(),
        "hnsw": {"m": hnsw.m, "ef_construction": hnsw.ef_construction, "ef_search": hnsw.ef_search, "quantization": hnsw.quantization},
    });
    if let Some(n) = shards {
        spec["shards"] = json!(n);
    }
    check(client.put(&coll).json(&spec).send(), "create collection")?;
    let batches: Vec<(usize, &[Vec<f32>])> = d.base.chunks(batch).enumerate().collect();
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None::<String>);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                let Some((c, chunk)) = batches.get(b) else {
                    break;
                };
                let points: Vec<Value> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, v)| json!({"id": (c * batch + i).to_string(), "vector": v}))
                    .collect();
                let insert = || {
                    client
                        .put(format!("{coll}/points"))
                        .json(&json!({ "points": &points }))
                };
                if let Err(e) = send_retrying(insert, "insert") {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    break;
                }
            });
        }
    });
    let insert = t.elapsed();
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Acknowledged points are searchable at once (scanned exactly until linked); the graph
    // catches up behind. How long it trails is part of the figure.
    let indexed = wait_until_indexed(&client, url, &name);
    println!(
        "http: every point linked into the graph {:.2} s after the start of the load ({:.2} s after the last acknowledgement)",
        t.elapsed().as_secs_f64(),
        indexed.as_secs_f64()
    );
    // The bulk load's index building may have raised the shed level; searches are measured once
    // it is back to normal (they would otherwise measure the throttle, not the search path).
    wait_for_normal_shed_level(&client, url);
    let search = |i: usize, ef: usize| -> Result<Vec<u32>, String> {
        let body = send_retrying(
            || {
                client
                    .post(format!("{coll}/points/search"))
                    .json(&json!({"vector": d.queries[i], "k": d.k, "ef_search": ef, "with_metadata": false}))
            },
            "search",
        )?;
        Ok(body["results"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h["id"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    };
    let mut rows = Vec::new();
    for &ef in efs {
        let mut h = histogram();
        let mut found = 0;
        let buckets_before = search_buckets(&client, url);
        let cpu_before = server_pid.and_then(cpu_seconds);
        let t = Instant::now();
        for i in 0..d.queries.len() {
            let q = Instant::now();
            let got = search(i, ef)?;
            let _ = h.record(q.elapsed().as_micros().max(1) as u64);
            found += recall(&d.truth[i], &got, d.k);
        }
        let qps1 = d.queries.len() as f64 / t.elapsed().as_secs_f64();
        let cpu_after = server_pid.and_then(cpu_seconds);
        let buckets_after = search_buckets(&client, url);
        let server_cpu_us = cpu_before
            .zip(cpu_after)
            .map(|(b, a)| (a - b) * 1e6 / d.queries.len() as f64);
        let server_p50_us = quantile_between(&buckets_before, &buckets_after, 0.5).map(|s| s * 1e6);
        let qps_all = parallel_qps(d.queries.len(), threads, &|i| {
            let _ = std::hint::black_box(search(i, ef));
        });
        rows.push(SweepRow {
            mode: "http",
            ef,
            recall: found as f64 / (d.queries.len() * d.k) as f64,
            qps_1_thread: qps1,
            qps_all_threads: qps_all,
            threads,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            server_cpu_us,
            server_p50_us,
        });
    }
    if keep {
        println!("http: collection {name} kept");
    } else {
        let _ = client.delete(&coll).send();
    }
    Ok(HttpReport { insert, rows })
}
