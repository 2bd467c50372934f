//! Coordination load over the WebSocket API, against a running server:
//!
//! - `claims`: a queue of tasks is created, then agents (one WebSocket each, one swarm) claim and
//!   complete until the queue is empty — claim throughput, claim and completion latency, and a
//!   check that every task was assigned exactly once;
//! - `fanout`: subscribers of one topic (one WebSocket each) and a publisher at a fixed rate —
//!   the delay from publish to each subscriber's `message`, over every delivery;
//! - `idle-agents`: registered agents that only heartbeat — the server's memory per agent.
//!
//! Clients spread over source addresses 127.0.0.1..N, because rate limits are per caller (the
//! client IP when anonymous) and the server runs with its default configuration.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::streams::{connect_ws, rss_kb, runtime, Ws};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoordKind {
    Claims,
    Fanout,
    IdleAgents,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CoordArgs {
    #[arg(value_enum)]
    pub kind: CoordKind,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// The server's process id (memory and CPU from /proc; same machine only).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Agents (claims, idle-agents) or subscribers (fanout).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Tasks created and then claimed (claims).
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// Messages published (fanout), at `rate` per second.
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Agents per swarm (idle-agents).
    #[arg(long, default_value_t = 100)]
    pub swarm_size: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// Seconds idle agents are held before memory is read.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
    /// Write the JSON report here too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Mutex<Histogram<u64>>) -> Latency {
        let Ok(h) = h.lock() else {
            return Latency::default();
        };
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct CoordReport {
    pub kind: Option<CoordKind>,
    pub clients: usize,
    /// Connecting (and, for claims, every agent registering in the swarm).
    pub connect_secs: f64,
    /// claims: tasks created per second (one pipelined connection).
    pub created_per_s: f64,
    pub claimed: usize,
    pub claims_per_s: f64,
    pub claim: Latency,
    pub complete: Latency,
    /// Tasks assigned to more than one agent (must be 0) and never assigned (must be 0).
    pub assigned_twice: usize,
    pub never_assigned: usize,
    /// fanout: deliveries expected (subscribers × messages) and seen.
    pub deliveries_expected: usize,
    pub deliveries: usize,
    pub delivery: Latency,
    /// Refusals by the rate limiter, waited out and retried.
    pub rate_limited: usize,
    pub errors: usize,
    pub baseline_rss_kb: u64,
    pub loaded_rss_kb: u64,
    /// idle-agents: (loaded - baseline) / agents.
    pub bytes_per_idle_agent: f64,
    /// Server CPU seconds over the measured phase.
    pub server_cpu_s: f64,
}

/// One WebSocket client that asks one request at a time and skips events while it waits.
struct Client {
    ws: Ws,
    next: u64,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    rate_limited: AtomicUsize,
    errors: AtomicUsize,
    open: AtomicUsize,
}

impl Client {
    async fn open(server: SocketAddr, src: IpAddr, counters: Arc<Counters>) -> Option<Client> {
        let ws = tokio::time::timeout(Duration::from_secs(30), connect_ws(server, src))
            .await
            .ok()?
            .ok()?;
        counters.open.fetch_add(1, Ordering::Relaxed);
        Some(Client {
            ws,
            next: 0,
            counters,
        })
    }

    /// Sends `frame` and answers its reply (an error frame too); waits out rate limits.
    async fn ask(&mut self, frame: &Value) -> Option<Value> {
        loop {
            self.next += 1;
            let id = self.next;
            let mut f = frame.clone();
            f["id"] = json!(id);
            self.ws.send(Message::text(f.to_string())).await.ok()?;
            let reply = loop {
                // A server that never answers ends this client, not the run.
                let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                    .await
                    .ok()??
                    .ok()?;
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(t.as_str()).ok()?;
                if v["id"] == json!(id) {
                    break v;
                }
            };
            if reply["type"] == "error" {
                if let Some(ms) = reply["retry_after_ms"].as_u64() {
                    self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(ms.max(1))).await;
                    continue;
                }
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            return Some(reply);
        }
    }
}

fn sources(n: u8) -> Vec<IpAddr> {
    (1..=n.max(1))
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}

/// Microseconds from 1 µs to 10 minutes.
fn histogram() -> Result<Arc<Mutex<Histogram<u64>>>, String> {
    let h = Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
    Ok(Arc::new(Mutex::new(h)))
}

fn record(h: &Mutex<Histogram<u64>>, since: Instant) {
    let us = since.elapsed().as_micros() as u64;
    if let Ok(mut h) = h.lock() {
        let _ = h.record(us.max(1));
    }
}

fn cpu_seconds(pid: Option<u32>) -> f64 {
    pid.map(crate::run::cpu_seconds).unwrap_or(0.0)
}

/// Opens `n` clients over the source addresses, 256 connects at a time.
async fn open_all(a: &CoordArgs, n: usize, counters: &Arc<Counters>) -> Vec<Client> {
    let srcs = sources(a.sources);
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let opened = futures_util::future::join_all(
            chunk
                .iter()
                .map(|i| Client::open(a.server, srcs[i % srcs.len()], counters.clone())),
        )
        .await;
        out.extend(opened.into_iter().flatten());
    }
    out
}

