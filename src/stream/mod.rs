//! Client streams (PROTOCOL.md §Streams): WebSocket sessions on `/api/v1/ws` and SSE on
//! `/api/v1/stream/...`.
//!
//! - `wire`: RFC 6455 framing with our own buffer discipline (nothing held while quiet).
//! - `proto`: the JSON frames.
//! - `session`: the session actor, one per WebSocket.
//! - `sse`: SSE search and subscription streams (actix-web responses).
//!
//! WebSocket upgrades never reach actix-web: the listener (`crate::server`) peeks at each new
//! connection's request line and hands `GET /api/v1/ws` to `serve_upgrade`, because actix-web's
//! HTTP/1 dispatcher keeps 16 KB of buffers per connection for its whole life, which would be
//! most of an idle stream's memory. Everything else is served by actix-web on the same port.
//!
//! `Streams` is the registry: it admits new streams (limit, drain), counts them by kind, drives
//! heartbeats and idle eviction with one sweeper for all sessions (no timer per stream) and
//! drains them on shutdown.

pub mod proto;
pub mod session;
pub mod sse;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::web;
use dashmap::DashMap;
use ruvector_actors::{EngineError, Overload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::settings::StreamSettings;
use crate::supervise::Class;
use actix_web::ResponseError;
use session::{Drain, Session, Tick};

/// The request line prefix that routes a connection to the WebSocket layer.
pub const WS_PATH: &[u8] = b"GET /api/v1/ws";
/// Largest upgrade request head accepted.
const MAX_HEAD: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ws,
    Sse,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ws => "ws",
            Kind::Sse => "sse",
        }
    }
}

/// An admitted stream; dropping it gives the slot back.
pub struct Permit {
    streams: Arc<Streams>,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("ruvector_streams_open", "kind" => self.kind.label()).decrement(1.0);
    }
}

pub struct Streams {
    cfg: StreamSettings,
    open: AtomicUsize,
    draining: AtomicBool,
    /// Every session and the time of its client's last frame (ms since `epoch`).
    sessions: DashMap<Addr<Session>, Arc<AtomicU64>>,
    drain_tx: watch::Sender<bool>,
    epoch: Instant,
}

static QUERY_IDS: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique search id (the frames' `query_id`).
pub fn next_query_id() -> u64 {
    QUERY_IDS.fetch_add(1, Ordering::Relaxed)
}

impl Streams {
    pub fn new(cfg: StreamSettings) -> Arc<Streams> {
        Arc::new(Streams {
            cfg,
            open: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            sessions: DashMap::new(),
            drain_tx: watch::channel(false).0,
            epoch: Instant::now(),
        })
    }

    /// Admits a new stream, or says why not (`overloaded`: at the limit, or draining).
    pub fn admit(self: &Arc<Self>, kind: Kind) -> Result<Permit, EngineError> {
        if self.draining.load(Ordering::Acquire) {
            metrics::counter!("ruvector_streams_refused_total", "reason" => "draining")
                .increment(1);
            return Err(EngineError::Overloaded(Overload::Draining));
        }
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        if n >= self.cfg.max_streams {
            self.open.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("ruvector_streams_refused_total", "reason" => "max_streams")
                .increment(1);
            return Err(EngineError::Overloaded(Overload::TooManyStreams(
                self.cfg.max_streams,
            )));
        }
        metrics::gauge!("ruvector_streams_open", "kind" => kind.label()).increment(1.0);
        metrics::counter!("ruvector_streams_opened_total", "kind" => kind.label()).increment(1);
        Ok(Permit {
            streams: self.clone(),
            kind,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Becomes true when the server drains (SSE streams watch it).
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain_tx.subscribe()
    }

    /// Milliseconds since the registry started (the clock of session activity).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers a session; it stores its client's last activity into the returned cell.
    pub(crate) fn register(&self, addr: Addr<Session>) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(self.now_ms()));
        self.sessions.insert(addr, cell.clone());
        cell
    }

    /// Closes (4001) up to `batch` WebSocket sessions whose client sent nothing for `idle`,
    /// the longest idle first. Returns how many were asked to close.
    pub fn close_idle(&self, idle: Duration, batch: usize) -> usize {
        let Some(cutoff) = self.now_ms().checked_sub(idle.as_millis() as u64) else {
            return 0;
        };
        let mut idle: Vec<(u64, Addr<Session>)> = self
            .sessions
            .iter()
            .filter_map(|e| {
                let last = e.value().load(Ordering::Relaxed);
                (last <= cutoff).then(|| (last, e.key().clone()))
            })
            .collect();
        idle.sort_by_key(|(last, _)| *last);
        idle.truncate(batch);
        for (_, addr) in &idle {
            addr.do_send(session::CloseIdle);
        }
        idle.len()
    }

    pub(crate) fn unregister(&self, addr: &Addr<Session>) {
        self.sessions.remove(addr);
    }

    /// How often sessions are checked: a quarter of the shortest timer, within 20 ms .. 5 s.
    fn sweep_every(&self) -> Duration {
        let shortest = self
            .cfg
            .heartbeat_interval_ms
            .min(self.cfg.idle_timeout_ms)
            .min(self.cfg.write_timeout_ms);
        Duration::from_millis((shortest / 4).clamp(20, 5000))
    }

    /// Starts the sweeper on the current arbiter: every session gets a `Tick` per period.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let me = self.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(me.sweep_every());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let t = Instant::now();
                for e in me.sessions.iter() {
                    e.key().do_send(Tick);
                }
                metrics::histogram!("ruvector_stream_sweep_seconds")
                    .record(t.elapsed().as_secs_f64());
            }
        });
    }

    /// Refuses new streams, asks every open one to finish its in-flight replies and close (WS
    /// 1001; SSE ends), and waits for them until `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        self.draining.store(true, Ordering::Release);
        let _ = self.drain_tx.send(true);
        for e in self.sessions.iter() {
            e.key().do_send(Drain);
        }
        while self.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.open() > 0 {
            tracing::warn!(
                open = self.open(),
                "streams still open at the drain deadline"
            );
        }
    }
}

