//! Rate limits shared by a region's instances: one budget per caller and class across all of
//! them, kept in the region's Redis as a GCRA (one Lua script per refill, Redis's own clock).
//!
//! How it combines with the local limiter (governor): governor stays the fast path and decides
//! first, on every request, with the full budget — it protects this instance on its own, with or
//! without Redis. A request it lets through then takes a token from this instance's *lease* of
//! the regional budget: leases of `rate_limit.regional_lease` tokens are fetched from Redis in
//! the background (ahead of need, when half is used), so no request waits on Redis. When a
//! lease runs dry before its refill lands, requests are admitted on credit and the next refill
//! asks for a lease plus the debt, so the credit is charged to the budget too. When Redis has no
//! tokens left (or grants less than asked, leaving the debt open) it answers how long until it
//! has, and the caller is refused (429) until Redis grants again. A request is refused only on
//! such an answer, never because the answer is slow. Over the region a caller gets its budget
//! plus about one lease per instance. Leases lapse after `rate_limit.regional_lease_ms`. With
//! Redis down the check lets everything through (governor alone limits) and says so in
//! `ruvector_rate_limit_leases_total{result="error"}` (the debt is forgiven); requests admitted
//! beyond a lease of credit while a refill has waited more than a tenth of a lease period (a
//! frozen or overloaded Redis, before the tier is marked down) count as `result="late"`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::client::RedisTier;

/// GCRA with a cost and partial grants. KEYS[1]: the caller's key. ARGV: emission interval (µs
/// per token), burst (tokens), tokens asked. Answers {granted, µs until one more token}.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local asked = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local limit = now + burst * interval
local can = math.floor((limit - tat) / interval)
if can <= 0 then
  return {0, tat + interval - limit}
end
if can > asked then can = asked end
local new_tat = tat + can * interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {can, 0}
"#;

/// What the regional budget says about one request.
pub enum Regional {
    Allowed,
    Refused { retry_ms: u64 },
}

/// One caller's lease of the regional budget on this instance.
struct Lease {
    /// Tokens left; negative: admitted on credit while a refill was on its way.
    tokens: i64,
    expires: Instant,
    denied_until: Option<Instant>,
    /// Redis's last answer was that the budget is spent (or a grant left this lease in debt):
    /// requests are refused until a grant clears the debt.
    in_debt: bool,
    refilling: bool,
    /// When the refill in flight was asked for.
    refill_asked: Instant,
    last_used: Instant,
}

pub struct RegionalLimits {
    tier: Arc<RedisTier>,
    script: redis::Script,
    prefix: String,
    leases: DashMap<LeaseKey, Mutex<Lease>>,
    lease: u32,
    lease_for: Duration,
    max_keys: usize,
}

/// Whose lease: the caller's id, its tier and the request class (no allocation per request).
type LeaseKey = (Arc<str>, &'static str, &'static str);

/// A caller's budget: tokens per second and burst.
#[derive(Clone, Copy)]
pub struct Budget {
    pub per_s: u32,
    pub burst: u32,
}

impl RegionalLimits {
    pub fn new(
        tier: Arc<RedisTier>,
        region: &str,
        lease: u32,
        lease_for: Duration,
        max_keys: usize,
    ) -> Arc<RegionalLimits> {
        for result in ["granted", "denied", "error"] {
            metrics::counter!("ruvector_rate_limit_leases_total", "result" => result).absolute(0);
        }
        Arc::new(RegionalLimits {
            tier,
            script: redis::Script::new(GCRA),
            prefix: format!("ruvector:rl:{region}:"),
            leases: DashMap::new(),
            lease: lease.max(1),
            lease_for,
            max_keys,
        })
    }

