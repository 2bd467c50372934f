//! One worker of a streams scenario: its share of the WebSocket streams, each sending its mix of
//! searches, inserts and pings at the phase's rate and subscribing where asked, with latencies
//! (per kind, time to first result, end-to-end event latency) in HDR histograms, errors by code,
//! closes by close code and a per-second series. A worker runs in the driver's process or as a
//! child process (`ruvector-load worker`, plan on stdin, output on stdout).
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
use crate::scenario::StreamLoad;

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
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

pub fn buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn record_buckets(h: &mut Histogram<u64>, b: &Buckets) {
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

pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn random_vector(rng: &mut Rng, dim: usize) -> Vec<f32> {
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
/// A started worker: its progress reports, and the call that starts its phases.
pub struct WorkerHandle {
    pub progress: mpsc::Receiver<Progress>,
    pub go: Box<dyn FnOnce() + Send>,
}

pub fn spawn_worker(plan: Plan, in_process: bool) -> Result<WorkerHandle, String> {
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
