//! The shedder: every `shed.interval_ms` it measures what clients feel — open streams, requests
//! in flight, the search queue's fullness, the engine's queueing delay (time waited for a search
//! slot or a shard writer), search latency p99 and resident memory, each as a fraction of its
//! limit — and moves the shed level on the worst of them (`level.rs`). Process CPU is reported
//! (`ruvector_process_cpu_ratio`) but is not a signal: a busy CPU with no queueing and latency
//! within target is a busy server, not an overloaded one (an index build once throttled a lone
//! client to 10 requests/s).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ruvector_actors::SearchPool;

use super::admission::Supervisor;
use super::level::{LevelMachine, ShedLevel, Thresholds};
use crate::registry::Streams;

/// What the load consists of, each as a fraction of its limit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    pub streams: f64,
    /// Requests being served (HTTP and stream frames) / `shed.max_inflight`.
    pub inflight: f64,
    /// Search pool queue fullness.
    pub queue: f64,
    /// Mean time work waited for a search slot or a shard writer / `shed.queue_delay_target_ms`.
    pub queue_delay: f64,
    pub memory: f64,
    pub p99: f64,
}

impl Load {
    pub fn worst(&self) -> f64 {
        self.streams
            .max(self.inflight)
            .max(self.queue)
            .max(self.queue_delay)
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

/// Moves the shed level; closes idle streams at `CloseIdle` and above.
pub struct SupervisorActor {
    pub sup: Arc<Supervisor>,
    pub streams: Arc<Streams>,
    pool: Arc<SearchPool>,
    pub max_streams: usize,
    cores: f64,
    mem_limit: u64,
    last_cpu: (Instant, f64),
    machine: LevelMachine,
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
        let s = &sup.shed;
        let machine = LevelMachine::new(Thresholds {
            throttle_at: s.throttle_at,
            close_idle_at: s.close_idle_at,
            reject_at: s.reject_at,
            hysteresis: s.hysteresis,
            cool_down: Duration::from_millis(s.cool_down_ms),
        });
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
            machine,
            ticks: 0,
        }
    }

    fn measure(&mut self) -> Load {
        let now = Instant::now();
        let cpu = cpu_seconds();
        let wall = now.duration_since(self.last_cpu.0).as_secs_f64();
        if wall > 0.0 {
            let ratio = ((cpu - self.last_cpu.1) / wall / self.cores).max(0.0);
            metrics::gauge!("ruvector_process_cpu_ratio").set(ratio);
        }
        self.last_cpu = (now, cpu);
        let p99_ms = match self
            .sup
            .latency
            .lock()
            .ok()
            .as_deref_mut()
            .and_then(Option::as_mut)
        {
            Some(h) => {
                // A p99 of a handful of searches is their maximum: one slow search (the first
                // after a bulk load, say) is not an overload. Below the minimum it is no signal.
                let v = if h.len() < self.sup.shed.p99_min_samples {
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
            queue_delay: if self.sup.shed.queue_delay_target_ms > 0.0 {
                self.pool.queue_wait().take_mean_ms() / self.sup.shed.queue_delay_target_ms
            } else {
                0.0
            },
            memory: rss_bytes() as f64 / self.mem_limit.max(1) as f64,
            p99: if self.sup.shed.p99_target_ms > 0.0 {
                p99_ms / self.sup.shed.p99_target_ms
            } else {
                0.0
            },
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
            ("queue_delay", load.queue_delay),
            ("memory", load.memory),
            ("p99", load.p99),
        ] {
            metrics::gauge!("ruvector_shed_load", "signal" => name).set(v);
        }
        if !self.sup.shed.enabled {
            return;
        }
        let current = self.machine.level();
        let next = self.machine.observe(load.worst(), Instant::now());
        if next != current {
            tracing::warn!(
                from = current.name(),
                to = next.name(),
                streams = load.streams,
                inflight = load.inflight,
                queue = load.queue,
                queue_delay = load.queue_delay,
                memory = load.memory,
                p99 = load.p99,
                "shed level changed"
            );
            metrics::counter!("ruvector_shed_level_changes_total", "to" => next.name())
                .increment(1);
            self.sup.set_level(next);
        }
        metrics::gauge!("ruvector_shed_level").set(f64::from(next as u8));
        if next >= ShedLevel::CloseIdle {
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