pub fn coord(a: &CoordArgs) -> Result<CoordReport, String> {
    let rt = runtime().map_err(|e| format!("tokio runtime: {e}"))?;
    let mut report = rt.block_on(async {
        match a.kind {
            CoordKind::Claims => claims(a).await,
            CoordKind::Fanout => fanout(a).await,
            CoordKind::IdleAgents => idle_agents(a).await,
        }
    })?;
    report.kind = Some(a.kind);
    report.clients = a.clients;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

async fn claims(a: &CoordArgs) -> Result<CoordReport, String> {
    let counters = Arc::new(Counters::default());
    let run = format!("{:x}", std::process::id());
    let mut r = CoordReport::default();
    // The queue first, over one connection with many requests in flight.
    let t = Instant::now();
    let mut producer = Client::open(a.server, sources(1)[0], counters.clone())
        .await
        .ok_or("cannot connect")?;
    let mut created = 0;
    for i in 0..a.tasks {
        let task = json!({"type": "task_create", "task_id": format!("{run}-{i}"),
            "task_type": "bench", "priority": (i % 4) * 25, "task_data": {"n": i}, "swarm": run});
        if producer
            .ask(&task)
            .await
            .is_some_and(|v| v["type"] == "task_created")
        {
            created += 1;
        }
    }
    r.created_per_s = created as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let agents = open_all(a, a.clients, &counters).await;
    // Every agent joins the swarm before the first claim (each join is told to the members
    // already there), so the claims are measured on their own.
    let joins = agents.into_iter().enumerate().map(|(i, mut agent)| {
        let run = run.clone();
        tokio::spawn(async move {
            let reg = json!({"type": "agent_register", "agent_id": format!("{run}-agent-{i}"),
                "agent_type": "bench", "capabilities": [], "swarm": run});
            let ok = agent.ask(&reg).await?["type"] == "agent_registered";
            ok.then_some((i, agent))
        })
    });
    let agents: Vec<(usize, Client)> = futures_util::future::join_all(joins)
        .await
        .into_iter()
        .filter_map(|j| j.ok().flatten())
        .collect();
    r.connect_secs = t.elapsed().as_secs_f64();
    let (claim_h, complete_h) = (histogram()?, histogram()?);
    let assigned: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let cpu0 = cpu_seconds(a.server_pid);
    let t = Instant::now();
    let mut jobs = Vec::new();
    for (i, mut agent) in agents {
        let (run, claim_h, complete_h, assigned) = (
            run.clone(),
            claim_h.clone(),
            complete_h.clone(),
            assigned.clone(),
        );
        jobs.push(tokio::spawn(async move {
            let id = format!("{run}-agent-{i}");
            loop {
                let t = Instant::now();
                let got = agent
                    .ask(&json!({"type": "task_claim", "agent_id": id}))
                    .await?;
                record(&claim_h, t);
                if got["type"] != "task_assigned" {
                    return Some(());
                }
                let task = got["task"]["task_id"].as_str()?.to_owned();
                if let Ok(mut m) = assigned.lock() {
                    *m.entry(task.clone()).or_default() += 1;
                }
                let t = Instant::now();
                let done = json!({"type": "task_complete", "task_id": task, "agent_id": id,
                    "result": {"ok": true}});
                agent.ask(&done).await?;
                record(&complete_h, t);
            }
        }));
    }
    for j in jobs {
        let _ = j.await;
    }
    let secs = t.elapsed().as_secs_f64();
    r.server_cpu_s = cpu_seconds(a.server_pid) - cpu0;
    let assigned = assigned.lock().map_err(|_| "poisoned")?;
    r.claimed = assigned.len();
    r.claims_per_s = r.claimed as f64 / secs;
    r.assigned_twice = assigned.values().filter(|n| **n > 1).count();
    r.never_assigned = created - r.claimed;
    r.claim = Latency::of(&claim_h);
    r.complete = Latency::of(&complete_h);
    r.rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    r.errors = counters.errors.load(Ordering::Relaxed);
    Ok(r)
}

async fn fanout(a: &CoordArgs) -> Result<CoordReport, String> {
    let counters = Arc::new(Counters::default());
    let topic = format!("bench-{:x}", std::process::id());
    let mut r = CoordReport::default();
    let t = Instant::now();
    let subscribers = open_all(a, a.clients, &counters).await;
    r.connect_secs = t.elapsed().as_secs_f64();
    let origin = Instant::now();
    let delivery = histogram()?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut ready = Vec::new();
    for mut s in subscribers {
        s.ask(&json!({"type": "subscribe_topic", "topic": topic}))
            .await
            .ok_or("subscribe failed")?;
        let (delivery, delivered, done) = (delivery.clone(), delivered.clone(), done.clone());
        ready.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let Ok(Some(Ok(m))) =
                    tokio::time::timeout(Duration::from_millis(200), s.ws.next()).await
                else {
                    continue;
                };
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["type"] == "message" {
                    let sent = v["payload"]["sent_us"].as_u64().unwrap_or(0);
                    let now = origin.elapsed().as_micros() as u64;
                    if let Ok(mut h) = delivery.lock() {
                        let _ = h.record(now.saturating_sub(sent).max(1));
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut publisher = Client::open(a.server, sources(1)[0], counters.clone())
        .await
        .ok_or("cannot connect")?;
    let cpu0 = cpu_seconds(a.server_pid);
    let every = Duration::from_secs_f64(1.0 / a.rate.max(0.001));
    let start = Instant::now();
    for i in 0..a.messages {
        tokio::time::sleep_until((start + every * i as u32).into()).await;
        let sent_us = origin.elapsed().as_micros() as u64;
        let m = json!({"type": "publish", "topic": topic, "ordering_key": "k",
            "payload": {"n": i, "sent_us": sent_us}});
        publisher.ask(&m).await.ok_or("publish failed")?;
    }
    r.deliveries_expected = a.clients * a.messages;
    let wait = Instant::now();
    while delivered.load(Ordering::Relaxed) < r.deliveries_expected
        && wait.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for j in ready {
        let _ = j.await;
    }
    r.server_cpu_s = cpu_seconds(a.server_pid) - cpu0;
    r.deliveries = delivered.load(Ordering::Relaxed);
    r.delivery = Latency::of(&delivery);
    r.rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    r.errors = counters.errors.load(Ordering::Relaxed);
    Ok(r)
}

/// Registers, then only heartbeats (well inside the server's 30 s default timeout).
async fn live_idle(mut agent: Client, id: String, register: Value) -> Option<()> {
    agent.ask(&register).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        agent
            .ask(&json!({"type": "heartbeat", "agent_id": id}))
            .await?;
    }
}

async fn idle_agents(a: &CoordArgs) -> Result<CoordReport, String> {
    let counters = Arc::new(Counters::default());
    let run = format!("{:x}", std::process::id());
    let mut r = CoordReport {
        baseline_rss_kb: a.server_pid.map(rss_kb).unwrap_or(0),
        ..Default::default()
    };
    let t = Instant::now();
    let agents = open_all(a, a.clients, &counters).await;
    let mut held = Vec::new();
    for (i, agent) in agents.into_iter().enumerate() {
        let id = format!("{run}-idle-{i}");
        let swarm = format!("{run}-{}", i / a.swarm_size.max(1));
        let reg = json!({"type": "agent_register", "agent_id": id, "agent_type": "idle",
            "capabilities": ["x"], "swarm": swarm});
        held.push(tokio::spawn(live_idle(agent, id, reg)));
    }
    r.connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    r.loaded_rss_kb = a.server_pid.map(rss_kb).unwrap_or(0);
    let open = counters.open.load(Ordering::Relaxed).max(1);
    r.bytes_per_idle_agent =
        r.loaded_rss_kb.saturating_sub(r.baseline_rss_kb) as f64 * 1024.0 / open as f64;
    r.errors = counters.errors.load(Ordering::Relaxed);
    r.rate_limited = counters.rate_limited.load(Ordering::Relaxed);
    for h in held {
        h.abort();
    }
    Ok(r)
}
