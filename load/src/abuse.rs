//! `ruvector-load abuse`: abusive clients (in their own processes) against a server, and the
//! latency a well-behaved client sees alongside them, compared with its latency unloaded.
//!
//! Kinds: `ping-flood` (WebSocket streams sending pings as fast as the socket takes them, never
//! reading), `slow-body` (requests whose body trickles in a byte a second), `fat-metadata`
//! (upserts carrying ~6 MB of metadata, in a loop). The report has the good client's p50/p99
//! before and during, their ratio, and the server's resident memory before, at peak and after.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::client::http_client;

const COLLECTION: &str = "abuse";
const DIM: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    PingFlood,
    SlowBody,
    FatMetadata,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AbuseArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// The server's process id (its memory from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Abusive processes…
    #[arg(long, default_value_t = 4)]
    pub processes: usize,
    /// …each with this many connections (threads for fat-metadata).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Seconds of the well-behaved client alone, then alongside the abuse.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub kind: Kind,
    pub processes: usize,
    pub connections: usize,
    pub unloaded_p50_ms: f64,
    pub unloaded_p99_ms: f64,
    pub loaded_p50_ms: f64,
    pub loaded_p99_ms: f64,
    /// loaded p99 / unloaded p99 (the target: within 2x).
    pub p99_ratio: f64,
    pub good_requests: u64,
    pub good_errors: u64,
    pub rss_before_kb: u64,
    pub rss_peak_kb: u64,
    pub rss_after_kb: u64,
}

/// Sequential searches for `secs`: (histogram in µs, requests, errors); samples RSS meanwhile.
fn good_client(
    base: &str,
    secs: u64,
    pid: Option<u32>,
    peak: &mut u64,
) -> Result<(Histogram<u64>, u64, u64), String> {
    let c = http_client();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut n, mut errors) = (0u64, 0u64);
    let t = Instant::now();
    let mut last_sample = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_secs(secs) {
        i += 1;
        let q: Vec<f32> = (0..DIM)
            .map(|d| ((i as usize * 31 + d) % 17) as f32 / 17.0)
            .collect();
        let t0 = Instant::now();
        let r = c
            .post(format!(
                "{base}/api/v1/collections/{COLLECTION}/points/search"
            ))
            .json(&json!({"vector": q, "k": 10}))
            .send();
        let ok = matches!(&r, Ok(r) if r.status() == 200);
        if !ok && errors < 3 {
            match r {
                Ok(r) => eprintln!(
                    "good client: {} {}",
                    r.status(),
                    r.text().unwrap_or_default()
                ),
                Err(e) => eprintln!("good client: {e}"),
            }
        }
        if ok {
            let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
        } else {
            errors += 1;
        }
        n += 1;
        if let Some(pid) = pid {
            if last_sample.elapsed() > Duration::from_millis(500) {
                *peak = (*peak).max(crate::streams::rss_kb(pid));
                last_sample = Instant::now();
            }
        }
    }
    Ok((h, n, errors))
}

/// Runs the measurement: unloaded, then with `processes` abusive workers.
pub fn abuse(a: &AbuseArgs) -> Result<AbuseReport, String> {
    let base = format!("http://{}", a.server);
    let c = http_client();
    c.put(format!("{base}/api/v1/collections/{COLLECTION}"))
        .json(&json!({"dimension": DIM, "metric": "l2"}))
        .send()
        .map_err(|e| e.to_string())?;
    let points: Vec<_> = (0..2000)
        .map(|i| {
            let v: Vec<f32> = (0..DIM)
                .map(|d| ((i * 7 + d * 3) % 23) as f32 / 23.0)
                .collect();
            json!({"id": format!("p{i}"), "vector": v})
        })
        .collect();
    c.put(format!("{base}/api/v1/collections/{COLLECTION}/points"))
        .json(&json!({ "points": points }))
        .send()
        .map_err(|e| e.to_string())?;
    let rss = |pid: Option<u32>| pid.map_or(0, crate::streams::rss_kb);
    let mut peak = 0;
    let (unloaded, _, _) = good_client(&base, a.secs, None, &mut peak)?;
    let rss_before = rss(a.server_pid);
    peak = rss_before;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let kind = match a.kind {
        Kind::PingFlood => "ping-flood",
        Kind::SlowBody => "slow-body",
        Kind::FatMetadata => "fat-metadata",
    };
    let mut workers: Vec<Child> = (0..a.processes)
        .map(|_| {
            Command::new(&me)
                .args(["abuse-worker", kind, "--server", &a.server.to_string()])
                .args(["--connections", &a.connections.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_secs(2));
    let (loaded, n, errors) = good_client(&base, a.secs, a.server_pid, &mut peak)?;
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    std::thread::sleep(Duration::from_secs(3));
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(AbuseReport {
        kind: a.kind,
        processes: a.processes,
        connections: a.connections,
        unloaded_p50_ms: q(&unloaded, 0.5),
        unloaded_p99_ms: q(&unloaded, 0.99),
        loaded_p50_ms: q(&loaded, 0.5),
        loaded_p99_ms: q(&loaded, 0.99),
        p99_ratio: q(&loaded, 0.99) / q(&unloaded, 0.99).max(0.001),
        good_requests: n,
        good_errors: errors,
        rss_before_kb: rss_before,
        rss_peak_kb: peak,
        rss_after_kb: rss(a.server_pid),
    })
}

/// One abusive process: `connections` abusers of `kind` until killed.
pub fn worker(kind: Kind, server: SocketAddr, connections: usize) {
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || loop {
                let _ = match kind {
                    Kind::PingFlood => ping_flood(server),
                    Kind::SlowBody => slow_body(server),
                    Kind::FatMetadata => fat_metadata(server),
                };
                std::thread::sleep(Duration::from_millis(100));
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn ping_flood(server: SocketAddr) -> std::io::Result<()> {
    let mut c = TcpStream::connect(server)?;
    write!(
        c,
        "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let ping: [u8; 10] = [
        0x89,
        0x84,
        1,
        2,
        3,
        4,
        b'p' ^ 1,
        b'i' ^ 2,
        b'n' ^ 3,
        b'g' ^ 4,
    ];
    // 64 pings every 10 ms: ~6,400 a second, 64 times the server's per-stream allowance,
    // without the abusers themselves eating the machine's cores.
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 64).collect();
    loop {
        c.write_all(&burst)?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn slow_body(server: SocketAddr) -> std::io::Result<()> {
    let mut c = TcpStream::connect(server)?;
    write!(
        c,
        "PUT /api/v1/collections/{COLLECTION}/points HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    )?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        c.write_all(b" ")?;
    }
}

fn fat_metadata(server: SocketAddr) -> std::io::Result<()> {
    let mut body = String::from(r#"{"points":[{"id":"fat","vector":["#);
    body.push_str(&vec!["0.5"; DIM].join(","));
    body.push_str(r#"],"metadata":{"a":["#);
    body.push_str(&"1,".repeat(3_000_000));
    body.push_str("1]}}]}");
    let c = http_client();
    loop {
        c.put(format!(
            "http://{server}/api/v1/collections/{COLLECTION}/points"
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .map_err(std::io::Error::other)?;
    }
}
