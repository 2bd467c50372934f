//! Running a streams scenario: many WebSocket streams over several source addresses, split over
//! worker processes past `max_streams_per_worker`, phases of request rates, and measurement.
//!
//! The driver preloads data, starts the workers (one in-process, or child processes of this
//! binary running `worker`), waits until every stream is connected, then starts the phases on
//! all workers at once. Each second it samples the server (RSS and CPU from /proc when its pid
//! is known, the shed level from /metrics). Workers measure request latency (per kind), time to
//! first result and end-to-end event latency in HDR histograms, count errors by code and closes
//! by close code, and keep a per-second series; the driver merges them into a `Report`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::data::Rng;
use crate::report::{Percentiles, PhaseStats, Report, SeriesPoint, ServerStats};
use crate::scenario::{Scenario, StreamLoad};
use crate::streams::rss_kb;

/// What one worker runs: its share of the streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub server: SocketAddr,
    pub load: StreamLoad,
    /// Global index of this worker's first stream and how many it runs.
    pub first: usize,
    pub count: usize,
    pub seed: u64,
}

/// A histogram as (value, count) pairs, so workers in other processes can send theirs.
pub type Buckets = Vec<(u64, u64)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub answered: u64,
    pub errors: u64,
    pub latency: Buckets,
}

/// What a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerOutput {
    pub connected: usize,
    pub connect_failures: usize,
    pub sent: u64,
    pub answered: u64,
    pub skipped: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    pub closes_by_code: BTreeMap<String, u64>,
    pub latency: BTreeMap<String, Buckets>,
    pub series: Vec<Second>,
}

/// 1 µs to 10 min, 3 significant digits.
fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

fn buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn record_buckets(h: &mut Histogram<u64>, b: &Buckets) {
    for (v, n) in b {
        let _ = h.record_n(*v, *n);
    }
}

/// A worker's running tallies.
struct Tally {
    start: Option<Instant>,
    out: WorkerOutput,
    latency: BTreeMap<&'static str, Histogram<u64>>,
    seconds: Vec<(u64, u64, Histogram<u64>)>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            start: None,
            out: WorkerOutput::default(),
            latency: BTreeMap::new(),
            seconds: Vec::new(),
        }
    }

    fn second(&mut self) -> Option<&mut (u64, u64, Histogram<u64>)> {
        let i = self.start?.elapsed().as_secs() as usize;
        while self.seconds.len() <= i {
            self.seconds.push((0, 0, hist()));
        }
        self.seconds.get_mut(i)
    }

    fn answered(&mut self, kind: &'static str, micros: u64) {
        self.out.answered += 1;
        let _ = self
            .latency
            .entry(kind)
            .or_insert_with(hist)
            .record(micros.max(1));
        if let Some(s) = self.second() {
            s.0 += 1;
            let _ = s.2.record(micros.max(1));
        }
    }

    fn observe(&mut self, kind: &'static str, micros: u64) {
        let _ = self
            .latency
            .entry(kind)
            .or_insert_with(hist)
            .record(micros.max(1));
    }

    fn error(&mut self, code: &str) {
        *self.out.errors_by_code.entry(code.to_owned()).or_default() += 1;
        if let Some(s) = self.second() {
            s.1 += 1;
        }
    }

    fn closed(&mut self, code: String) {
        *self.out.closes_by_code.entry(code).or_default() += 1;
    }

    fn finish(mut self) -> WorkerOutput {
        self.out.latency = self
            .latency
            .iter()
            .map(|(k, h)| (k.to_string(), buckets(h)))
            .collect();
        self.out.series = self
            .seconds
            .iter()
            .map(|(a, e, h)| Second {
                answered: *a,
                errors: *e,
                latency: buckets(h),
            })
            .collect();
        self.out
    }
}

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn random_vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.normal()).collect()
}

#[derive(Clone, Copy)]
enum Sent {
    Search(Instant, bool),
    Insert(Instant),
    Ping(Instant),
}

/// Messages from a worker to the driver.
pub enum Progress {
    Connected(usize, usize),
    Tick(u64, u64),
    Done(Box<WorkerOutput>),
}

