//! Admission and load shedding, and rate limiting.
//!
//! `Supervisor` is the shared state every request and new stream consults (`admit`): the current
//! shed level and the governor rate limiters. `SupervisorActor` moves the level: every
//! `shed.interval_ms` it measures the load — the worst of open streams / `stream.max_streams`,
//! requests in flight / `shed.max_inflight`, the search pool's queue fullness, process CPU
//! (smoothed over ~10 s), resident memory / the memory limit, and search latency p99 /
//! `shed.p99_target_ms` — and applies the design's table with hysteresis:
//!
//! | load ≥ | level | action |
//! |---|---|---|
//! | `throttle_at` (85%) | 1 throttle | non-premium callers held to `rate_limit.throttle_per_s` |
//! | `close_idle_at` (90%) | 2 close idle | streams idle for `shed.idle_close_after_ms` closed (4001), oldest first |
//! | `reject_at` (95%) | 3 reject | new streams 503 (premium excepted), /health/ready 503, `shed_fraction` of non-premium requests 503 |
//!
//! A level is entered as soon as the load reaches it and left only when the load has stayed
//! `shed.hysteresis` below its threshold for `shed.cool_down_ms` (no flapping).
//!
//! Rate limits are per caller (API key or JWT subject; client IP when anonymous), with separate
//! quotas for reads, writes and new streams, multiplied by `rate_limit.premium_factor` for the
//! premium tier. Keys unused for a while are forgotten, and no limiter holds more than
//! `rate_limit.max_keys` keys.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hdrhistogram::Histogram;
use ruvector_actors::router::pool::SearchPool;
use ruvector_actors::EngineError;
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Tier};
use crate::http::error::ApiError;
use crate::stream::Streams;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub read_per_s: u32,
    pub read_burst: u32,
    pub write_per_s: u32,
    pub write_burst: u32,
    pub stream_per_s: u32,
    pub stream_burst: u32,
    pub premium_factor: u32,
    pub throttle_per_s: u32,
    pub abuse_refusals: u32,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedSettings {
    pub enabled: bool,
    pub interval_ms: u64,
    pub memory_limit_mb: u64,
    pub p99_target_ms: f64,
    pub throttle_at: f64,
    pub close_idle_at: f64,
    pub reject_at: f64,
    pub hysteresis: f64,
    pub cool_down_ms: u64,
    pub idle_close_after_ms: u64,
    pub idle_close_batch: usize,
    pub shed_fraction: f64,
    pub max_inflight: usize,
}

/// What a request or frame costs in rate-limit terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
    /// Opening a stream.
    Stream,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Stream => "stream",
        }
    }
}

pub const NORMAL: u8 = 0;
pub const THROTTLE: u8 = 1;
pub const CLOSE_IDLE: u8 = 2;
pub const REJECT: u8 = 3;

fn level_name(l: u8) -> &'static str {
    match l {
        NORMAL => "normal",
        THROTTLE => "throttle",
        CLOSE_IDLE => "close_idle",
        _ => "reject",
    }
}

