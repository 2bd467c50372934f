//! The shard's writer thread: the only mutator of its partition and log.
//!
//! It takes write jobs from a bounded queue, appends all that arrived together to the log, makes
//! them durable with one fsync (group commit), applies them to the partition, then acknowledges.
//! Between batches it takes snapshots and starts/finishes background rebuilds. Searches never
//! wait for it: they read the partition under its read lock on the search pool.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::load;
use super::state::ShardState;
use crate::config::IndexConfig;
use crate::config::StorageConfig;
use crate::config::WriteOrigin;
use crate::error::{EngineError, Result};
use crate::hub::{Change, ChangeOp};
use crate::index::hnsw::{Op, Partition};
use crate::pool::QueueWait;
use crate::storage::record::WriteStamp;
use crate::storage::wal::{ReplayMode, WriteLog};
use crate::storage::{snapshot, FsyncMode};
use crate::types::{apply_patch, Metadata};

/// A write as a client asks for it (resolved into an `Op` by the writer).
#[derive(Debug, Clone)]
pub enum WriteOp {
    Upsert {
        id: String,
        vector: Vec<f32>,
        metadata: Option<Metadata>,
    },
    Delete {
        id: String,
    },
    /// Merge keys into the metadata; a `null` value removes the key.
    Patch {
        id: String,
        patch: Metadata,
    },
}

/// Per op: whether its target existed (delete and patch of a missing point do nothing).
pub type WriteOutcome = Vec<bool>;

pub struct WriteJob {
    pub ops: Vec<WriteOp>,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
    /// When it entered the writer's queue (its wait is a shed signal)…
    pub enqueued: Instant,
    /// …if other requests' writes were queued ahead of it.
    pub behind_others: bool,
}

/// The hub's view of a batch, taken before it is applied (a delete reports what the point
/// held; a metadata patch reports the point's vector). Metadata is shared, never copied.
fn changes_of(partition: &Partition, records: &[(u64, Op)]) -> Vec<Change> {
    type Held = (Arc<[f32]>, Option<Arc<Metadata>>);
    let mut batch: HashMap<&str, Held> = HashMap::new();
    let stored = |id: &str, batch: &HashMap<&str, Held>| -> Option<Held> {
        match batch.get(id) {
            Some(h) => Some(h.clone()),
            None => {
                let metadata = partition.metadata_of(id)?;
                let vector = partition.get_vector(id)?;
                Some((Arc::from(vector), metadata))
            }
        }
    };
    let mut out = Vec::with_capacity(records.len());
    for (_, op) in records {
        match op {
            Op::Upsert {
                id,
                vector,
                metadata,
            } => {
                let v: Arc<[f32]> = Arc::from(vector.as_slice());
                batch.insert(id, (v.clone(), metadata.clone()));
                out.push(Change {
                    op: ChangeOp::Upsert,
                    id: Arc::from(id.as_str()),
                    vector: Some(v),
                    metadata: metadata.clone(),
                });
            }
            Op::SetMetadata { id, metadata } => {
                let vector = stored(id, &batch).map(|(v, _)| v);
                if let Some(v) = &vector {
                    batch.insert(id, (v.clone(), metadata.clone()));
                }
                out.push(Change {
                    op: ChangeOp::Upsert,
                    id: Arc::from(id.as_str()),
                    vector,
                    metadata: metadata.clone(),
                });
            }
            Op::Delete { id } => {
                let old = stored(id, &batch);
                batch.remove(id.as_str());
                let (vector, metadata) = match old {
                    Some((v, m)) => (Some(v), m),
                    None => (None, None),
                };
                out.push(Change {
                    op: ChangeOp::Delete,
                    id: Arc::from(id.as_str()),
                    vector,
                    metadata,
                });
            }
        }
    }
    out
}

/// Messages from the writer's helper threads.
struct Rebuilt(Partition);

pub(super) struct Writer {
    pub dir: PathBuf,
    pub state: Arc<ShardState>,
    pub storage: StorageConfig,
    pub index: IndexConfig,
    pub log: WriteLog,
    pub rx: Receiver<WriteJob>,
    pub last_snapshot: Instant,
    pub ops_since_snapshot: u64,
    /// The newest verified snapshot: kept, with the log after it, until a newer one is written
    /// and verified, so a damaged newest snapshot can fall back to it without losing writes.
    pub kept_snapshot: Option<u64>,
    /// Set when the partition could not be rebuilt from disk after a failure: every write is
    /// refused with `unavailable` naming the reason, instead of running on a suspect partition.
    pub failed: Option<String>,
    /// Where the time jobs waited in this writer's queue is recorded.
    pub queue_wait: Arc<QueueWait>,
    /// This server's region and instance, stamped on every logged write.
    pub origin: WriteOrigin,
    /// The last stamp's time (ns): stamps of one shard strictly increase even if the clock
    /// steps back.
    pub last_stamp_ns: u64,
}