async fn one_stream(
    plan: Arc<Plan>,
    index: usize,
    tally: Arc<Mutex<Tally>>,
    gate: Arc<Semaphore>,
    mut go: watch::Receiver<Option<Instant>>,
) {
    let l = &plan.load;
    let global = plan.first + index;
    let src = IpAddr::from([
        127,
        0,
        0,
        1 + (global % usize::from(l.sources.max(1))) as u8,
    ]);
    let permit = gate.acquire().await;
    let connect = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let stream = sock.connect(plan.server).await?;
        let cfg = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        tokio_tungstenite::client_async_with_config(
            format!("ws://{}/api/v1/ws", plan.server),
            stream,
            Some(cfg),
        )
        .await
        .map_err(std::io::Error::other)
    };
    let ws = tokio::time::timeout(Duration::from_secs(30), connect).await;
    drop(permit);
    let Ok(Ok((mut ws, _))) = ws else {
        if let Ok(mut t) = tally.lock() {
            t.out.connect_failures += 1;
        }
        return;
    };
    if let Ok(mut t) = tally.lock() {
        t.out.connected += 1;
    }
    let total_streams = (l.count as f64).max(1.0);
    let subscriber = (global as f64) < (total_streams * l.subscribe_fraction).ceil();
    if subscriber {
        let f = json!({"type": "subscribe", "id": "sub", "collection": l.collection});
        let _ = ws.send(Message::text(f.to_string())).await;
    }
    // Wait for the start (reading meanwhile, so heartbeats are answered).
    let start = loop {
        if let Some(t) = *go.borrow() {
            break t;
        }
        tokio::select! {
            m = ws.next() => if matches!(m, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                if let Ok(mut t) = tally.lock() { t.closed("before_start".into()); }
                return;
            },
            r = go.changed() => if r.is_err() { return },
        }
    };
    let mut rng = Rng::new(plan.seed ^ (global as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mix = &l.mix;
    let mix_total = (mix.search + mix.insert + mix.ping).max(f64::MIN_POSITIVE);
    let mut pending: std::collections::HashMap<u64, Sent> = std::collections::HashMap::new();
    let mut next_id: u64 = 0;
    let mut phase_start = start;
    let mut closed = false;
    let mut backoff: Option<Instant> = None;
    'phases: for phase in &l.phases {
        let phase_end = phase_start + Duration::from_secs_f64(phase.duration_s);
        let interval =
            (phase.rate > 0.0).then(|| Duration::from_secs_f64(total_streams / phase.rate));
        let mut next =
            interval.map(|i| phase_start + i.mul_f64((rng.next_u64() % 1000) as f64 / 1000.0));
        loop {
            let wake = match next {
                Some(n) if n < phase_end => n,
                _ => phase_end,
            };
            tokio::select! {
                m = ws.next() => {
                    if !handle(m, &mut pending, &tally, &mut backoff) {
                        closed = true;
                        break 'phases;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if wake >= phase_end {
                        break;
                    }
                    if let (Some(n), Some(i)) = (next.as_mut(), interval) {
                        *n += i;
                    }
                    if backoff.is_some_and(|b| Instant::now() < b) || pending.len() >= l.max_inflight_per_stream {
                        if let Ok(mut t) = tally.lock() { t.out.skipped += 1; }
                        continue;
                    }
                    next_id += 1;
                    let pick = (rng.next_u64() % 1_000_000) as f64 / 1_000_000.0 * mix_total;
                    let now = Instant::now();
                    let (frame, sent) = if pick < mix.search {
                        let q = random_vector(&mut rng, l.dimension);
                        (json!({"type": "search", "id": next_id, "collection": l.collection, "query": q, "k": l.k}), Sent::Search(now, false))
                    } else if pick < mix.search + mix.insert {
                        let v = random_vector(&mut rng, l.dimension);
                        (json!({"type": "insert", "id": next_id, "collection": l.collection,
                                "points": [{"vector": v, "metadata": {"t": unix_micros()}}]}), Sent::Insert(now))
                    } else {
                        (json!({"type": "ping", "id": next_id}), Sent::Ping(now))
                    };
                    if ws.send(Message::text(frame.to_string())).await.is_err() {
                        closed = true;
                        if let Ok(mut t) = tally.lock() { t.closed("send_failed".into()); }
                        break 'phases;
                    }
                    pending.insert(next_id, sent);
                    if let Ok(mut t) = tally.lock() { t.out.sent += 1; }
                }
            }
        }
        phase_start = phase_end;
    }
    if closed {
        return;
    }
    // Let the last replies arrive, then close.
    let until = Instant::now() + Duration::from_secs(3);
    while !pending.is_empty() && Instant::now() < until {
        match tokio::time::timeout_at(until.into(), ws.next()).await {
            Ok(m) => {
                if !handle(m, &mut pending, &tally, &mut backoff) {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    if let Ok(mut t) = tally.lock() {
        for _ in 0..pending.len() {
            t.error("no_reply");
        }
    }
    let _ = ws.close(None).await;
}

/// Handles one incoming message; `false` when the stream is gone.
fn handle(
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    pending: &mut std::collections::HashMap<u64, Sent>,
    tally: &Arc<Mutex<Tally>>,
    backoff: &mut Option<Instant>,
) -> bool {
    let text = match m {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Close(f))) => {
            let code = f
                .map(|f| u16::from(f.code).to_string())
                .unwrap_or_else(|| "none".into());
            if let Ok(mut t) = tally.lock() {
                t.closed(code);
            }
            return false;
        }
        Some(Ok(_)) => return true,
        Some(Err(_)) | None => {
            if let Ok(mut t) = tally.lock() {
                t.closed("reset".into());
            }
            return false;
        }
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return true;
    };
    let id = v["id"].as_u64();
    let Ok(mut t) = tally.lock() else {
        return true;
    };
    let micros = |since: Instant| since.elapsed().as_micros() as u64;
    match (
        v["type"].as_str().unwrap_or(""),
        id.and_then(|i| pending.get_mut(&i).map(|s| (i, s))),
    ) {
        ("result", Some((_, Sent::Search(at, first)))) if !*first => {
            *first = true;
            t.observe("search_first_result", micros(*at));
        }
        ("search_complete", Some((i, Sent::Search(at, first)))) => {
            if !*first {
                t.observe("search_first_result", micros(*at));
            }
            t.answered("search", micros(*at));
            pending.remove(&i);
        }
        ("ack", Some((i, Sent::Insert(at)))) => {
            t.answered("insert", micros(*at));
            pending.remove(&i);
        }
        ("pong", Some((i, Sent::Ping(at)))) => {
            t.answered("ping", micros(*at));
            pending.remove(&i);
        }
        ("error", entry) => {
            t.error(v["code"].as_str().unwrap_or("unknown"));
            // A well-behaved client waits as told before sending again.
            if let Some(ms) = v["retry_after_ms"].as_u64() {
                let until = Instant::now() + Duration::from_millis(ms);
                *backoff = Some(backoff.map_or(until, |b| b.max(until)));
            }
            if let Some((i, _)) = entry {
                pending.remove(&i);
            }
        }
        ("event", _) => {
            if let Some(sent) = v["metadata"]["t"].as_u64() {
                t.observe("event_end_to_end", unix_micros().saturating_sub(sent));
            }
        }
        _ => {}
    }
    true
}

/// Runs one worker's share; reports through `progress` and waits for `go` to start the phases.
pub fn run_worker(plan: Plan, progress: mpsc::Sender<Progress>, go: mpsc::Receiver<()>) {
    let rt = match crate::streams::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("worker runtime: {e}");
            let _ = progress.send(Progress::Done(Box::default()));
            return;
        }
    };
    let plan = Arc::new(plan);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let gate = Arc::new(Semaphore::new(plan.load.connect_parallel.max(1)));
    let (go_tx, go_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(plan.count);
    for i in 0..plan.count {
        tasks.push(rt.spawn(one_stream(
            plan.clone(),
            i,
            tally.clone(),
            gate.clone(),
            go_rx.clone(),
        )));
    }
    let counts = |t: &Arc<Mutex<Tally>>| {
        t.lock()
            .map(|t| {
                (
                    t.out.connected,
                    t.out.connect_failures,
                    t.out.answered,
                    t.out.errors_by_code.values().sum::<u64>(),
                )
            })
            .unwrap_or_default()
    };
    loop {
        let (ok, failed, _, _) = counts(&tally);
        let _ = progress.send(Progress::Connected(ok, failed));
        if ok + failed >= plan.count {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if go.recv().is_err() {
        return;
    }
    let start = Instant::now();
    if let Ok(mut t) = tally.lock() {
        t.start = Some(start);
    }
    let _ = go_tx.send(Some(start));
    let all = rt.spawn(futures_util::future::join_all(tasks));
    while !all.is_finished() {
        std::thread::sleep(Duration::from_millis(500));
        let (_, _, answered, errors) = counts(&tally);
        let _ = progress.send(Progress::Tick(answered, errors));
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let out = match Arc::try_unwrap(tally) {
        Ok(m) => m.into_inner().map(Tally::finish).unwrap_or_default(),
        Err(shared) => shared
            .lock()
            .map(|mut t| std::mem::replace(&mut *t, Tally::new()).finish())
            .unwrap_or_default(),
    };
    let _ = progress.send(Progress::Done(Box::new(out)));
}

/// The `worker` subcommand: a plan as JSON on stdin, then `go` on stdin; progress lines and the
/// result on stdout (`C ok failed`, `P answered errors`, `R {json}`).
pub fn worker_main() -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let plan: Plan = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    let (ptx, prx) = mpsc::channel();
    let (gtx, grx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut l)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            if l.trim() == "go" {
                let _ = gtx.send(());
            }
            l.clear();
        }
    });
    std::thread::spawn(move || run_worker(plan, ptx, grx));
    let mut out = std::io::stdout().lock();
    for p in prx {
        let line = match p {
            Progress::Connected(a, b) => format!("C {a} {b}"),
            Progress::Tick(a, e) => format!("P {a} {e}"),
            Progress::Done(o) => format!(
                "R {}",
                serde_json::to_string(&o).map_err(|e| e.to_string())?
            ),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if line.starts_with('R') {
            break;
        }
    }
    Ok(())
}

/// A running worker, in this process or a child.
struct WorkerHandle {
    progress: mpsc::Receiver<Progress>,
    go: Box<dyn FnOnce() + Send>,
}

fn spawn_worker(plan: Plan, in_process: bool) -> Result<WorkerHandle, String> {
    let (ptx, prx) = mpsc::channel();
    if in_process {
        let (gtx, grx) = mpsc::channel();
        std::thread::spawn(move || run_worker(plan, ptx, grx));
        return Ok(WorkerHandle {
            progress: prx,
            go: Box::new(move || {
                let _ = gtx.send(());
            }),
        });
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("worker process: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("worker stdin")?;
    let stdout = child.stdout.take().ok_or("worker stdout")?;
    writeln!(
        stdin,
        "{}",
        serde_json::to_string(&plan).map_err(|e| e.to_string())?
    )
    .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.splitn(3, ' ');
            let p = match (parts.next(), parts.next(), parts.next()) {
                (Some("C"), Some(a), Some(b)) => {
                    Progress::Connected(a.parse().unwrap_or(0), b.parse().unwrap_or(0))
                }
                (Some("P"), Some(a), Some(e)) => {
                    Progress::Tick(a.parse().unwrap_or(0), e.parse().unwrap_or(0))
                }
                (Some("R"), Some(_), _) => {
                    let json = line.get(2..).unwrap_or("{}");
                    Progress::Done(Box::new(serde_json::from_str(json).unwrap_or_default()))
                }
                _ => continue,
            };
            let done = matches!(p, Progress::Done(_));
            if ptx.send(p).is_err() || done {
                break;
            }
        }
        let _ = child.wait();
    });
    Ok(WorkerHandle {
        progress: prx,
        go: Box::new(move || {
            let _ = writeln!(stdin, "go");
            let _ = stdin.flush();
        }),
    })
}

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

/// The blocking HTTP client every command of this crate uses (60 s timeout).
pub(crate) fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
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
fn cpu_seconds(pid: u32) -> f64 {
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
