//! Idle-scale: open and hold many idle streams — WebSocket (answering the server's heartbeats)
//! or SSE subscriptions — measure the server's resident memory per stream, then optionally burst
//! (WebSocket: one large message from every stream, answered; SSE: one point with large metadata
//! inserted, so every subscriber is sent one large event) and watch the server's memory come
//! back down.
//!
//! Connections are spread over several 127.0.0.x source addresses (about 28k ephemeral ports
//! each). The server's memory is read from `/proc/<pid>/status` (`VmRSS`), so the server must run
//! on this machine.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// Which streams to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    #[default]
    Ws,
    Sse,
}

/// The collection SSE streams subscribe to (created by the run).
const SSE_COLLECTION: &str = "idle-scale";
/// Largest metadata pad of the SSE burst (under the server's default `max_metadata_bytes`).
const SSE_MAX_PAD: usize = 60_000;

#[derive(Debug, Clone)]
pub struct IdleScale {
    pub kind: StreamKind,
    /// `host:port` of the server.
    pub server: SocketAddr,
    pub conns: usize,
    /// Source addresses to spread connections over.
    pub sources: Vec<IpAddr>,
    /// Connection attempts in flight at once.
    pub connect_parallel: usize,
    /// Wait after the last connection before measuring (heartbeats run meanwhile).
    pub settle: Duration,
    /// Size of the one message every stream sends in the burst (0: no burst).
    pub burst_bytes: usize,
    /// How long to watch memory after the burst.
    pub recover: Duration,
    pub server_pid: Option<u32>,
}

#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub kind: StreamKind,
    pub conns_requested: usize,
    pub conns_open: usize,
    pub connect_failures: usize,
    pub closed_by_server: usize,
    pub connect_secs: f64,
    pub baseline_rss_kb: u64,
    pub idle_rss_kb: u64,
    /// (idle - baseline) / open streams.
    pub bytes_per_idle_stream: f64,
    pub burst_bytes: usize,
    pub burst_replies: usize,
    pub burst_secs: f64,
    pub burst_peak_rss_kb: u64,
    /// (seconds after the burst's last reply, RSS kB), once a second.
    pub after_burst: Vec<(f64, u64)>,
    /// First sample within 10% of the idle figure (per stream above baseline).
    pub recovered_after_secs: Option<f64>,
    pub bytes_per_stream_after_recovery: Option<f64>,
}

/// Resident memory of a process, kB.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A client WebSocket of the load generator.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens `/api/v1/ws` from source address `src`, with small client buffers (many are held).
pub async fn connect_ws(server: SocketAddr, src: IpAddr) -> std::io::Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = sock.connect(server).await?;
    let url = format!("ws://{server}/api/v1/ws");
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_cfg))
        .await
        .map_err(std::io::Error::other)?;
    Ok(ws)
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    replies: AtomicUsize,
}

async fn hold(
    cfg: Arc<IdleScale>,
    i: usize,
    counters: Arc<Counters>,
    gate: Arc<Semaphore>,
    mut burst: watch::Receiver<Option<Bytes>>,
) {
    let permit = gate.acquire().await;
    let src = cfg.sources[i % cfg.sources.len()];
    let connect = connect_ws(cfg.server, src);
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(ws)) => ws,
        _ => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.open.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(_))) => {
                    counters.replies.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                    counters.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
            changed = burst.changed() => {
                if changed.is_err() {
                    return;
                }
                let payload = burst.borrow_and_update().clone();
                if let Some(b) = payload {
                    if let Ok(text) = Utf8Bytes::try_from(b) {
                        let _ = ws.send(Message::Text(text)).await;
                    }
                }
            }
        }
    }
}

/// Holds one SSE subscription: counts its `event` events as replies, EOF as a close.
async fn hold_sse(cfg: Arc<IdleScale>, i: usize, counters: Arc<Counters>, gate: Arc<Semaphore>) {
    let permit = gate.acquire().await;
    let src = cfg.sources[i % cfg.sources.len()];
    let connect = async {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(src, 0))?;
        let mut stream = sock.connect(cfg.server).await?;
        let head = format!(
            "GET /api/v1/stream/subscribe?collection={SSE_COLLECTION} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            cfg.server
        );
        stream.write_all(head.as_bytes()).await?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || got.len() > 16 * 1024 {
                return Err(std::io::Error::other("no response head"));
            }
            got.extend_from_slice(&buf[..n]);
        }
        if !got.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("refused"));
        }
        Ok(stream)
    };
    let mut stream = match tokio::time::timeout(Duration::from_secs(30), connect).await {
        Ok(Ok(s)) => s,
        _ => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.open.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    const MARK: &[u8] = b"event: event";
    let mut buf = vec![0u8; 16 * 1024];
    // The end of the previous read, so a marker split across two reads is still seen.
    let mut carry = 0;
    loop {
        match stream.read(&mut buf[carry..]).await {
            Ok(0) | Err(_) => {
                counters.closed.fetch_add(1, Ordering::Relaxed);
                counters.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Ok(n) => {
                let end = carry + n;
                let seen = buf[..end]
                    .windows(MARK.len())
                    .filter(|w| *w == MARK)
                    .count();
                counters.replies.fetch_add(seen, Ordering::Relaxed);
                carry = (MARK.len() - 1).min(end);
                buf.copy_within(end - carry..end, 0);
            }
        }
    }
}

/// Creates the collection SSE streams subscribe to (an existing one is fine).
fn create_sse_collection(server: SocketAddr) -> Result<(), String> {
    let url = format!("http://{server}/api/v1/collections/{SSE_COLLECTION}");
    let res = crate::client::http_client()
        .put(url)
        .json(&serde_json::json!({"dimension": 2}))
        .send()
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("creating {SSE_COLLECTION}: {}", res.status()));
    }
    Ok(())
}