struct Rebuild {
    done: Receiver<Rebuilt>,
    backlog: Vec<(u64, Op)>,
}

/// How long the writer sleeps when idle before it looks at snapshots and rebuilds again.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// A rebuild whose backlog of concurrent writes grows past this is abandoned (and retried).
const MAX_REBUILD_BACKLOG: usize = 1_000_000;
/// Points linked per turn of the writer between batches: at the measured 4-7k points/s with
/// two threads, a write waits at most ~0.2 s behind a turn.
const LINK_CHUNK: usize = 1024;

impl Writer {
    pub fn run(mut self) {
        let mut rebuild: Option<Rebuild> = None;
        // A tail replayed at start waits to be linked: say so before the first chunk.
        self.state
            .publish_unindexed(self.state.partition().unindexed());
        loop {
            // Points waiting to be linked (a tail replayed at start): link them when idle.
            let tick = if self.state.partition().unindexed() > 0 {
                Duration::ZERO
            } else {
                IDLE_TICK
            };
            let first = match self.rx.recv_timeout(tick) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if catch_unwind(AssertUnwindSafe(|| self.maintain(&mut rebuild))).is_err() {
                        self.recover("maintenance panicked", &mut rebuild);
                    }
                    // A tail replayed at start is linked here, with nothing else to do.
                    if catch_unwind(AssertUnwindSafe(|| self.link_backlog())).is_err() {
                        self.recover("linking into the graph panicked", &mut rebuild);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let batch = self.gather(first);
            let now = Instant::now();
            for job in &batch {
                self.queue_wait
                    .record(now.duration_since(job.enqueued), job.behind_others);
            }
            if let Some(reason) = &self.failed {
                for job in batch {
                    let _ = job
                        .reply
                        .send(Err(EngineError::Unavailable(reason.clone())));
                }
                continue;
            }
            // No panic may end this thread: every write to the shard depends on it. After one,
            // the partition is rebuilt from the log, which is the truth.
            if catch_unwind(AssertUnwindSafe(|| self.commit(batch, &mut rebuild))).is_err() {
                self.recover("a write batch panicked", &mut rebuild);
            }
            if catch_unwind(AssertUnwindSafe(|| self.maintain(&mut rebuild))).is_err() {
                self.recover("maintenance panicked", &mut rebuild);
            }
            if catch_unwind(AssertUnwindSafe(|| self.link_backlog())).is_err() {
                self.recover("linking into the graph panicked", &mut rebuild);
            }
        }
        // Shutting down: leave a snapshot so the next start loads instead of replaying.
        if self.ops_since_snapshot > 0 && !self.state.is_discarded() {
            self.snapshot();
        }
        tracing::debug!(collection = %self.state.collection, shard = self.state.shard, "shard writer stopped");
    }

    /// Takes more jobs that arrived together with `first`, up to the batch bound.
    fn gather(&self, first: WriteJob) -> Vec<WriteJob> {
        let mut ops = first.ops.len();
        let mut batch = vec![first];
        if self.storage.fsync == FsyncMode::Always {
            return batch;
        }
        let deadline = Instant::now() + Duration::from_micros(self.storage.batch_window_us);
        while ops < self.storage.max_batch_ops {
            let next = if self.storage.batch_window_us == 0 {
                self.rx.try_recv().ok()
            } else {
                self.rx.recv_deadline(deadline).ok()
            };
            match next {
                Some(job) => {
                    ops += job.ops.len();
                    batch.push(job);
                }
                None => break,
            }
        }
        batch
    }

    fn commit(&mut self, mut batch: Vec<WriteJob>, rebuild: &mut Option<Rebuild>) {
        let partition = self.state.partition();
        let mut seq = self.state.seq();
        // Existence and metadata as this batch changes them, for delete/patch checks.
        let mut overlay: HashMap<String, Option<Option<Arc<Metadata>>>> = HashMap::new();
        let mut records: Vec<(u64, Op)> = Vec::new();
        let mut outcomes: Vec<WriteOutcome> = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            let mut outcome = Vec::with_capacity(job.ops.len());
            // The ops are taken, not cloned: a point's metadata exists once, shared by the
            // record, the slot and the hub's change.
            for op in std::mem::take(&mut job.ops) {
                let current =
                    |id: &str, overlay: &HashMap<String, Option<Option<Arc<Metadata>>>>| {
                        match overlay.get(id) {
                            Some(state) => state.clone(),
                            None => partition.metadata_of(id),
                        }
                    };
                let resolved = match op {
                    WriteOp::Upsert {
                        id,
                        vector,
                        metadata,
                    } => {
                        let metadata = metadata.map(Arc::new);
                        overlay.insert(id.clone(), Some(metadata.clone()));
                        Some(Op::Upsert {
                            id,
                            vector,
                            metadata,
                        })
                    }
                    WriteOp::Delete { id } => match current(&id, &overlay) {
                        Some(_) => {
                            overlay.insert(id.clone(), None);
                            Some(Op::Delete { id })
                        }
                        None => None,
                    },
                    WriteOp::Patch { id, patch } => match current(&id, &overlay) {
                        Some(existing) => {
                            let mut merged = existing.as_deref().cloned().unwrap_or_default();
                            apply_patch(&mut merged, &patch);
                            let merged = Some(Arc::new(merged));
                            overlay.insert(id.clone(), Some(merged.clone()));
                            Some(Op::SetMetadata {
                                id,
                                metadata: merged,
                            })
                        }
                        None => None,
                    },
                };
                outcome.push(resolved.is_some());
                if let Some(op) = resolved {
                    seq += 1;
                    records.push((seq, op));
                }
            }
            outcomes.push(outcome);
        }
        let mark = self.log.mark();
        if let Err(e) = self.persist(&records) {
            tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "write log failed; writes refused");
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(EngineError::Internal(format!("write log: {e}"))));
            }
            return;
        }
        let changes = changes_of(&partition, &records);
        if catch_unwind(AssertUnwindSafe(|| partition.apply(&records))).is_err() {
            // Validation should make this impossible; if it happens anyway, the batch was never
            // acknowledged, so it leaves the log again, and the partition is rebuilt from disk.
            metrics::counter!("ruvector_shard_apply_failures_total").increment(1);
            tracing::error!(collection = %self.state.collection, shard = self.state.shard, ops = records.len(), "a write batch could not be applied: refused and removed from the log");
            let cut = self.log.cut_back(mark);
            for job in batch {
                let _ = job.reply.send(Err(EngineError::Internal(
                    "the write could not be applied to the index and was not stored".into(),
                )));
            }
            if let Err(e) = cut {
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "could not cut the refused batch from the log; replay will quarantine it");
            }
            self.recover("a write batch could not be applied", rebuild);
            return;
        }

        if let Some(r) = rebuild.as_mut() {
            r.backlog.extend(records.iter().cloned());
        }
        self.ops_since_snapshot += records.len() as u64;
        self.state.set_seq(seq);
        metrics::counter!("ruvector_shard_writes_total", "collection" => self.state.collection.to_string())
            .increment(records.len() as u64);
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let _ = job.reply.send(Ok(outcome));
        }
        // Subscribers are matched after the writers have their answer (still in order, still on
        // this thread): thousands of standing queries never add to a write's latency.
        let collection = self.state.collection.clone();
        let hub = &self.state.hub;
        if catch_unwind(AssertUnwindSafe(|| hub.publish(&collection, changes))).is_err() {
            metrics::counter!("ruvector_hub_panics_total").increment(1);
            tracing::error!(collection = %collection, "publishing changes to subscribers panicked; the writes stand");
        }
    }

    fn persist(&mut self, records: &[(u64, Op)]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One stamp per batch (its records are ordered by their sequence numbers): origin time,
        // region, instance — what replication will order concurrent writes by.
        let stamp = (!self.origin.region.is_empty()).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.last_stamp_ns = now.max(self.last_stamp_ns + 1);
            WriteStamp {
                origin_ts_ns: self.last_stamp_ns,
                region: self.origin.region.clone(),
                instance: self.origin.instance.clone(),
            }
        });
        self.log
            .append(records.iter().map(|(s, op)| (*s, stamp.as_ref(), op)))?;
        if self.storage.fsync != FsyncMode::Never {
            let t = Instant::now();
            self.log.sync()?;
            metrics::histogram!("ruvector_wal_fsync_seconds").record(t.elapsed().as_secs_f64());
        } else {
            self.log.commit_len();
        }
        metrics::histogram!("ruvector_wal_batch_ops").record(records.len() as f64);
        Ok(())
    }

    /// Links acknowledged points into the graph: while writes wait, only down to
    /// `index.max_unindexed` (so the exact scan of the rest stays bounded); with none waiting,
    /// all of them, a chunk at a time so a write that arrives waits at most one chunk.
    fn link_backlog(&mut self) {
        let p = self.state.partition();
        let threads = self.index.build_threads();
        loop {
            let waiting = p.unindexed();
            if waiting == 0 || (waiting <= self.index.max_unindexed && !self.rx.is_empty()) {
                break;
            }
            let t = Instant::now();
            let linked = p.link_pending(threads, LINK_CHUNK);
            metrics::histogram!("ruvector_index_link_seconds").record(t.elapsed().as_secs_f64());
            metrics::counter!("ruvector_index_linked_total").increment(linked as u64);
            if linked == 0 {
                break;
            }
            self.state.publish_unindexed(p.unindexed());
        }
        self.state.publish_unindexed(p.unindexed());
    }

    fn maintain(&mut self, rebuild: &mut Option<Rebuild>) {
        self.state.publish_gauges();
        // Finish a rebuild: replay what changed meanwhile, then swap the new partition in.
        if let Some(r) = rebuild.as_mut() {
            if let Ok(Rebuilt(fresh)) = r.done.try_recv() {
                let Some(r) = rebuild.take() else { return };
                fresh.apply(&r.backlog);
                // Searches scan what is not linked: the swap waits until that is within bounds.
                while fresh.unindexed() > self.index.max_unindexed {
                    fresh.link_pending(self.index.build_threads(), LINK_CHUNK);
                }
                let dead = self.state.partition().table().dead();
                self.state.swap_partition(Arc::new(fresh));
                metrics::counter!("ruvector_index_rebuilds_total").increment(1);
                tracing::info!(collection = %self.state.collection, shard = self.state.shard, reclaimed = dead, "shard graph rebuilt without tombstones");
            } else if r.backlog.len() > MAX_REBUILD_BACKLOG {
                tracing::warn!(collection = %self.state.collection, shard = self.state.shard, "rebuild fell too far behind writes; abandoned");
                *rebuild = None;
            }
        } else {
            let p = self.state.partition();
            let (dead, total) = {
                let t = p.table();
                (t.dead(), t.slots.len())
            };
            if dead >= self.index.rebuild_min_tombstones
                && total > 0
                && dead as f64 / total as f64 > self.index.rebuild_tombstone_fraction
            {
                let (tx, done) = crossbeam_channel::bounded(1);
                let threads = self.index.build_threads();
                let spawned = std::thread::Builder::new()
                    .name(format!(
                        "rebuild-{}-{}",
                        self.state.collection, self.state.shard
                    ))
                    .spawn(move || {
                        let _ = tx.send(Rebuilt(p.compacted(threads)));
                    });
                if spawned.is_ok() {
                    tracing::info!(collection = %self.state.collection, shard = self.state.shard, dead, total, "rebuilding shard graph in the background");
                    *rebuild = Some(Rebuild {
                        done,
                        backlog: Vec::new(),
                    });
                }
            }
        }
        let due = self.ops_since_snapshot >= self.storage.snapshot_max_ops
            || (self.ops_since_snapshot > 0
                && self.last_snapshot.elapsed()
                    >= Duration::from_secs(self.storage.snapshot_interval_s));
        if due {
            self.snapshot();
        }
    }

    /// Rebuilds the partition from disk after a failure (see `run`).
    fn recover(&mut self, reason: &str, rebuild: &mut Option<Rebuild>) {
        *rebuild = None;
        metrics::counter!("ruvector_shard_recoveries_total").increment(1);
        let spec = *self.state.partition().spec();
        let reloaded = load::load_partition(&self.dir, spec, ReplayMode::Strict).and_then(|l| {
            let log = WriteLog::create(&self.dir, l.report.last_seq + 1)?;
            Ok((l, log))
        });
        match reloaded {
            Ok((l, log)) => {
                tracing::warn!(collection = %self.state.collection, shard = self.state.shard, reason, points = l.partition.live(), "shard partition rebuilt from disk");
                self.state.set_seq(l.report.last_seq);
                self.state.swap_partition(Arc::new(l.partition));
                self.log = log;
            }
            Err(e) => {
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, reason, error = %e, "shard could not be rebuilt from disk: writes refused");
                self.failed = Some(format!(
                    "shard {} of {:?} failed: {e}",
                    self.state.shard, self.state.collection
                ));
            }
        }
    }

    fn snapshot(&mut self) {
        let seq = self.state.seq();
        let partition = self.state.partition();
        let t = Instant::now();
        let keep = self.kept_snapshot.filter(|k| *k < seq);
        let result = snapshot::write(&self.dir, seq, &partition, keep)
            .and_then(|_| self.log.rotate_after_snapshot(seq, keep.unwrap_or(0)));
        self.last_snapshot = Instant::now();
        match result {
            Ok(()) => {
                self.kept_snapshot = Some(seq);
                self.ops_since_snapshot = 0;
                metrics::histogram!("ruvector_snapshot_seconds").record(t.elapsed().as_secs_f64());
                tracing::info!(collection = %self.state.collection, shard = self.state.shard, seq, ms = t.elapsed().as_millis() as u64, "snapshot written");
            }
            Err(e) => {
                metrics::counter!("ruvector_snapshot_failures_total").increment(1);
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "snapshot failed; the log keeps every write");
            }
        }
    }
}
