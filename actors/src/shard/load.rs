//! Rebuilding a shard's partition from disk: newest usable snapshot, then the log after it.
//!
//! Used at start, by `repair`, and by the writer when a write could not be applied (the log
//! is the truth; the partition in memory is rebuilt from it). A record that cannot be applied
//! (it fails today's validation, or applying it panics inside the graph library) is
//! quarantined — copied to `quarantine/seq-<n>.rec` with a log line and a metric — instead of
//! stopping the start: one bad record must not keep a whole server down.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::error::{EngineError, Result};
use crate::index::hnsw::{Op, Partition, PartitionSpec};
use crate::index::versions::Versions;
use crate::storage::snapshot::{self, GraphSource};
use crate::storage::wal::{self, Hole, ReplayMode, ReplayReport};
use crate::types::{validate_point_id, validate_vector};

/// Records are applied in batches of this many (parallel graph insert).
const REPLAY_BATCH: usize = 4096;
/// Each attempt quarantines at least one more record; past this many the shard gives up.
const MAX_ATTEMPTS: usize = 16;

/// A partition rebuilt from disk.
pub struct LoadedPartition {
    pub partition: Partition,
    /// Each point's version and the tombstones, from the snapshot and the log after it.
    pub versions: Versions,
    pub report: ReplayReport,
    /// Sequence number of the snapshot it started from (0: none).
    pub from_seq: u64,
    pub source: &'static str,
    /// Records quarantined during this load.
    pub quarantined: u64,
}

/// Whether `op` may be applied to a partition of `spec` under today's rules.
pub fn check_op(spec: &PartitionSpec, op: &Op) -> Result<()> {
    match op {
        Op::Upsert { id, vector, .. } => {
            validate_point_id(id)?;
            validate_vector(vector, spec.dimension, spec.metric)
        }
        Op::Delete { id } | Op::SetMetadata { id, .. } => validate_point_id(id),
    }
}

fn quarantine(dir: &Path, seq: u64, raw: &[u8], reason: &str) {
    let qdir = dir.join("quarantine");
    let path = qdir.join(format!("seq-{seq:020}.rec"));
    let saved = std::fs::create_dir_all(&qdir)
        .and_then(|_| std::fs::write(&path, raw))
        .and_then(|_| wal::sync_dir(&qdir));
    tracing::error!(
        shard_dir = %dir.display(),
        seq,
        reason,
        kept = %path.display(),
        saved = saved.is_ok(),
        "log record cannot be applied: quarantined"
    );
    metrics::counter!("ruvector_wal_quarantined_records_total").increment(1);
}

/// Applies `batch` (drained); `Err` with its sequence range if applying panicked.
fn flush(partition: &Partition, batch: &mut Vec<(u64, Op)>) -> std::result::Result<(), (u64, u64)> {
    if batch.is_empty() {
        return Ok(());
    }
    let range = (batch[0].0, batch[batch.len() - 1].0);
    let applied = catch_unwind(AssertUnwindSafe(|| partition.apply(batch)));
    batch.clear();
    applied.map_err(|_| range)
}

enum Failure {
    /// A batch panicked: apply its records one at a time on the next attempt.
    Batch(u64, u64),
    /// One record panicked: quarantine it and start over without it.
    Single(u64, Vec<u8>),
}