/// The SSE burst: one point whose metadata pads its event to about `bytes`.
fn sse_burst(server: SocketAddr, bytes: usize) -> Result<(), String> {
    let pad = "x".repeat(bytes.clamp(1, SSE_MAX_PAD));
    let url = format!("http://{server}/api/v1/collections/{SSE_COLLECTION}/points");
    let body = serde_json::json!({"points": [{"vector": [1.0, 0.0], "metadata": {"pad": pad}}]});
    let res = crate::client::http_client()
        .put(url)
        .json(&body)
        .send()
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!("burst insert: {}", res.status()));
    }
    Ok(())
}

fn wait_until(mut what: impl FnMut() -> bool, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    what()
}

/// The client runtime: two threads (this machine has two cores).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Runs the scenario; `progress` is called with (phase, done, total).
pub fn idle_scale(cfg: IdleScale, progress: &dyn Fn(&str, usize, usize)) -> IdleReport {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return IdleReport::default();
        }
    };
    let pid = cfg.server_pid;
    let rss = || pid.map(rss_kb).unwrap_or(0);
    if cfg.kind == StreamKind::Sse {
        if let Err(e) = create_sse_collection(cfg.server) {
            eprintln!("{e}");
            return IdleReport::default();
        }
    }
    let mut report = IdleReport {
        kind: cfg.kind,
        conns_requested: cfg.conns,
        baseline_rss_kb: rss(),
        burst_bytes: cfg.burst_bytes,
        ..Default::default()
    };
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(cfg.connect_parallel.max(1)));
    let (burst_tx, burst_rx) = watch::channel(None);
    let cfg = Arc::new(cfg);
    let started = Instant::now();
    for i in 0..cfg.conns {
        match cfg.kind {
            StreamKind::Ws => rt.spawn(hold(
                cfg.clone(),
                i,
                counters.clone(),
                gate.clone(),
                burst_rx.clone(),
            )),
            StreamKind::Sse => rt.spawn(hold_sse(cfg.clone(), i, counters.clone(), gate.clone())),
        };
    }
    let settled = |c: &Counters| {
        c.open.load(Ordering::Relaxed)
            + c.failed.load(Ordering::Relaxed)
            + c.closed.load(Ordering::Relaxed)
            >= cfg.conns
    };
    while !settled(&counters) && started.elapsed() < Duration::from_secs(600) {
        progress("connect", counters.open.load(Ordering::Relaxed), cfg.conns);
        std::thread::sleep(Duration::from_millis(200));
    }
    report.connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(cfg.settle);
    report.conns_open = counters.open.load(Ordering::Relaxed);
    report.connect_failures = counters.failed.load(Ordering::Relaxed);
    report.idle_rss_kb = rss();
    let per_stream = |kb: u64, open: usize| {
        (kb.saturating_sub(report.baseline_rss_kb) as f64 * 1024.0) / open.max(1) as f64
    };
    report.bytes_per_idle_stream = per_stream(report.idle_rss_kb, report.conns_open);
    progress("idle", report.conns_open, cfg.conns);

    if cfg.burst_bytes > 0 {
        let pad = "x".repeat(cfg.burst_bytes.saturating_sub(40));
        let frame = format!(r#"{{"type":"ping","id":1,"pad":"{pad}"}}"#);
        let before = counters.replies.load(Ordering::Relaxed);
        let t = Instant::now();
        match cfg.kind {
            StreamKind::Ws => {
                let _ = burst_tx.send(Some(Bytes::from(frame)));
            }
            StreamKind::Sse => {
                if let Err(e) = sse_burst(cfg.server, cfg.burst_bytes) {
                    eprintln!("{e}");
                }
            }
        }
        let open = report.conns_open;
        let mut peak = 0;
        wait_until(
            || {
                peak = peak.max(rss());
                progress(
                    "burst",
                    counters.replies.load(Ordering::Relaxed) - before,
                    open,
                );
                counters.replies.load(Ordering::Relaxed) - before >= open
            },
            Duration::from_secs(300),
        );
        report.burst_secs = t.elapsed().as_secs_f64();
        report.burst_replies = counters.replies.load(Ordering::Relaxed) - before;
        report.burst_peak_rss_kb = peak.max(rss());
        let idle_per = report.bytes_per_idle_stream;
        let t = Instant::now();
        while t.elapsed() < cfg.recover {
            std::thread::sleep(Duration::from_secs(1));
            let kb = rss();
            let secs = t.elapsed().as_secs_f64();
            report.after_burst.push((secs, kb));
            let open = counters.open.load(Ordering::Relaxed);
            let per = per_stream(kb, open);
            if report.recovered_after_secs.is_none() && per <= idle_per * 1.1 {
                report.recovered_after_secs = Some(secs);
                report.bytes_per_stream_after_recovery = Some(per);
            }
            progress("recover", secs as usize, cfg.recover.as_secs() as usize);
        }
    }
    report.closed_by_server = counters.closed.load(Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}
