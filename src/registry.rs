//! The stream registry: admission of new streams (limit, drain), open streams counted by kind,
//! and the control messages every open stream obeys — `Tick` (heartbeats, timeouts),
//! `CloseIdle` (shedding) and `Drain` — sent by one sweeper for all streams (no timer per
//! stream). It knows streams only as a `Recipient<Control>`, so any transport (WebSocket
//! sessions, lean SSE streams, the coming coordination sessions) registers the same way and the
//! supervisor can act on streams without knowing what they are.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Message, Recipient};
use dashmap::DashMap;
use ruvector_actors::{EngineError, Overload};

use crate::lifecycle::Lifecycle;
use crate::settings::StreamSettings;

/// What every open stream is told by the registry.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Control {
    /// Heartbeat, idle and write-timeout check.
    Tick,
    /// Load shedding: close this idle stream (WebSocket 4001).
    CloseIdle,
    /// The server is draining: finish in-flight requests, then close (WebSocket 1001, SSE `end`).
    Drain,
}

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

impl Permit {
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("ruvector_streams_open", "kind" => self.kind.label()).decrement(1.0);
    }
}

struct Entry {
    control: Recipient<Control>,
    /// The client's last frame, ms since the registry's epoch.
    last_seen: Arc<AtomicU64>,
    kind: Kind,
}

/// A registered stream; dropping it unregisters.
pub struct Registration {
    streams: Arc<Streams>,
    id: u64,
    last_seen: Arc<AtomicU64>,
}

impl Registration {
    /// The stream's id (unique in this process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records client activity now (idle closing picks the longest idle first).
    pub fn seen(&self) {
        self.last_seen
            .store(self.streams.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.entries.remove(&self.id);
    }
}

pub struct Streams {
    cfg: StreamSettings,
    lifecycle: Arc<Lifecycle>,
    open: AtomicUsize,
    next_id: AtomicU64,
    entries: DashMap<u64, Entry>,
    epoch: Instant,
}

static QUERY_IDS: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique search id (the frames' `query_id`).
pub fn next_query_id() -> u64 {
    QUERY_IDS.fetch_add(1, Ordering::Relaxed)
}

impl Streams {
    pub fn new(cfg: StreamSettings, lifecycle: Arc<Lifecycle>) -> Arc<Streams> {
        Arc::new(Streams {
            cfg,
            lifecycle,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            entries: DashMap::new(),
            epoch: Instant::now(),
        })
    }

    /// Admits a new stream, or says why not (`overloaded`: at the limit, or draining).
    pub fn admit(self: &Arc<Self>, kind: Kind) -> Result<Permit, EngineError> {
        if self.lifecycle.is_draining() {
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Registers an admitted stream for control messages. A stream registered while the drain
    /// is under way is told to drain at once.
    pub fn register(
        self: &Arc<Self>,
        permit: &Permit,
        control: Recipient<Control>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let last_seen = Arc::new(AtomicU64::new(self.now_ms()));
        if self.lifecycle.is_draining() {
            control.do_send(Control::Drain);
        }
        self.entries.insert(
            id,
            Entry {
                control,
                last_seen: last_seen.clone(),
                kind: permit.kind(),
            },
        );
        Registration {
            streams: self.clone(),
            id,
            last_seen,
        }
    }

    /// Closes up to `batch` WebSocket sessions whose client sent nothing for `idle`, the longest
    /// idle first (SSE clients never send, so they are not judged by it). Returns how many were
    /// asked to close.
    pub fn close_idle(&self, idle: Duration, batch: usize) -> usize {
        let Some(cutoff) = self.now_ms().checked_sub(idle.as_millis() as u64) else {
            return 0;
        };
        let mut idle: Vec<(u64, Recipient<Control>)> = self
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Ws)
            .filter_map(|e| {
                let last = e.last_seen.load(Ordering::Relaxed);
                (last <= cutoff).then(|| (last, e.control.clone()))
            })
            .collect();
        idle.sort_by_key(|(last, _)| *last);
        idle.truncate(batch);
        for (_, control) in &idle {
            control.do_send(Control::CloseIdle);
        }
        idle.len()
    }

    /// How often streams are checked: a quarter of the shortest timer, within 20 ms .. 5 s.
    fn sweep_every(&self) -> Duration {
        let shortest = self
            .cfg
            .heartbeat_interval_ms
            .min(self.cfg.idle_timeout_ms)
            .min(self.cfg.write_timeout_ms);
        Duration::from_millis((shortest / 4).clamp(20, 5000))
    }

    /// Starts the sweeper on the current arbiter: every stream gets a `Tick` per period.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let me = self.clone();
        actix::spawn(async move {
            let mut every = tokio::time::interval(me.sweep_every());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let t = Instant::now();
                for e in me.entries.iter() {
                    e.control.do_send(Control::Tick);
                }
                metrics::histogram!("ruvector_stream_sweep_seconds")
                    .record(t.elapsed().as_secs_f64());
            }
        });
    }

    /// Starts the drain (new streams refused), asks every open stream to finish its in-flight
    /// replies and close, and waits for them until `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        self.lifecycle.start_draining();
        for e in self.entries.iter() {
            e.control.do_send(Control::Drain);
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
