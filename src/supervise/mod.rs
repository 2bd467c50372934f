//! Admission and load shedding, and rate limiting.
//!
//! `Supervisor` is the shared state every request and new stream consults (`admit`): the current
//! shed level and the governor rate limiters. `SupervisorActor` (`shedder.rs`) moves the level:
//! every `shed.interval_ms` it measures what clients feel — the worst of open streams /
//! `stream.max_streams`, requests in flight / `shed.max_inflight`, the search pool's queue
//! fullness, the engine's queueing delay / `shed.queue_delay_target_ms`, resident memory / the
//! memory limit, and search latency p99 / `shed.p99_target_ms` — and applies the design's table
//! with hysteresis (`level.rs`):
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

mod admission;
mod level;
mod shedder;

pub use admission::{Class, InFlight, Supervisor};
pub use level::{LevelMachine, ShedLevel};
pub use shedder::{Load, SupervisorActor};
