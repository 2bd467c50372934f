//! A point's version: what active-active replication orders writes by.
//!
//! Every logged write carries the version it gives its point: the *stamp* of the write (origin
//! time in ns, region, instance) and a *version vector* (per region, the newest origin time of
//! that region's writes this version descends from).
//!
//! Which version a point ends with is decided by the stamp alone — last-write-wins on
//! (time, region, instance), a total order, so every region applying the same set of writes in
//! any order ends in the same state. A local write takes a time above its point's current one
//! (`max(now, current + 1)`, a hybrid clock per point), so a write made after seeing another
//! always wins over it even across skewed clocks: the stamp order never contradicts causality.
//! The version vector does not decide; it tells ordered writes from concurrent ones, which is
//! what `ruvector_region_conflicts_total` counts. A point takes the winner's vector, so every
//! region holds the same vector for the same point.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointVersion {
    /// Origin wall-clock time of the write, ns since the Unix epoch.
    pub ts: u64,
    pub region: Arc<str>,
    pub instance: Arc<str>,
    /// (region, newest origin time) sorted by region, at most one entry per region.
    pub vv: Vec<(Arc<str>, u64)>,
}

/// How an incoming version relates to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// It descends from the current version.
    Newer,
    /// The current version descends from it (a stale or repeated delivery).
    Older,
    /// The same version.
    Same,
    /// Neither descends from the other: concurrent writes (a conflict).
    Concurrent,
}

impl PointVersion {
    /// The version a local write at `now` gives a point whose version is `prior`.
    pub fn local(
        prior: Option<&PointVersion>,
        now: u64,
        region: &Arc<str>,
        instance: &Arc<str>,
    ) -> PointVersion {
        let ts = prior.map_or(now, |p| now.max(p.ts + 1));
        let mut vv = prior.map(|p| p.vv.clone()).unwrap_or_default();
        match vv.binary_search_by(|(r, _)| r.as_ref().cmp(region.as_ref())) {
            Ok(i) => vv[i].1 = vv[i].1.max(ts),
            Err(i) => vv.insert(i, (region.clone(), ts)),
        }
        PointVersion {
            ts,
            region: region.clone(),
            instance: instance.clone(),
            vv,
        }
    }

    /// The last-write-wins order: time, then region, then instance.
    pub fn stamp_cmp(&self, other: &PointVersion) -> Ordering {
        (self.ts, self.region.as_ref(), self.instance.as_ref()).cmp(&(
            other.ts,
            other.region.as_ref(),
            other.instance.as_ref(),
        ))
    }

    /// Whether a write carrying this version replaces a point holding `current`.
    pub fn wins_over(&self, current: &PointVersion) -> bool {
        self.stamp_cmp(current) == Ordering::Greater
    }

    fn clock(&self, region: &str) -> u64 {
        self.vv
            .binary_search_by(|(r, _)| r.as_ref().cmp(region))
            .map_or(0, |i| self.vv[i].1)
    }

    /// How this (incoming) version relates to `current`, by their version vectors.
    pub fn causality(&self, current: &PointVersion) -> Causality {
        let (mut ahead, mut behind) = (false, false);
        for (r, _) in self.vv.iter().chain(current.vv.iter()) {
            let (mine, theirs) = (self.clock(r), current.clock(r));
            ahead |= mine > theirs;
            behind |= mine < theirs;
        }
        match (ahead, behind) {
            (true, false) => Causality::Newer,
            (false, true) => Causality::Older,
            (true, true) => Causality::Concurrent,
            (false, false) if self.stamp_cmp(current) == Ordering::Equal => Causality::Same,
            // Equal vectors, different writes (two instances of a region at one instant).
            (false, false) => Causality::Concurrent,
        }
    }

    /// The version as the wire shows it (scroll pages, the change log).
    pub fn to_json(&self) -> serde_json::Value {
        let vv: serde_json::Map<String, serde_json::Value> = self
            .vv
            .iter()
            .map(|(r, t)| (r.to_string(), serde_json::Value::from(*t)))
            .collect();
        serde_json::json!({
            "ts": self.ts,
            "region": self.region.as_ref(),
            "instance": self.instance.as_ref(),
            "vv": vv,
        })
    }

