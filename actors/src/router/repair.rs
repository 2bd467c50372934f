//! `ruvector-streaming repair --collection NAME`: the operator's knowing acceptance of damage
//! that held a collection back at start.
//!
//! Offline (the server must be stopped): each shard is loaded in repair mode — log segments are
//! cut at damage that cannot be re-synchronised (the cut bytes kept beside them), holes in the
//! sequence are accepted — then a fresh snapshot is written and verified and the log restarts
//! after it, so the next start is clean. What was lost is reported, never hidden.

use std::path::Path;

use super::disk::{collections_dir, SPEC_FILE};
use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::index::hnsw::PartitionSpec;
use crate::shard::load::load_partition;
use crate::shard::shard_dir;
use crate::storage::snapshot;
use crate::storage::wal::{Hole, ReplayMode, WriteLog};
use crate::types::CollectionSpec;

/// What repairing one shard found and accepted.
#[derive(Debug)]
pub struct ShardRepair {
    pub shard: usize,
    pub points: usize,
    /// Records replayed from the log.
    pub replayed: u64,
    /// Holes accepted (records lost for good).
    pub holes: Vec<Hole>,
    /// Damaged regions of the log passed over (kept aside beside their segment).
    pub damaged: usize,
    /// Records quarantined (they could not be applied).
    pub quarantined: u64,
    /// The shard's directory was missing: it starts empty.
    pub recreated: bool,
}

/// Repairs every shard of collection `name` under `cfg.storage.data_dir`.
pub fn repair_collection(cfg: &EngineConfig, name: &str) -> Result<Vec<ShardRepair>> {
    let dir = collections_dir(cfg).join(name);
    let text = std::fs::read(dir.join(SPEC_FILE))
        .map_err(|e| EngineError::NotFound(format!("collection {name:?} ({e})")))?;
    let spec: CollectionSpec = serde_json::from_slice(&text)
        .map_err(|e| EngineError::Unavailable(format!("collection definition unreadable: {e}")))?;
    let pspec = PartitionSpec {
        metric: spec.metric,
        dimension: spec.dimension,
        hnsw: spec.hnsw,
    };
    (0..spec.shards)
        .map(|i| repair_shard(&shard_dir(&dir, i), i, pspec))
        .collect()
}

fn repair_shard(dir: &Path, shard: usize, spec: PartitionSpec) -> Result<ShardRepair> {
    let recreated = !dir.is_dir();
    if recreated {
        tracing::warn!(dir = %dir.display(), "repair: shard directory missing; it starts empty");
        std::fs::create_dir_all(dir)?;
    }
    let loaded = load_partition(dir, spec, ReplayMode::Repair)?;
    let seq = loaded.report.last_seq;
    snapshot::write(dir, seq, &loaded.partition, &loaded.versions, None)?;
    let mut log = WriteLog::create(dir, seq + 1)?;
    log.rotate_after_snapshot(seq, seq)?;
    Ok(ShardRepair {
        shard,
        points: loaded.partition.live(),
        replayed: loaded.report.records,
        holes: loaded.report.holes,
        damaged: loaded.report.skipped.len(),
        quarantined: loaded.quarantined,
        recreated,
    })
}
