//! Scenarios: TOML files (see `load/scenarios/`) that say what load to put on a server and for
//! how long. Every scenario is bounded in time and in count and stops by itself.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// `streams` (WebSocket load in phases) or `ann` (the ANN benchmark).
    pub kind: Kind,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub streams: Option<StreamLoad>,
    #[serde(default)]
    pub ann: Option<AnnLoad>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Streams,
    Ann,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamLoad {
    /// WebSocket streams to open and hold for the whole run.
    pub count: usize,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N (about 28k ports each).
    #[serde(default = "default_sources")]
    pub sources: u8,
    #[serde(default = "default_parallel")]
    pub connect_parallel: usize,
    /// Above this many streams, the run is split over several worker processes (the open-file
    /// limit of one process is 20,000 here).
    #[serde(default = "default_per_worker")]
    pub max_streams_per_worker: usize,
    #[serde(default = "default_collection")]
    pub collection: String,
    #[serde(default = "default_dimension")]
    pub dimension: usize,
    /// Points written before the phases start.
    #[serde(default)]
    pub preload: usize,
    /// Fraction of streams that hold a subscription to the collection (end-to-end latency of
    /// events is measured on them).
    #[serde(default)]
    pub subscribe_fraction: f64,
    #[serde(default = "default_k")]
    pub k: usize,
    /// Requests one stream may have unanswered; past it the stream skips its turn.
    #[serde(default = "default_inflight")]
    pub max_inflight_per_stream: usize,
    pub mix: Mix,
    pub phases: Vec<Phase>,
}

/// Shares of the request kinds (normalised).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub search: f64,
    #[serde(default)]
    pub insert: f64,
    #[serde(default)]
    pub ping: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub duration_s: f64,
    /// Requests per second over all streams (0: the streams stay idle, heartbeats only).
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnLoad {
    pub n: usize,
    pub nq: usize,
    pub dim: usize,
    #[serde(default = "default_metric")]
    pub metric: String,
    pub ef: Vec<usize>,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_m")]
    pub m: usize,
    #[serde(default = "default_efc")]
    pub ef_construction: usize,
    /// Also measure through the server's HTTP API (needs a server).
    #[serde(default)]
    pub over_http: bool,
}

fn default_sources() -> u8 {
    4
}
fn default_parallel() -> usize {
    256
}
fn default_per_worker() -> usize {
    15_000
}
fn default_collection() -> String {
    "load".into()
}
fn default_dimension() -> usize {
    32
}
fn default_k() -> usize {
    10
}
fn default_inflight() -> usize {
    8
}
fn default_metric() -> String {
    "cosine".into()
}
fn default_m() -> usize {
    16
}
fn default_efc() -> usize {
    200
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let s: Scenario = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            Kind::Streams => {
                let s = self
                    .streams
                    .as_ref()
                    .ok_or("a streams scenario needs a [streams] table")?;
                if s.count == 0 || s.phases.is_empty() {
                    return Err("streams.count and streams.phases must not be empty".into());
                }
                if s.mix.search + s.mix.insert + s.mix.ping <= 0.0
                    && s.phases.iter().any(|p| p.rate > 0.0)
                {
                    return Err("streams.mix needs a positive share".into());
                }
                if s.phases
                    .iter()
                    .any(|p| p.duration_s.is_nan() || p.duration_s <= 0.0 || p.rate < 0.0)
                {
                    return Err("every phase needs duration_s > 0 and rate >= 0".into());
                }
                if !(0.0..=1.0).contains(&s.subscribe_fraction) {
                    return Err("subscribe_fraction must be within 0..=1".into());
                }
                Ok(())
            }
            Kind::Ann => {
                let a = self
                    .ann
                    .as_ref()
                    .ok_or("an ann scenario needs an [ann] table")?;
                if a.n == 0 || a.nq == 0 || a.dim == 0 || a.ef.is_empty() {
                    return Err("ann.n, nq, dim and ef must not be empty".into());
                }
                Ok(())
            }
        }
    }

    /// Total duration of the phases (s).
    pub fn duration_s(&self) -> f64 {
        self.streams
            .as_ref()
            .map(|s| s.phases.iter().map(|p| p.duration_s).sum())
            .unwrap_or(0.0)
    }

    /// Caps the run: every phase shortened in proportion so the total stays within `max_s`.
    pub fn cap_duration(&mut self, max_s: f64) {
        let total = self.duration_s();
        if let Some(s) = self.streams.as_mut() {
            if total > max_s && max_s > 0.0 {
                let f = max_s / total;
                for p in &mut s.phases {
                    p.duration_s *= f;
                }
            }
        }
    }
}