    /// A version from its wire form (`to_json`'s), checked: names bounded, the vector sorted
    /// and bounded, the stamp's own region in it.
    pub fn from_json(v: &serde_json::Value) -> Result<PointVersion, String> {
        let name = |key: &str| -> Result<Arc<str>, String> {
            let s = v
                .get(key)
                .and_then(|s| s.as_str())
                .ok_or_else(|| format!("version.{key} must be a string"))?;
            check_name(s).map(|_| Arc::from(s))
        };
        let ts = v
            .get("ts")
            .and_then(|t| t.as_u64())
            .ok_or("version.ts must be an unsigned integer")?;
        let (region, instance) = (name("region")?, name("instance")?);
        let map = v
            .get("vv")
            .and_then(|m| m.as_object())
            .ok_or("version.vv must be an object")?;
        if map.len() > MAX_REGIONS {
            return Err(format!("version.vv names more than {MAX_REGIONS} regions"));
        }
        let mut vv = Vec::with_capacity(map.len());
        for (r, t) in map {
            check_name(r)?;
            let t = t.as_u64().ok_or("version.vv values must be unsigned")?;
            vv.push((Arc::from(r.as_str()), t));
        }
        vv.sort();
        let version = PointVersion {
            ts,
            region,
            instance,
            vv,
        };
        if version.clock(&version.region) < ts {
            return Err("version.vv must cover the stamp's own region and time".into());
        }
        Ok(version)
    }
}

/// More regions than this in one version vector is taken for garbage.
pub const MAX_REGIONS: usize = 64;

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err("region and instance names must be 1 to 128 bytes".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn a_local_write_after_a_newer_remote_one_still_orders_after_it() {
        let remote = PointVersion::local(None, 1_000, &a("eu"), &a("e1"));
        // This region's clock is behind: the write still takes a later time and descends.
        let mine = PointVersion::local(Some(&remote), 10, &a("us"), &a("u1"));
        assert_eq!(mine.ts, 1_001);
        assert!(mine.wins_over(&remote));
        assert_eq!(mine.causality(&remote), Causality::Newer);
        assert_eq!(remote.causality(&mine), Causality::Older);
        assert_eq!(mine.vv, vec![(a("eu"), 1_000), (a("us"), 1_001)]);
    }

    #[test]
    fn writes_made_apart_are_concurrent_and_the_later_stamp_wins() {
        let base = PointVersion::local(None, 5, &a("us"), &a("u1"));
        let eu = PointVersion::local(Some(&base), 20, &a("eu"), &a("e1"));
        let us = PointVersion::local(Some(&base), 20, &a("us"), &a("u1"));
        assert_eq!(eu.causality(&us), Causality::Concurrent);
        assert_eq!(us.causality(&eu), Causality::Concurrent);
        // Same time: the region name breaks the tie, the same way on both sides.
        assert!(us.wins_over(&eu) && !eu.wins_over(&us));
        assert_eq!(us.causality(&us.clone()), Causality::Same);
    }

    #[test]
    fn the_wire_form_round_trips_and_rejects_garbage() {
        let v = PointVersion::local(None, 42, &a("eu"), &a("e1"));
        let v = PointVersion::local(Some(&v), 50, &a("us"), &a("u1"));
        assert_eq!(PointVersion::from_json(&v.to_json()).unwrap(), v);
        for bad in [
            serde_json::json!({"ts": 1, "region": "", "instance": "i", "vv": {"": 1}}),
            serde_json::json!({"ts": 9, "region": "us", "instance": "i", "vv": {"us": 1}}),
            serde_json::json!({"ts": -1, "region": "us", "instance": "i", "vv": {}}),
            serde_json::json!({"ts": 1, "region": "us", "instance": "i"}),
        ] {
            assert!(PointVersion::from_json(&bad).is_err(), "{bad}");
        }
    }
}