/// One request being served (see `Supervisor::begin`).
pub struct InFlight(Arc<Supervisor>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn quota(per_s: u32, burst: u32) -> Quota {
    let per_s = NonZeroU32::new(per_s.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_s).allow_burst(burst)
}

type Limiter = DefaultKeyedRateLimiter<Arc<str>>;

pub struct Supervisor {
    rate: RateLimitSettings,
    shed: ShedSettings,
    /// [tier][class]
    limiters: [[Limiter; 3]; 2],
    throttle: Limiter,
    level: AtomicU8,
    shed_seq: AtomicU64,
    /// Requests being served now (HTTP requests and stream requests).
    inflight: AtomicU64,
    /// Search latencies of the current window (µs).
    latency: Mutex<Option<Histogram<u64>>>,
}

impl Supervisor {
    pub fn new(rate: RateLimitSettings, shed: ShedSettings) -> Arc<Supervisor> {
        let make = |factor: u32| {
            let f = factor.max(1);
            [
                RateLimiter::keyed(quota(
                    rate.read_per_s.saturating_mul(f),
                    rate.read_burst.saturating_mul(f),
                )),
                RateLimiter::keyed(quota(
                    rate.write_per_s.saturating_mul(f),
                    rate.write_burst.saturating_mul(f),
                )),
                RateLimiter::keyed(quota(
                    rate.stream_per_s.saturating_mul(f),
                    rate.stream_burst.saturating_mul(f),
                )),
            ]
        };
        let limiters = [make(1), make(rate.premium_factor)];
        let throttle = RateLimiter::keyed(quota(rate.throttle_per_s, rate.throttle_per_s));
        Arc::new(Supervisor {
            limiters,
            throttle,
            level: AtomicU8::new(NORMAL),
            shed_seq: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 2).ok()),
            rate,
            shed,
        })
    }

    pub fn level(&self) -> u8 {
        self.level.load(Ordering::Acquire)
    }

    /// Whether new work should be refused outright (readiness probe).
    pub fn rejecting(&self) -> bool {
        self.level() >= REJECT
    }

    /// A request starts being served; the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records a search's server-side latency for the p99 signal.
    pub fn record_search(&self, took: Duration) {
        if let Ok(mut guard) = self.latency.lock() {
            if let Some(h) = guard.as_mut() {
                h.saturating_record(took.as_micros().max(1) as u64);
            }
        }
    }

    fn retry_ms(&self, not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        (wait.as_millis() as u64).max(1)
    }

    /// Lets a request (or frame, or new stream) of `class` through, or says why not.
    pub fn admit(&self, p: &Principal, class: Class) -> Result<(), ApiError> {
        let level = self.level();
        let premium = p.tier == Tier::Premium;
        if level >= REJECT && !premium {
            if class == Class::Stream {
                metrics::counter!("ruvector_shed_actions_total", "action" => "stream_rejected")
                    .increment(1);
                return Err(EngineError::Overloaded(
                    "shedding load: not accepting new streams".into(),
                )
                .into());
            }
            let n = self.shed_seq.fetch_add(1, Ordering::Relaxed);
            let every = (1.0 / self.shed.shed_fraction.clamp(0.001, 1.0)).round() as u64;
            if n.is_multiple_of(every.max(1)) {
                metrics::counter!("ruvector_shed_actions_total", "action" => "request_shed")
                    .increment(1);
                return Err(EngineError::Overloaded("shedding load".into()).into());
            }
        }
        if !self.rate.enabled {
            return Ok(());
        }
        if level >= THROTTLE && !premium && class != Class::Stream {
            if let Err(nu) = self.throttle.check_key(&p.id) {
                metrics::counter!("ruvector_shed_actions_total", "action" => "throttled")
                    .increment(1);
                metrics::counter!("ruvector_rate_limited_total", "class" => class.as_str(), "tier" => p.tier.as_str())
                    .increment(1);
                return Err(ApiError::RateLimited {
                    class: class.as_str(),
                    retry_ms: self.retry_ms(nu),
                });
            }
        }
        let tier = usize::from(premium);
        let limiter = &self.limiters[tier][match class {
            Class::Read => 0,
            Class::Write => 1,
            Class::Stream => 2,
        }];
        match limiter.check_key(&p.id) {
            Ok(()) => Ok(()),
            Err(nu) => {
                metrics::counter!("ruvector_rate_limited_total", "class" => class.as_str(), "tier" => p.tier.as_str())
                    .increment(1);
                Err(ApiError::RateLimited {
                    class: class.as_str(),
                    retry_ms: self.retry_ms(nu),
                })
            }
        }
    }

    /// How many refusals in a row close a stream with 4029.
    pub fn abuse_refusals(&self) -> u32 {
        self.rate.abuse_refusals.max(1)
    }

    /// Forgets the keys whose state is back to a fresh one (not limited any more): what stays
    /// is bounded by the callers active within one refill period.
    fn trim_limiters(&self) {
        let all = self
            .limiters
            .iter()
            .flatten()
            .chain(std::iter::once(&self.throttle));
        for l in all {
            l.retain_recent();
            l.shrink_to_fit();
            if l.len() > self.rate.max_keys {
                tracing::warn!(
                    keys = l.len(),
                    max = self.rate.max_keys,
                    "rate limiter holds more active callers than rate_limit.max_keys"
                );
            }
        }
    }
}

/// What the load consists of, each as a fraction of its limit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    pub streams: f64,
    /// Requests being served (HTTP and stream frames) / `shed.max_inflight`.
    pub inflight: f64,
    /// Search pool queue fullness.
    pub queue: f64,
    pub cpu: f64,
    pub memory: f64,
    pub p99: f64,
}

impl Load {
    pub fn worst(&self) -> f64 {
        self.streams
            .max(self.inflight)
            .max(self.queue)
            .max(self.cpu)
            .max(self.memory)
            .max(self.p99)
    }
}

/// CPU time of this process (s), from /proc/self/stat (utime + stime, in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The memory limit: configured, else the cgroup's, else the machine's.
fn memory_limit(cfg_mb: u64) -> u64 {
    if cfg_mb > 0 {
        return cfg_mb * 1024 * 1024;
    }
    if let Some(n) = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        return n;
    }
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

/// Moves the shed level; closes idle streams at level 2 and above.
pub struct SupervisorActor {
    pub sup: Arc<Supervisor>,
    pub streams: Arc<Streams>,
    pool: Arc<SearchPool>,
    pub max_streams: usize,
    cores: f64,
    mem_limit: u64,
    last_cpu: (Instant, f64),
    /// CPU use, smoothed.
    cpu: f64,
    /// Since when the load has been low enough to leave the current level.
    calm_since: Option<Instant>,
    ticks: u64,
}

