//! Admission: the shared state every request and new stream consults (`Supervisor::admit`) —
//! the current shed level, the governor rate limiters per caller, tier and class, requests in
//! flight and the window of search latencies the shedder reads.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hdrhistogram::Histogram;
use ruvector_actors::{EngineError, Overload};

use super::level::ShedLevel;
use crate::auth::{Principal, Tier};
use crate::error::ApiError;
use crate::settings::{RateLimitSettings, ShedSettings};
use crate::tier::{Budget, Regional, RegionalLimits};

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
    pub(super) shed: ShedSettings,
    /// [tier][class]
    limiters: [[Limiter; 3]; 2],
    throttle: Limiter,
    level: AtomicU8,
    shed_seq: AtomicU64,
    /// Requests being served now (HTTP requests and stream requests).
    pub(super) inflight: AtomicU64,
    /// Search latencies of the current window (µs).
    pub(super) latency: Mutex<Option<Histogram<u64>>>,
    /// The region-wide budgets, once Redis is configured (`set_regional`).
    regional: OnceLock<Arc<RegionalLimits>>,
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
            level: AtomicU8::new(ShedLevel::Normal as u8),
            shed_seq: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 2).ok()),
            regional: OnceLock::new(),
            rate,
            shed,
        })
    }

    /// Adds the region-wide budgets (with `rate_limit.regional` and Redis configured).
    pub fn set_regional(&self, r: Arc<RegionalLimits>) {
        let _ = self.regional.set(r);
    }

    /// A caller's quota for `class` (the premium tier's is `premium_factor` times larger).
    fn budget(&self, premium: bool, class: Class) -> Budget {
        let f = if premium {
            self.rate.premium_factor.max(1)
        } else {
            1
        };
        let (per_s, burst) = match class {
            Class::Read => (self.rate.read_per_s, self.rate.read_burst),
            Class::Write => (self.rate.write_per_s, self.rate.write_burst),
            Class::Stream => (self.rate.stream_per_s, self.rate.stream_burst),
        };
        Budget {
            per_s: per_s.saturating_mul(f),
            burst: burst.saturating_mul(f),
        }
    }

    pub fn level(&self) -> ShedLevel {
        ShedLevel::from_u8(self.level.load(Ordering::Acquire))
    }

    pub(super) fn set_level(&self, l: ShedLevel) {
        self.level.store(l as u8, Ordering::Release);
    }

    /// Whether new work should be refused outright (readiness probe).
    pub fn rejecting(&self) -> bool {
        self.level() >= ShedLevel::Reject
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
        if level >= ShedLevel::Reject && !premium {
            if class == Class::Stream {
                metrics::counter!("ruvector_shed_actions_total", "action" => "stream_rejected")
                    .increment(1);
                return Err(EngineError::Overloaded(Overload::RejectingStreams).into());
            }
            let n = self.shed_seq.fetch_add(1, Ordering::Relaxed);
            let every = (1.0 / self.shed.shed_fraction.clamp(0.001, 1.0)).round() as u64;
            if n.is_multiple_of(every.max(1)) {
                metrics::counter!("ruvector_shed_actions_total", "action" => "request_shed")
                    .increment(1);
                return Err(EngineError::Overloaded(Overload::Shedding).into());
            }
        }
        if !self.rate.enabled {
            return Ok(());
        }
        if level >= ShedLevel::Throttle && !premium && class != Class::Stream {
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
            Ok(()) => match self.regional.get() {
                None => Ok(()),
                Some(r) => {
                    let budget = self.budget(premium, class);
                    match r.check(&p.id, p.tier.as_str(), class.as_str(), budget) {
                        Regional::Allowed => Ok(()),
                        Regional::Refused { retry_ms } => {
                            metrics::counter!("ruvector_rate_limited_total", "class" => class.as_str(), "tier" => p.tier.as_str())
                                .increment(1);
                            Err(ApiError::RateLimited {
                                class: class.as_str(),
                                retry_ms,
                            })
                        }
                    }
                }
            },
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
    pub(super) fn trim_limiters(&self) {
        if let Some(r) = self.regional.get() {
            r.trim();
        }
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