    /// Takes one token of the regional budget of caller `id` in `tier` for `class`. Never
    /// waits on Redis.
    pub fn check(
        self: &Arc<Self>,
        id: &Arc<str>,
        tier: &'static str,
        class: &'static str,
        budget: Budget,
    ) -> Regional {
        if !self.tier.is_up() {
            return Regional::Allowed;
        }
        let now = Instant::now();
        let key: LeaseKey = (id.clone(), tier, class);
        let entry = match self.leases.get(&key) {
            Some(e) => e,
            // Past the bound new callers are limited by governor alone (and logged by the
            // supervisor's trim); the map never grows without bound.
            None if self.leases.len() >= self.max_keys => return Regional::Allowed,
            None => self
                .leases
                .entry(key.clone())
                .or_insert_with(|| {
                    Mutex::new(Lease {
                        tokens: 0,
                        expires: now,
                        denied_until: None,
                        in_debt: false,
                        refilling: false,
                        refill_asked: now,
                        last_used: now,
                    })
                })
                .downgrade(),
        };
        let Ok(mut l) = entry.lock() else {
            return Regional::Allowed;
        };
        l.last_used = now;
        if let Some(until) = l.denied_until {
            if until > now {
                return Regional::Refused {
                    retry_ms: (until - now).as_millis().max(1) as u64,
                };
            }
            l.denied_until = None;
        }
        if l.expires <= now && l.tokens > 0 {
            l.tokens = 0;
        }
        if l.in_debt {
            // Redis said the budget is spent: refused until it grants again (asked now).
            if !l.refilling {
                l.refilling = true;
                l.refill_asked = now;
                self.refill(key.clone(), budget, l.tokens);
            }
            return Regional::Refused { retry_ms: 10 };
        }
        let lease = i64::from(self.lease);
        // Taken even when the lease is dry: a dry lease with its refill on the way is credit,
        // charged to the budget by the next refill. Refusing before Redis answers would refuse
        // for Redis's slowness (a frozen or overloaded Redis before the tier is marked down),
        // not for the budget: governor alone limits meanwhile.
        l.tokens -= 1;
        if l.tokens < lease / 2 && !l.refilling {
            l.refilling = true;
            l.refill_asked = now;
            self.refill(key.clone(), budget, l.tokens);
        } else if l.refilling
            && l.tokens <= -lease
            && now.duration_since(l.refill_asked) > self.lease_for / 10
        {
            metrics::counter!("ruvector_rate_limit_leases_total", "result" => "late").increment(1);
        }
        Regional::Allowed
    }

    /// Asks Redis for a lease plus `tokens`' debt (admitted on credit; charged too), at most a
    /// burst. Called with the lease's lock held, so it only spawns.
    fn refill(self: &Arc<Self>, key: LeaseKey, budget: Budget, tokens: i64) {
        let me = self.clone();
        let debt = (-tokens).max(0);
        let asked = (i64::from(me.lease) + debt).min(i64::from(budget.burst.max(me.lease)));
        tokio::spawn(async move {
            let interval_us = 1_000_000 / u64::from(budget.per_s.max(1));
            let (id, tier, class) = &key;
            let mut inv = me.script.key(format!("{}{tier}:{class}:{id}", me.prefix));
            inv.arg(interval_us.max(1))
                .arg(budget.burst.max(1))
                .arg(asked);
            let answer = me
                .tier
                .run(|mut conn| async move { inv.invoke_async::<(i64, i64)>(&mut conn).await })
                .await;
            let Some(entry) = me.leases.get(&key) else {
                return;
            };
            let Ok(mut l) = entry.lock() else {
                return;
            };
            l.refilling = false;
            let now = Instant::now();
            let result = match answer {
                Ok((granted, _)) if granted > 0 => {
                    l.tokens += granted;
                    l.expires = now + me.lease_for;
                    // Granted less than asked (the budget ran out) and still in debt: refused
                    // until the budget has earned it back. A full grant with debt left (run up
                    // while it was on its way) is charged by the next refill.
                    l.in_debt = l.tokens <= 0 && granted < asked;
                    if l.in_debt {
                        let wait_us = interval_us.saturating_mul(l.tokens.unsigned_abs() + 1);
                        l.denied_until = Some(now + Duration::from_micros(wait_us));
                    }
                    "granted"
                }
                Ok((_, retry_us)) => {
                    l.in_debt = true;
                    l.denied_until = Some(now + Duration::from_micros(retry_us.max(1000) as u64));
                    "denied"
                }
                Err(_) => {
                    // Forgive the debt: with no answer, governor alone limits.
                    l.tokens = l.tokens.max(0);
                    l.in_debt = false;
                    "error"
                }
            };
            metrics::counter!("ruvector_rate_limit_leases_total", "result" => result).increment(1);
        });
    }

    /// Forgets callers idle for more than two lease periods (their leases have lapsed).
    pub fn trim(&self) {
        let stale = Instant::now()
            .checked_sub(self.lease_for * 2)
            .unwrap_or_else(Instant::now);
        self.leases.retain(|_, l| {
            l.get_mut()
                .map(|l| l.last_used > stale || l.refilling)
                .unwrap_or(false)
        });
    }
}