/// Whether a new connection's request line is a WebSocket request (peeked, not consumed).
pub async fn is_ws_request(io: &TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; WS_PATH.len() + 1];
    let deadline = Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), io.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || !WS_PATH.starts_with(&buf[..n.min(WS_PATH.len())]) {
            return false;
        }
        if n == buf.len() {
            return matches!(buf[WS_PATH.len()], b' ' | b'?');
        }
        // A request line split across packets: wait for more bytes. Peeking leaves the socket
        // readable, so its readiness is cleared first and the wait is on the next arrival (not
        // a timer: 2,000 sockets that sent `G` once cost 0.7 cores polled every 2 ms).
        let _ = io.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
        if tokio::time::timeout_at(deadline.into(), io.readable())
            .await
            .is_err()
        {
            return false;
        }
    }
}

async fn refuse(mut io: TcpStream, e: &ApiError) {
    let status = e.status_code();
    let body = wire::http_error(
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        e.code(),
        &e.to_string(),
        e.retry_after_ms(),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), io.write_all(&body)).await;
    let _ = io.shutdown().await;
}

/// Completes a WebSocket upgrade and starts its session actor on this thread.
pub async fn serve_upgrade(mut io: TcpStream, app: web::Data<AppState>) {
    let timeout = Duration::from_millis(app.settings.server.client_request_timeout_ms);
    let read_head = async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            head.extend_from_slice(&chunk[..n]);
            match wire::parse_upgrade(&head) {
                Ok(Some(u)) => return Ok(Ok(u)),
                Ok(None) if head.len() > MAX_HEAD => return Ok(Err("request head too large")),
                Ok(None) => {}
                Err(why) => return Ok(Err(why)),
            }
        }
    };
    let upgrade = match tokio::time::timeout(timeout, read_head).await {
        Ok(Ok(Ok(u))) => u,
        Ok(Ok(Err(why))) => {
            metrics::counter!("ruvector_streams_refused_total", "reason" => "bad_upgrade")
                .increment(1);
            refuse(io, &ApiError::invalid(why)).await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    if !app.health.is_loaded() {
        let e = EngineError::Overloaded(Overload::Loading);
        refuse(io, &e.into()).await;
        return;
    }
    // Credentials with the upgrade, else an `auth` frame must come first.
    let peer = io.peer_addr().ok().map(|a| a.ip());
    let principal = match (&upgrade.token, app.auth.enabled()) {
        (_, false) => Some(Arc::new(Principal::anonymous(peer))),
        (Some(t), true) => match app.auth.authenticate(Some(t), peer) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                refuse(io, &e).await;
                return;
            }
        },
        (None, true) => None,
    };
    let caller = principal
        .clone()
        .unwrap_or_else(|| Arc::new(Principal::anonymous(peer)));
    if let Err(e) = app.supervisor.admit(&caller, Class::Stream) {
        refuse(io, &e).await;
        return;
    }
    let permit = match app.streams.admit(Kind::Ws) {
        Ok(p) => p,
        Err(e) => {
            refuse(io, &e.into()).await;
            return;
        }
    };
    let reply = wire::switching_protocols(&upgrade.accept);
    match tokio::time::timeout(timeout, io.write_all(&reply)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let _ = io.set_nodelay(true);
    Session::start(app, principal, io, permit, upgrade.rest);
}
