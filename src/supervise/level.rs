//! The shed level and the rule that moves it: the design's table applied to one load figure,
//! with hysteresis. Pure (time is passed in), so the rule is unit-tested with a fake clock.

use std::time::{Duration, Instant};

/// The design's load-shedding levels, in order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ShedLevel {
    Normal = 0,
    /// Non-premium callers held to `rate_limit.throttle_per_s`.
    Throttle = 1,
    /// Idle streams closed (4001), oldest first.
    CloseIdle = 2,
    /// New streams refused, readiness 503, a fraction of non-premium requests shed.
    Reject = 3,
}

impl ShedLevel {
    pub fn from_u8(v: u8) -> ShedLevel {
        match v {
            0 => ShedLevel::Normal,
            1 => ShedLevel::Throttle,
            2 => ShedLevel::CloseIdle,
            _ => ShedLevel::Reject,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ShedLevel::Normal => "normal",
            ShedLevel::Throttle => "throttle",
            ShedLevel::CloseIdle => "close_idle",
            ShedLevel::Reject => "reject",
        }
    }

    fn down(self) -> ShedLevel {
        ShedLevel::from_u8((self as u8).saturating_sub(1))
    }
}

/// Thresholds of the table (fractions of capacity) and the hysteresis around them.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub throttle_at: f64,
    pub close_idle_at: f64,
    pub reject_at: f64,
    /// A level is left only when the load stayed this far below its threshold…
    pub hysteresis: f64,
    /// …for this long.
    pub cool_down: Duration,
}

/// Moves the level: up at once when the load reaches a threshold, down one level at a time
/// after the load stayed below the current threshold minus the hysteresis for the cool-down.
#[derive(Debug)]
pub struct LevelMachine {
    t: Thresholds,
    level: ShedLevel,
    calm_since: Option<Instant>,
}

impl LevelMachine {
    pub fn new(t: Thresholds) -> LevelMachine {
        LevelMachine {
            t,
            level: ShedLevel::Normal,
            calm_since: None,
        }
    }

    pub fn level(&self) -> ShedLevel {
        self.level
    }

    fn target(&self, load: f64) -> ShedLevel {
        if load >= self.t.reject_at {
            ShedLevel::Reject
        } else if load >= self.t.close_idle_at {
            ShedLevel::CloseIdle
        } else if load >= self.t.throttle_at {
            ShedLevel::Throttle
        } else {
            ShedLevel::Normal
        }
    }

    fn threshold(&self, level: ShedLevel) -> f64 {
        match level {
            ShedLevel::Normal => 0.0,
            ShedLevel::Throttle => self.t.throttle_at,
            ShedLevel::CloseIdle => self.t.close_idle_at,
            ShedLevel::Reject => self.t.reject_at,
        }
    }

    /// Feeds one load measurement taken at `now`; returns the level after it.
    pub fn observe(&mut self, load: f64, now: Instant) -> ShedLevel {
        let target = self.target(load);
        if target >= self.level {
            self.calm_since = None;
            self.level = target;
        } else if load < self.threshold(self.level) - self.t.hysteresis {
            let since = *self.calm_since.get_or_insert(now);
            if now.duration_since(since) >= self.t.cool_down {
                self.calm_since = None;
                self.level = self.level.down();
            }
        } else {
            self.calm_since = None;
        }
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> LevelMachine {
        LevelMachine::new(Thresholds {
            throttle_at: 0.85,
            close_idle_at: 0.90,
            reject_at: 0.95,
            hysteresis: 0.05,
            cool_down: Duration::from_secs(5),
        })
    }

    #[test]
    fn a_level_is_entered_at_once_and_left_one_step_after_the_cool_down() {
        let mut m = machine();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(m.observe(0.5, at(0)), ShedLevel::Normal);
        assert_eq!(
            m.observe(0.97, at(1)),
            ShedLevel::Reject,
            "straight to reject"
        );
        // Calm, but not yet for the cool-down.
        assert_eq!(m.observe(0.1, at(2)), ShedLevel::Reject);
        assert_eq!(m.observe(0.1, at(6)), ShedLevel::Reject);
        assert_eq!(m.observe(0.1, at(7)), ShedLevel::CloseIdle, "one step down");
        assert_eq!(
            m.observe(0.1, at(8)),
            ShedLevel::CloseIdle,
            "a new cool-down per step"
        );
        assert_eq!(m.observe(0.1, at(12)), ShedLevel::CloseIdle);
        assert_eq!(m.observe(0.1, at(13)), ShedLevel::Throttle);
        assert_eq!(m.observe(0.1, at(14)), ShedLevel::Throttle);
        assert_eq!(m.observe(0.1, at(19)), ShedLevel::Normal);
    }

    #[test]
    fn load_inside_the_hysteresis_band_holds_the_level_and_restarts_the_cool_down() {
        let mut m = machine();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        m.observe(0.86, at(0));
        assert_eq!(m.level(), ShedLevel::Throttle);
        // 0.82 is below throttle_at but inside the band (0.85 - 0.05 = 0.80): no flapping.
        for s in 1..20 {
            assert_eq!(m.observe(0.82, at(s)), ShedLevel::Throttle);
        }
        m.observe(0.5, at(20));
        m.observe(0.82, at(23)); // back in the band: the calm period restarts
        assert_eq!(m.observe(0.5, at(26)), ShedLevel::Throttle);
        assert_eq!(m.observe(0.5, at(31)), ShedLevel::Normal);
    }
}