impl SupervisorActor {
    pub fn new(
        sup: Arc<Supervisor>,
        streams: Arc<Streams>,
        pool: Arc<SearchPool>,
        max_streams: usize,
    ) -> SupervisorActor {
        let mem_limit = memory_limit(sup.shed.memory_limit_mb);
        SupervisorActor {
            sup,
            streams,
            pool,
            max_streams,
            cores: std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            mem_limit,
            last_cpu: (Instant::now(), cpu_seconds()),
            cpu: 0.0,
            calm_since: None,
            ticks: 0,
        }
    }

    fn measure(&mut self) -> Load {
        let now = Instant::now();
        let cpu = cpu_seconds();
        let wall = now.duration_since(self.last_cpu.0).as_secs_f64();
        let sample = if wall > 0.0 {
            ((cpu - self.last_cpu.1) / wall / self.cores).max(0.0)
        } else {
            0.0
        };
        self.last_cpu = (now, cpu);
        // Smoothed over ~10 s: a burst of work is not an overload, a sustained one is.
        let alpha = (wall / 10.0).clamp(0.05, 1.0);
        self.cpu = self.cpu + alpha * (sample - self.cpu);
        let cpu_frac = self.cpu;
        let p99_ms = match self
            .sup
            .latency
            .lock()
            .ok()
            .as_deref_mut()
            .and_then(Option::as_mut)
        {
            Some(h) => {
                let v = if h.is_empty() {
                    0
                } else {
                    h.value_at_quantile(0.99)
                };
                h.reset();
                v as f64 / 1000.0
            }
            None => 0.0,
        };
        Load {
            streams: self.streams.open() as f64 / self.max_streams.max(1) as f64,
            inflight: self.sup.inflight.load(Ordering::Relaxed) as f64
                / self.sup.shed.max_inflight.max(1) as f64,
            queue: self.pool.fullness(),
            cpu: cpu_frac,
            memory: rss_bytes() as f64 / self.mem_limit.max(1) as f64,
            p99: if self.sup.shed.p99_target_ms > 0.0 {
                p99_ms / self.sup.shed.p99_target_ms
            } else {
                0.0
            },
        }
    }

    /// The level a load calls for, and the threshold of a level.
    fn target(&self, load: f64) -> u8 {
        let s = &self.sup.shed;
        if load >= s.reject_at {
            REJECT
        } else if load >= s.close_idle_at {
            CLOSE_IDLE
        } else if load >= s.throttle_at {
            THROTTLE
        } else {
            NORMAL
        }
    }

    fn threshold(&self, level: u8) -> f64 {
        let s = &self.sup.shed;
        match level {
            THROTTLE => s.throttle_at,
            CLOSE_IDLE => s.close_idle_at,
            REJECT => s.reject_at,
            _ => 0.0,
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        if self.ticks.is_multiple_of(30) {
            self.sup.trim_limiters();
        }
        let load = self.measure();
        for (name, v) in [
            ("streams", load.streams),
            ("inflight", load.inflight),
            ("queue", load.queue),
            ("cpu", load.cpu),
            ("memory", load.memory),
            ("p99", load.p99),
        ] {
            metrics::gauge!("ruvector_shed_load", "signal" => name).set(v);
        }
        if !self.sup.shed.enabled {
            return;
        }
        let worst = load.worst();
        let current = self.sup.level();
        let target = self.target(worst);
        let now = Instant::now();
        let next = if target >= current {
            self.calm_since = None;
            target
        } else if worst < self.threshold(current) - self.sup.shed.hysteresis {
            let since = *self.calm_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_millis(self.sup.shed.cool_down_ms) {
                self.calm_since = None;
                current - 1
            } else {
                current
            }
        } else {
            self.calm_since = None;
            current
        };
        if next != current {
            tracing::warn!(
                from = level_name(current),
                to = level_name(next),
                streams = load.streams,
                cpu = load.cpu,
                memory = load.memory,
                p99 = load.p99,
                "shed level changed"
            );
            metrics::counter!("ruvector_shed_level_changes_total", "to" => level_name(next))
                .increment(1);
            self.sup.level.store(next, Ordering::Release);
        }
        metrics::gauge!("ruvector_shed_level").set(f64::from(next));
        if next >= CLOSE_IDLE {
            let closed = self.streams.close_idle(
                Duration::from_millis(self.sup.shed.idle_close_after_ms),
                self.sup.shed.idle_close_batch,
            );
            if closed > 0 {
                metrics::counter!("ruvector_shed_actions_total", "action" => "idle_closed")
                    .increment(closed as u64);
            }
        }
    }
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_millis(self.sup.shed.interval_ms.max(10));
        ctx.run_interval(every, |act, _| act.tick());
    }
}