/// Loads the partition in `dir`. In strict mode a hole in the log (see `wal`) is an
/// `Unavailable` error naming it; in repair mode holes are accepted.
pub fn load_partition(
    dir: &Path,
    spec: PartitionSpec,
    mode: ReplayMode,
) -> Result<LoadedPartition> {
    let mut skip: HashSet<u64> = HashSet::new();
    let mut careful: Option<(u64, u64)> = None;
    let mut quarantined = 0u64;
    for _ in 0..MAX_ATTEMPTS {
        let found = snapshot::load_latest(dir, spec)?;
        let claimed = found.claimed();
        let (partition, mut versions, from_seq, source) = match found.loaded {
            Some(l) => (
                l.partition,
                l.versions,
                l.seq,
                match l.graph {
                    GraphSource::Snapshot => "snapshot",
                    GraphSource::Rebuilt => "rebuilt",
                },
            ),
            None => (Partition::new(spec), Versions::default(), 0, "empty"),
        };
        let mut pending: Vec<(u64, Op)> = Vec::new();
        let mut failed: Option<Failure> = None;
        let mut report = wal::replay(dir, from_seq, mode, |seq, version, op, raw| {
            if failed.is_some() || skip.contains(&seq) {
                return;
            }
            if let Err(e) = check_op(&spec, &op) {
                quarantine(dir, seq, raw, &e.to_string());
                quarantined += 1;
                return;
            }
            // A version is restored with its record (a record that panics the graph later is
            // retried without it: the whole load starts over).
            if let Some(v) = version {
                versions.record(&op, std::sync::Arc::new(v));
            }
            let one_by_one = careful.is_some_and(|(a, b)| (a..=b).contains(&seq));
            if !one_by_one {
                pending.push((seq, op));
                if pending.len() >= REPLAY_BATCH {
                    if let Err((a, b)) = flush(&partition, &mut pending) {
                        failed = Some(Failure::Batch(a, b));
                    }
                }
                return;
            }
            if let Err((a, b)) = flush(&partition, &mut pending) {
                failed = Some(Failure::Batch(a, b));
                return;
            }
            if flush(&partition, &mut vec![(seq, op)]).is_err() {
                failed = Some(Failure::Single(seq, raw.to_vec()));
            }
        })?;
        if failed.is_none() {
            if let Err((a, b)) = flush(&partition, &mut pending) {
                failed = Some(Failure::Batch(a, b));
            }
        }
        match failed {
            Some(Failure::Batch(a, b)) => {
                careful = Some((a, b));
                continue;
            }
            Some(Failure::Single(seq, raw)) => {
                quarantine(dir, seq, &raw, "applying it panicked");
                quarantined += 1;
                skip.insert(seq);
                continue;
            }
            None => {}
        }
        if claimed > report.last_seq {
            let hole = Hole {
                after: report.last_seq,
                next: None,
                cause: format!(
                    "a damaged snapshot covered up to {claimed} and the log ends before it"
                ),
            };
            report.holes.push(hole);
        }
        if let (ReplayMode::Strict, Some(hole)) = (mode, report.holes.first()) {
            return Err(EngineError::Unavailable(format!(
                "{}: {hole}; run `ruvector-streaming repair --collection NAME` to accept the loss",
                dir.display()
            )));
        }
        for (_, damaged) in &found.damaged {
            snapshot::set_aside(damaged);
        }
        return Ok(LoadedPartition {
            partition,
            versions,
            report,
            from_seq,
            source,
            quarantined,
        });
    }
    Err(EngineError::Unavailable(format!(
        "{}: more than {MAX_ATTEMPTS} log records could not be applied",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::wal::WriteLog;
    use crate::types::{HnswParams, Metric};

    fn spec() -> PartitionSpec {
        PartitionSpec {
            metric: Metric::Dot,
            dimension: 2,
            hnsw: HnswParams {
                m: 8,
                ef_construction: 32,
                ef_search: 16,
                quantization: Default::default(),
            },
        }
    }

    fn up(id: &str, vector: Vec<f32>) -> Op {
        Op::Upsert {
            id: id.into(),
            vector,
            metadata: None,
        }
    }

    #[test]
    fn a_record_that_cannot_be_applied_is_quarantined_and_the_shard_loads() {
        let dir = tempfile::tempdir().unwrap();
        // What round 1 could log before it crashed: vectors whose dot products overflow.
        let ops = [
            up("a", vec![1e20, 1e20]),
            up("b", vec![1e20, -1e20]),
            up("c", vec![1.0, 1.0]),
        ];
        let mut log = WriteLog::create(dir.path(), 1).unwrap();
        log.append(
            ops.iter()
                .enumerate()
                .map(|(i, op)| (i as u64 + 1, None, op)),
        )
        .unwrap();
        log.sync().unwrap();
        drop(log);
        let loaded = load_partition(dir.path(), spec(), ReplayMode::Strict).unwrap();
        assert_eq!(loaded.quarantined, 2);
        assert_eq!(loaded.partition.live(), 1);
        assert_eq!(
            loaded.report.last_seq, 3,
            "the sequence continues after them"
        );
        let kept = std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count();
        assert_eq!(kept, 2, "each quarantined record is kept");
        // Loading again gives the same result (quarantine files are overwritten, not doubled).
        let again = load_partition(dir.path(), spec(), ReplayMode::Strict).unwrap();
        assert_eq!(again.partition.live(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            2
        );
    }
}
